"""The shipped profiles, loaded once for the tests."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from collectors.profile import FramedProfile, ModbusProfile, MqttProfile, load_profile

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware_configs"

ELEVATOR = cast(ModbusProfile, load_profile(FIRMWARE / "elevator" / "hx-em100.yaml"))
#: The second elevator layout: a packed status word (bit groups), BCD, low word first.
ELEVATOR_PACKED = cast(ModbusProfile, load_profile(FIRMWARE / "elevator" / "sd-lt300.yaml"))
LANE = cast(FramedProfile, load_profile(FIRMWARE / "fire_lane" / "lk-fl200.yaml"))
GATE = cast(FramedProfile, load_profile(FIRMWARE / "gate" / "jt-gc4.yaml"))
CAMERA_LANE = cast(MqttProfile, load_profile(FIRMWARE / "fire_lane" / "aibox-lane.yaml"))
CAMERA_EBIKE = cast(MqttProfile, load_profile(FIRMWARE / "elevator" / "aibox-ebike.yaml"))


def lane_status(addr: int, occupied: int, dwell: int, cls: int, fault: int = 0) -> bytes:
    """The unescaped head (before the checksum) of a FL-200 status frame."""
    return bytes([0xAA, 0x55, 0, addr, 0x01, occupied, dwell >> 8, dwell & 0xFF, cls, fault])


def gate_status(addr: int, state: int, mode: int, passages: int) -> bytes:
    """The unescaped head of a GC-4 door-status frame (passages little-endian)."""
    return bytes([0x7E, addr, 0x10, state, mode]) + passages.to_bytes(4, "little")
