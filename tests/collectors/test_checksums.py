"""Checksums against the catalogue's check values for b"123456789" (reveng CRC catalogue)."""

from __future__ import annotations

import pytest
from pymodbus.framer.rtu import FramerRTU

from collectors.checksums import compute

CHECK = b"123456789"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sum8", 0xDD),
        ("xor8", 0x31),
        ("crc16_modbus", 0x4B37),
        ("crc16_ccitt", 0x29B1),
        ("crc16_xmodem", 0x31C3),
    ],
)
def test_check_values(name: str, value: int) -> None:
    assert compute(name, CHECK) == value  # type: ignore[arg-type]


def test_modbus_crc_agrees_with_pymodbus() -> None:
    frame = bytes([0x01, 0x03, 0x00, 0x00, 0x00, 0x0A])
    ours = compute("crc16_modbus", frame)
    # pymodbus returns the CRC byte-swapped (the order it travels in).
    assert ours.to_bytes(2, "little") == FramerRTU.compute_CRC(frame).to_bytes(2, "big")
