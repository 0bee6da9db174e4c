"""The framed-serial collector on a real serial line (a socat pty pair). A small frame
writer on the far end plays the sensors: good frames, garbage, torn frames, bad checksums
and silence. Each step asserts the exact items that come out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest
import serial

from collectors.framed import FramedCollector, FramedDevice
from collectors.framing import FrameCodec
from collectors.profile import FramedProfile
from collectors.wire import Event, Item, Reading
from tests.collectors.profiles import GATE, LANE, gate_status, lane_status
from tests.conftest import PtyPair, start_pty_pair

pytestmark = pytest.mark.functional

T = 1_795_300_000_000


class Line:
    """The collector under test, running, and the sensor end of the line."""

    def __init__(self, pair: PtyPair, profile: FramedProfile, devices: list[FramedDevice]) -> None:
        self.codec = FrameCodec(profile.frame)
        self.items: list[Item] = []
        self.now = T  # the collector's clock: the test moves it
        self.collector = FramedCollector(
            "line", pair.host, profile.serial, profile, devices, clock=lambda: self.now
        )
        self.sensor = serial.Serial(pair.device, baudrate=profile.serial.baudrate, timeout=1)

    async def emit(self, item: Item) -> None:
        self.items.append(item)

    def send(self, data: bytes) -> None:
        self.sensor.write(data)
        self.sensor.flush()

    async def next_items(self, n: int, timeout: float = 5.0) -> list[Item]:
        """Wait until ``n`` more items arrived; return exactly those."""
        start = len(self.items)
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.items) < start + n:
            assert asyncio.get_running_loop().time() < deadline, self.items[start:]
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # and nothing more
        assert len(self.items) == start + n, self.items[start:]
        return self.items[start:]


async def running(line: Line) -> AsyncIterator[Line]:
    task = asyncio.create_task(line.collector.run(line.emit))
    await asyncio.sleep(0.1)
    try:
        yield line
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        line.sensor.close()


@pytest.fixture
async def lanes(pty_pair: PtyPair) -> AsyncIterator[Line]:
    profile = msgspec.structs.replace(LANE, offline_after_s=0.6)
    async for line in running(
        Line(pty_pair, profile, [FramedDevice("fl-1", 1), FramedDevice("fl-2", 2)])
    ):
        yield line


@pytest.fixture
async def gates(pty_pair: PtyPair) -> AsyncIterator[Line]:
    async for line in running(Line(pty_pair, GATE, [FramedDevice("gt-north", 1)])):
        yield line


def reading(dev: str, **fields: object) -> Reading:
    return Reading(T, dev, "fire_lane", fields)  # type: ignore[arg-type]


async def test_lane_sensors_through_garbage_torn_frames_bad_checksums_and_silence(
    lanes: Line,
) -> None:
    enc: Callable[[bytes], bytes] = lanes.codec.encode
    lanes.send(enc(lane_status(1, 0, 0, 0)))
    assert await lanes.next_items(1) == [
        reading("fl-1", occupied=False, dwell_s=0.0, object="unknown")
    ]

    # Line noise before a frame costs nothing.
    lanes.send(b"\x00\xff\xaa\x13\x55garbage" + enc(lane_status(2, 1, 5, 1)))
    assert await lanes.next_items(1) == [
        reading("fl-2", occupied=True, dwell_s=5.0, object="vehicle")
    ]

    # A frame torn by a sensor reset, immediately followed by a good one.
    lanes.send(enc(lane_status(1, 1, 99, 3))[:6] + enc(lane_status(1, 1, 12, 1)))
    assert await lanes.next_items(1) == [
        reading("fl-1", occupied=True, dwell_s=12.0, object="vehicle")
    ]

    # A frame with a bad checksum is dropped; the next frame (a heartbeat with the fault
    # bit) is decoded.
    bad = bytearray(enc(lane_status(1, 0, 0, 0)))
    bad[-1] ^= 0x55
    lanes.send(bytes(bad) + enc(bytes([0xAA, 0x55, 0, 1, 0x02, 0x01])))
    assert await lanes.next_items(1) == [Event(T, "fl-1", "fire_lane", "sensor_fault", "start", {})]

    # A torn frame at the end of a burst; the line goes quiet; the next frame is whole.
    lanes.send(enc(lane_status(2, 0, 0, 0))[:8])
    await asyncio.sleep(0.1)
    lanes.send(enc(lane_status(2, 1, 7, 1)))
    assert await lanes.next_items(1) == [
        reading("fl-2", occupied=True, dwell_s=7.0, object="vehicle")
    ]
    lanes.send(enc(bytes([0xAA, 0x55, 0, 1, 0x02, 0x00])))
    assert await lanes.next_items(1) == [Event(T, "fl-1", "fire_lane", "sensor_fault", "end", {})]

    parser = lanes.collector.session.parser
    assert parser.counts["frames"] == 6
    assert parser.counts["checksum"] + parser.counts["bad_length"] >= 2
    assert parser.counts["torn"] >= 1

    # Both sensors fall silent past offline_after_s (0.6 s): each is reported once, then
    # fl-1 comes back.
    lanes.now = t2 = T + 600
    silent = await lanes.next_items(2)
    no_response = {"reason": "no_response"}
    assert sorted(silent, key=lambda i: i.dev) == [
        Event(t2, "fl-1", "fire_lane", "sensor_fault", "start", no_response),
        Event(t2, "fl-2", "fire_lane", "sensor_fault", "start", no_response),
    ]
    lanes.send(enc(lane_status(1, 1, 12, 1)))
    assert await lanes.next_items(1) == [
        Event(t2, "fl-1", "fire_lane", "sensor_fault", "end", no_response)
    ]


async def test_gate_controller_with_byte_stuffing_and_crc16(gates: Line) -> None:
    enc = gates.codec.encode
    # Passages 0x7E7D: both special bytes must travel stuffed.
    gates.send(enc(gate_status(1, 0b00010, 0, 0x7E7D)))
    assert await gates.next_items(1) == [
        Reading(
            T,
            "gt-north",
            "gate",
            {"open": False, "locked": True, "mode": "normal", "passages": 0x7E7D},
        )
    ]
    gates.send(enc(gate_status(1, 0b00101, 0, 0x7E7E)))
    assert await gates.next_items(2) == [
        Reading(
            T,
            "gt-north",
            "gate",
            {"open": True, "locked": False, "mode": "normal", "passages": 0x7E7E},
        ),
        Event(T, "gt-north", "gate", "forced_open", "start", {}),
    ]
    # Repeated failed credentials: an instant event with its count. A frame for another
    # controller address on the same line is ignored.
    gates.send(enc(bytes([0x7E, 1, 0x21, 6])) + enc(bytes([0x7E, 9, 0x21, 1])))
    assert await gates.next_items(1) == [
        Event(T, "gt-north", "gate", "invalid_attempts", "instant", {"count": 6})
    ]
    assert gates.collector.session.counts["unknown_address"] == 1


async def test_line_lost_and_back(tmp_path: Path) -> None:
    """The line disappears (socat ends, as when a USB adapter is pulled) and comes back on
    the same path: the collector reopens it and reads the next frame."""
    pair = start_pty_pair(tmp_path, "usb")
    line = Line(pair, LANE, [FramedDevice("fl-1", 1)])
    task = asyncio.create_task(line.collector.run(line.emit))
    try:
        await asyncio.sleep(0.2)
        line.send(line.codec.encode(lane_status(1, 1, 10, 1)))
        assert await line.next_items(1) == [
            reading("fl-1", occupied=True, dwell_s=10.0, object="vehicle")
        ]
        line.sensor.close()
        pair.proc.terminate()
        pair.proc.wait(timeout=10)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if line.collector.counts["port_errors"]:
                break
        pair = start_pty_pair(tmp_path, "usb")
        line.sensor = serial.Serial(pair.device, baudrate=9600, timeout=1)
        # The collector retries every 2 s; the sensor keeps reporting until it is heard.
        for _ in range(60):
            line.send(line.codec.encode(lane_status(1, 0, 0, 0)))
            await asyncio.sleep(0.1)
            if len(line.items) > 1:
                break
        assert line.items[1] == reading("fl-1", occupied=False, dwell_s=0.0, object="unknown")
        assert line.collector.counts["port_errors"] >= 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        line.sensor.close()
        pair.proc.terminate()
        pair.proc.wait(timeout=10)
