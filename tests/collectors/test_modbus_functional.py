"""The Modbus RTU collector on a real serial line: a socat pty pair, with pymodbus's own
server on the far end acting as the elevator terminals (units 1 and 2; unit 3 is absent).

The device side uses the server's documented hooks: ``action`` (serve the registers the test
sets, or answer an exception) and ``trace_packet`` (drop a response to make a unit silent,
or flip a bit to make a CRC error), so the line carries exactly what a faulty bus would.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from collectors.modbus import ModbusBus, ModbusCollector, ModbusDevice
from collectors.profile import SerialSettings
from collectors.wire import Event, Item, Reading
from tests.collectors.profiles import ELEVATOR, ELEVATOR_PACKED
from tests.conftest import PtyPair, start_pty_pair

pytestmark = pytest.mark.functional

T = 1_795_300_000_000
# Linux ptys refuse parity settings: the line runs 8N1 at 9600 baud on both ends.
LINE = SerialSettings(baudrate=9600, parity="N")
FAST = msgspec.structs.replace(ELEVATOR, report_interval_s=0.1, timeout_ms=150)


@dataclass
class Terminals:
    """The device end of the line: registers per unit and the faults to inject."""

    regs: dict[int, list[int]] = field(default_factory=lambda: {1: [0] * 16, 2: [0] * 16})
    muted: set[int] = field(default_factory=set)
    corrupt: dict[int, int] = field(default_factory=dict)  # unit -> responses to corrupt
    refuse: set[int] = field(default_factory=set)  # units answering ILLEGAL_ADDRESS

    async def action(
        self,
        unit: int,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: object,
    ) -> ExcCodes | None:
        if unit in self.refuse:
            return ExcCodes.ILLEGAL_ADDRESS
        current_registers[:] = self.regs[unit][
            start_address : start_address + len(current_registers)
        ]
        return None

    def trace(self, sending: bool, data: bytes) -> bytes:
        if not sending or not data:
            return data
        unit = data[0]
        if unit in self.muted:
            return b""
        if self.corrupt.get(unit, 0) > 0:
            self.corrupt[unit] -= 1
            return data[:-1] + bytes([data[-1] ^ 0xFF])
        return data


@pytest.fixture
async def terminals(pty_pair: PtyPair) -> AsyncIterator[Terminals]:
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    term = Terminals()
    devices = [
        SimDevice(
            id=unit,
            simdata=[SimData(address=0, count=16, values=0, datatype=DataType.REGISTERS)],
            action=functools.partial(term.action, unit),
        )
        for unit in (1, 2)
    ]
    server = ModbusSerialServer(
        devices, port=pty_pair.device, baudrate=9600, trace_packet=term.trace
    )
    await server.serve_forever(background=True)
    yield term
    await server.shutdown()


def elevator_regs(
    status: int = 0, floor: int = 1, mode: int = 1, fault: int = 0, trips: int = 0
) -> list[int]:
    regs = [0] * 16
    regs[0], regs[1], regs[4], regs[5] = status, floor, mode, fault
    regs[7], regs[8] = trips >> 16, trips & 0xFFFF
    return regs


async def test_exact_items_across_crc_errors_silence_and_return(
    pty_pair: PtyPair, terminals: Terminals
) -> None:
    terminals.regs[1] = elevator_regs(status=0b0110, floor=3, trips=70001)
    terminals.regs[2] = elevator_regs(floor=-1 & 0xFFFF)
    collector = ModbusCollector(
        "bus-1",
        pty_pair.host,
        LINE,
        [ModbusDevice("el-1", 1, FAST), ModbusDevice("el-2", 2, FAST)],
        clock=lambda: T,
    )
    el1, el2 = collector.devices
    base = {
        "running": False,
        "door_zone": True,
        "occupied": True,
        "floor": 3,
        "direction": "none",
        "door": "closed",
        "service_mode": "normal",
        "power": "mains",
        "trips": 70001,
        "run_hours": 0.0,
    }
    async with ModbusBus(pty_pair.host, LINE, max_timeout_s=0.15) as bus:
        assert await collector.poll(bus, el1) == [Reading(T, "el-1", "elevator", base)]
        [second] = await collector.poll(bus, el2)
        assert isinstance(second, Reading)
        assert second.fields["floor"] == -1

        # Trapped passengers: status bit 3. Nothing else changed, so only the event.
        terminals.regs[1][0] = 0b1110
        assert await collector.poll(bus, el1) == [
            Event(T, "el-1", "elevator", "trapped", "start", {})
        ]

        # One corrupted answer: the retry succeeds, the CRC error is counted, nothing lost.
        terminals.corrupt[1] = 1
        terminals.regs[1][5] = 1  # and a fault code appears
        assert await collector.poll(bus, el1) == [
            Event(T, "el-1", "elevator", "safety_circuit_open", "start", {"code": 1})
        ]
        assert bus.counts["crc"] == 1

        # Both attempts corrupted: the poll is a miss, not a reading, and not yet offline.
        terminals.corrupt[1] = 2
        assert await collector.poll(bus, el1) == []
        assert bus.counts["crc"] == 3
        assert el1.tracker.misses == 1

        # Unit 2 falls silent: offline after three missed polls (two attempts each), once.
        terminals.muted.add(2)
        assert await collector.poll(bus, el2) == []
        assert await collector.poll(bus, el2) == []
        assert await collector.poll(bus, el2) == [
            Event(T, "el-2", "elevator", "terminal_offline", "start", {})
        ]
        assert await collector.poll(bus, el2) == []
        assert bus.counts["timeout"] == 8
        # Each device's own share of the line's errors: el-1 had the CRC errors, el-2 the
        # timeouts; every attempt after the first of a read is a retry.
        pick = ("crc_errors", "timeouts", "retries")
        assert {k: el1.tracker.counts[k] for k in pick} == {
            "crc_errors": 3, "timeouts": 0, "retries": 2}  # fmt: skip
        assert {k: el2.tracker.counts[k] for k in pick} == {
            "crc_errors": 0, "timeouts": 8, "retries": 4}  # fmt: skip

        # It comes back: the offline condition ends; its values did not change.
        terminals.muted.clear()
        assert await collector.poll(bus, el2) == [
            Event(T, "el-2", "elevator", "terminal_offline", "end", {})
        ]

        # An exception response is an answer: counted, no reading, no miss.
        terminals.refuse.add(1)
        assert await collector.poll(bus, el1) == []
        assert bus.counts["exception"] == 1
        terminals.refuse.clear()
        # The earlier miss was reset by the exception-free answer that follows.
        terminals.regs[1][0] = 0b0110
        terminals.regs[1][5] = 0
        assert await collector.poll(bus, el1) == [
            Event(T, "el-1", "elevator", "trapped", "end", {}),
            Event(T, "el-1", "elevator", "safety_circuit_open", "end", {"code": 1}),
        ]
        assert el1.tracker.misses == 0

        # Offline, then answering only with exceptions (pymodbus does so for an unknown
        # unit): it is there, so the offline event ends; the poll is still no success.
        terminals.muted.add(1)
        for _ in range(2):
            assert await collector.poll(bus, el1) == []
        assert await collector.poll(bus, el1) == [
            Event(T, "el-1", "elevator", "terminal_offline", "start", {})
        ]
        terminals.muted.clear()
        terminals.refuse.add(1)
        assert await collector.poll(bus, el1) == [
            Event(T, "el-1", "elevator", "terminal_offline", "end", {})
        ]
        assert await collector.poll(bus, el1) == []
        _good, bad = collector.poll_success()["el-1"]
        assert bad == el1.tracker.counts["misses"] + el1.tracker.counts["exceptions"]
        terminals.refuse.clear()


async def test_run_polls_every_device_and_reports_the_absent_one(
    pty_pair: PtyPair, terminals: Terminals
) -> None:
    terminals.regs[1] = elevator_regs(floor=7)
    terminals.regs[2] = elevator_regs(floor=9)
    # pymodbus's server answers DEVICE_FAILURE for a unit it does not have; on a real bus an
    # absent unit is silent, so its answers are dropped on the line.
    terminals.muted.add(3)
    collector = ModbusCollector(
        "bus-1",
        pty_pair.host,
        LINE,
        [ModbusDevice(f"el-{u}", u, FAST) for u in (1, 2, 3)],
    )
    items: list[Item] = []

    async def emit(item: Item) -> None:
        items.append(item)

    task = asyncio.create_task(collector.run(emit))
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if any(isinstance(i, Event) and i.dev == "el-3" for i in items):
                break
        terminals.regs[1][1] = 8
        await asyncio.sleep(0.5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    readings = [(i.dev, i.fields["floor"]) for i in items if isinstance(i, Reading)]
    assert readings[:2] == [("el-1", 7), ("el-2", 9)]
    assert ("el-1", 8) in readings
    events = [(i.dev, i.event, i.state) for i in items if isinstance(i, Event)]
    assert events == [("el-3", "terminal_offline", "start")]
    counts = collector.device_counts()
    assert counts["el-1"]["samples"] >= 5
    assert counts["el-2"]["samples"] >= 5
    assert counts["el-3"]["misses"] >= 3
    assert "samples" not in counts["el-3"]


async def test_port_lost_and_back(tmp_path: Path) -> None:
    """The serial line disappears (USB adapter pulled: socat ends) and comes back on the
    same path: the device goes offline once, and online again when the port reopens."""
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    regs = elevator_regs(floor=4)

    async def action(*args: object) -> None:
        current = args[4]
        assert isinstance(current, list)
        current[:] = regs[: len(current)]

    async def start_line() -> tuple[PtyPair, ModbusSerialServer]:
        pair = start_pty_pair(tmp_path, "usb")
        server = ModbusSerialServer(
            [
                SimDevice(
                    id=1,
                    simdata=[SimData(0, count=16, values=0, datatype=DataType.REGISTERS)],
                    action=action,
                )
            ],
            port=pair.device,
            baudrate=9600,
        )
        await server.serve_forever(background=True)
        return pair, server

    pair, server = await start_line()
    collector = ModbusCollector("bus-1", pair.host, LINE, [ModbusDevice("el-1", 1, FAST)])
    items: list[Item] = []

    async def emit(item: Item) -> None:
        items.append(item)

    task = asyncio.create_task(collector.run(emit))
    try:
        await asyncio.sleep(0.5)
        await server.shutdown()
        pair.proc.terminate()
        pair.proc.wait(timeout=10)
        for _ in range(200):
            await asyncio.sleep(0.05)
            if any(isinstance(i, Event) for i in items):
                break
        pair, server = await start_line()
        for _ in range(200):
            await asyncio.sleep(0.05)
            if sum(isinstance(i, Event) for i in items) == 2:
                break
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.shutdown()
        pair.proc.terminate()
        pair.proc.wait(timeout=10)
    events = [(i.event, i.state) for i in items if isinstance(i, Event)]
    assert events == [("terminal_offline", "start"), ("terminal_offline", "end")]
    assert collector.counts["port_errors"] >= 1
    assert isinstance(items[0], Reading)
    assert items[0].fields["floor"] == 4


@dataclass
class Relays:
    """An IO module (unit 9) with relay outputs: every write request the device received."""

    writes: list[tuple[int, int, object]] = field(default_factory=list)
    states: list[bool] = field(default_factory=list)

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: object,
    ) -> ExcCodes | None:
        # pymodbus calls once with the values to set, then once (``set_values`` None) to
        # read back the coil for the echo: that call shows the relay's state after the write.
        if function_code in (5, 15) and set_values is not None:
            self.writes.append((function_code, address, set_values))
        elif function_code in (5, 15):
            self.states.append(any(current_registers))
        return None


@pytest.mark.parametrize("polled", [False, True], ids=["outputs-only", "between-polls"])
async def test_coil_output_switches_the_relay_once_and_reports_silence(
    pty_pair: PtyPair, polled: bool
) -> None:
    """The gateway's Modbus output (a fire-release relay on an IO module, unit 9): on a line
    of its own, and on an elevator line where the write must fit between polls of unit 1."""
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    relays = Relays()
    muted = {"on": False}

    def trace(sending: bool, data: bytes) -> bytes:
        return b"" if sending and muted["on"] and data[:1] == b"\x09" else data

    elevator = Terminals()
    elevator.regs[1] = elevator_regs(floor=4)
    server = ModbusSerialServer(
        [SimDevice(id=9, simdata=[SimData(0, count=4, values=0, datatype=DataType.REGISTERS)],
                   action=relays.action),
         SimDevice(id=1, simdata=[SimData(0, count=16, values=0, datatype=DataType.REGISTERS)],
                   action=functools.partial(elevator.action, 1))],
        port=pty_pair.device, baudrate=9600, trace_packet=trace,
    )  # fmt: skip
    await server.serve_forever(background=True)
    devices = [ModbusDevice("el-1", 1, FAST)] if polled else []
    collector = ModbusCollector("io-line", pty_pair.host, LINE, devices)
    items: list[Item] = []

    async def emit(item: Item) -> None:
        items.append(item)

    task = asyncio.create_task(collector.run(emit))
    try:
        for _ in range(100):  # until the line is open
            if collector.bus is not None and collector.bus.connected:
                break
            await asyncio.sleep(0.05)
        assert await collector.write_coil(9, 3, True) is None
        await asyncio.sleep(0.3)
        assert await collector.write_coil(9, 3, False) is None
        muted["on"] = True
        error = await collector.write_coil(9, 3, True)
        assert error == "io-line: unit 9 coil 3: timeout"
        await asyncio.sleep(0.3)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.shutdown()
    # One request per write, the silent one included: a relay is never pulsed twice.
    assert [(fc, addr) for fc, addr, _ in relays.writes] == [(5, 3), (5, 3), (5, 3)]
    assert [bool(v[0]) for _, _, v in relays.writes] == [True, False, True]  # type: ignore[index]
    # The silent one switched too (its answer was lost on the line): the relay is on.
    assert relays.states == [True, False, True]
    if polled:  # the elevator was read throughout, before, between and after the writes
        assert collector.device_counts()["el-1"]["samples"] >= 5
        assert "misses" not in collector.device_counts()["el-1"]
    else:
        assert items == []


async def test_packed_status_words_decode_exactly_over_the_line(pty_pair: PtyPair) -> None:
    """Issue 14: bit groups (mask), named bits (set/clear), an offset floor, a BCD fault code
    and low-word-first 32-bit values, served by pymodbus as a second-layout terminal."""
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    term = Terminals(regs={7: [0] * 32})
    server = ModbusSerialServer(
        [SimDevice(id=7, simdata=[SimData(address=0, count=32, values=0,
                                          datatype=DataType.REGISTERS)],
                   action=functools.partial(term.action, 7))],
        port=pty_pair.device, baudrate=9600, trace_packet=term.trace,
    )  # fmt: skip
    await server.serve_forever(background=True)
    try:
        profile = msgspec.structs.replace(ELEVATOR_PACKED, report_interval_s=0.1, timeout_ms=150)
        devices = [ModbusDevice("el-7", 7, profile)]
        collector = ModbusCollector("bus-2", pty_pair.host, LINE, devices, clock=lambda: T)
        [dev] = collector.devices
        seconds, trips = 45_000, 70_000
        # down, door zone, door open, running, occupied, mains; floor raw 2 = -1; no fault
        term.regs[7][0x10:0x17] = [0b0000_0111_0010_0110, 2, 0, seconds & 0xFFFF,
                                   seconds >> 16, trips & 0xFFFF, trips >> 16]  # fmt: skip
        async with ModbusBus(pty_pair.host, LINE, max_timeout_s=0.15) as bus:
            assert await collector.poll(bus, dev) == [Reading(T, "el-7", "elevator", {
                "direction": "down", "door": "open", "door_zone": True, "running": True,
                "occupied": True, "power": "mains", "floor": -1, "run_hours": 12.5,
                "trips": 70_000})]  # fmt: skip
            # Trapped (bit 12), on battery (bit 10 clear), BCD fault 0x10 = overtravel_bottom.
            term.regs[7][0x10] = 0b0001_0011_0010_0110
            term.regs[7][0x12] = 0x10
            assert await collector.poll(bus, dev) == [
                Reading(T, "el-7", "elevator", {
                    "direction": "down", "door": "open", "door_zone": True, "running": True,
                    "occupied": True, "power": "battery", "floor": -1, "run_hours": 12.5,
                    "trips": 70_000}),
                Event(T, "el-7", "elevator", "trapped", "start", {}),
                Event(T, "el-7", "elevator", "overtravel_bottom", "start", {"code": 10}),
            ]  # fmt: skip
    finally:
        await server.shutdown()
