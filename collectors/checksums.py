"""Checksums that device makers put at the end of their serial frames.

Each function takes the covered bytes and returns the checksum as an unsigned integer; the
frame spec says how many bytes it occupies and in which order. Check values for the ASCII
string ``123456789`` (from the CRC catalogue, reveng.sourceforge.io) are in the tests.

====================  =====  ======  ======  =========================================
name                  width  poly    init    notes
====================  =====  ======  ======  =========================================
``sum8``              8      —       0       arithmetic sum modulo 256
``xor8``              8      —       0       XOR of all bytes (BCC)
``crc16_modbus``      16     0x8005  0xFFFF  reflected; Modbus over Serial Line §2.5.1.2
``crc16_ccitt``       16     0x1021  0xFFFF  not reflected (CRC-16/CCITT-FALSE, IBM-3740)
``crc16_xmodem``      16     0x1021  0x0000  not reflected (CRC-16/XMODEM)
====================  =====  ======  ======  =========================================
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Final, Literal

__all__ = ["CHECKSUMS", "WIDTH", "ChecksumName", "compute"]

ChecksumName = Literal["sum8", "xor8", "crc16_modbus", "crc16_ccitt", "crc16_xmodem"]


def _sum8(data: bytes) -> int:
    return sum(data) & 0xFF


def _xor8(data: bytes) -> int:
    acc = 0
    for byte in data:
        acc ^= byte
    return acc


def _modbus_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_MODBUS_TABLE: Final = _modbus_table()


def _crc16_modbus(data: bytes) -> int:
    crc = 0xFFFF
    table = _MODBUS_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def _crc16_ccitt(data: bytes) -> int:
    # binascii.crc_hqx is CRC-16 with polynomial 0x1021, not reflected; init selects the variant.
    return binascii.crc_hqx(data, 0xFFFF)


def _crc16_xmodem(data: bytes) -> int:
    return binascii.crc_hqx(data, 0)


CHECKSUMS: Final[dict[ChecksumName, Callable[[bytes], int]]] = {
    "sum8": _sum8,
    "xor8": _xor8,
    "crc16_modbus": _crc16_modbus,
    "crc16_ccitt": _crc16_ccitt,
    "crc16_xmodem": _crc16_xmodem,
}

#: Bytes each checksum occupies in a frame.
WIDTH: Final[dict[ChecksumName, int]] = {
    "sum8": 1,
    "xor8": 1,
    "crc16_modbus": 2,
    "crc16_ccitt": 2,
    "crc16_xmodem": 2,
}


def compute(name: ChecksumName, data: bytes) -> int:
    """The checksum ``name`` of ``data``."""
    return CHECKSUMS[name](data)
