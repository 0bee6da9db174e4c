"""Modbus RTU over RS-485: one bus session per line, and the collector that polls its devices.

The bus is the one owner of its serial port (STYLE "one bus, one owner"): every request goes
through :meth:`ModbusBus.read`, which serialises them, keeps the line silent for the
inter-frame gap before each request, applies the device's own timeout and retries, and sorts
failures into timeouts (silence), CRC errors (bytes came back but no valid frame) and
exception responses. pymodbus (its RTU framer and serial transport) does the bytes.

The collector polls each device once per its profile's ``report_interval_s``, earliest due
first, so that a saturated bus degrades to round-robin instead of starving anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from pymodbus import ModbusException
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.pdu import ModbusPDU

from collectors.base import Emit, wall_ms
from collectors.checksums import compute
from collectors.decode import ModbusPlan, ModbusRead, pack_bits
from collectors.errors import PortError
from collectors.profile import ModbusProfile, SerialSettings, profile_deadbands
from collectors.tracker import DeviceTracker
from collectors.wire import Item

__all__ = ["ModbusBus", "ModbusCollector", "ModbusDevice", "silent_interval_s"]

log = logging.getLogger(__name__)

#: Modbus over Serial Line V1.02 §2.5.1.1: frames are separated by at least 3.5 character
#: times; above 19200 baud a fixed 1.75 ms is recommended.
_FAST_BAUD: Final = 19200
_FAST_GAP_S: Final = 0.00175
#: Seconds between attempts to reopen a port that failed.
_REOPEN_S: Final = 2.0
#: The reopen delay doubles while the port keeps failing, up to this: an adapter that
#: was pulled out must not flood the log.
_REOPEN_MAX_S: Final = 60.0
#: How often a line with no device to poll checks that its port is still there.
_IDLE_CHECK_S: Final = 1.0


def silent_interval_s(serial: SerialSettings) -> float:
    """The t3.5 gap the line must be quiet before a new request."""
    if serial.baudrate > _FAST_BAUD:
        return _FAST_GAP_S
    return 3.5 * serial.bits_per_char / serial.baudrate


Outcome = Literal["ok", "timeout", "crc", "exception", "io"]


@dataclass(slots=True)
class ReadResult:
    """The answer to one read: the bytes, or why there are none."""

    outcome: Outcome
    data: bytes = b""
    exception_code: int = 0


#: A failed attempt's outcome → the device counter it adds to (besides ``retries``).
DEVICE_ATTEMPT_COUNTERS: Final[dict[str, str]] = {"timeout": "timeouts", "crc": "crc_errors"}


class ModbusBus:
    """One RS-485 line, its port and its request lock. An async context manager."""

    def __init__(self, port: str, serial: SerialSettings, *, max_timeout_s: float = 1.0) -> None:
        self.port = port
        self.serial = serial
        self.gap_s = silent_interval_s(serial)
        self.counts: Counter[str] = Counter()
        self._lock = asyncio.Lock()
        self._quiet_at = 0.0
        self._rx = bytearray()
        # pymodbus's own timeout is set above every device's so that ours (per device,
        # applied with wait_for) always decides; its retries are ours too.
        self._client = AsyncModbusSerialClient(
            port,
            baudrate=serial.baudrate,
            bytesize=serial.bytesize,
            parity=serial.parity,
            stopbits=serial.stopbits,
            timeout=max_timeout_s + 1.0,
            retries=0,
            reconnect_delay=0,
            trace_packet=self._trace,
        )

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self._rx += data
            self.counts["rx_bytes"] += len(data)
        else:
            self.counts["tx_bytes"] += len(data)
        return data

    async def __aenter__(self) -> ModbusBus:
        if not await self._client.connect():
            self._client.close()
            raise PortError(self.port, "cannot open the serial port")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._client.close()

    @property
    def connected(self) -> bool:
        """False once the port was lost."""
        return bool(self._client.connected)

    async def read(
        self,
        unit: int,
        read: ModbusRead,
        *,
        timeout_s: float,
        retries: int,
        device_counts: Counter[str] | None = None,
    ) -> ReadResult:
        """Read one block from device ``unit``; retry timeouts and CRC errors. Every attempt
        is counted on the line and, when ``device_counts`` is given, against the device
        (``timeouts``, ``crc_errors``, ``retries``: see :data:`DEVICE_ATTEMPT_COUNTERS`)."""
        async with self._lock:
            result = ReadResult("timeout")
            for attempt in range(retries + 1):
                result = await self._attempt(unit, read, timeout_s)
                self.counts[result.outcome] += 1
                if device_counts is not None:
                    device_counts["retries"] += attempt > 0
                    if result.outcome in DEVICE_ATTEMPT_COUNTERS:
                        device_counts[DEVICE_ATTEMPT_COUNTERS[result.outcome]] += 1
                if result.outcome in ("ok", "exception", "io"):
                    break
            return result

    async def _attempt(self, unit: int, read: ModbusRead, timeout_s: float) -> ReadResult:
        wait = self._quiet_at - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._rx.clear()
        client = self._client
        call = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }[read.table]
        try:
            response: ModbusPDU = await asyncio.wait_for(
                call(read.address, count=read.count, device_id=unit), timeout_s
            )
        except TimeoutError:
            self._quiet_at = time.monotonic() + self.gap_s
            return ReadResult(self._classify_silence())
        except ModbusException as exc:
            self._quiet_at = time.monotonic() + self.gap_s
            log.warning("%s: unit %d: %s", self.port, unit, exc)
            return ReadResult("io")
        self._quiet_at = time.monotonic() + self.gap_s
        if response.isError():
            return ReadResult("exception", exception_code=int(response.exception_code))
        if read.table in ("coil", "discrete"):
            return ReadResult("ok", pack_bits(response.bits[: read.count]))
        return ReadResult("ok", ModbusPlan.registers_to_bytes(response.registers))

    async def write_coil(
        self, unit: int, address: int, value: bool, *, timeout_s: float
    ) -> Outcome:
        """Write one coil (an output relay) on device ``unit``; one attempt, no retry (a
        relay that switched but whose answer was lost must not be pulsed twice)."""
        async with self._lock:
            wait = self._quiet_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._rx.clear()
            try:
                response: ModbusPDU = await asyncio.wait_for(
                    self._client.write_coil(address, value, device_id=unit), timeout_s
                )
            except TimeoutError:
                return self._classify_silence()
            except ModbusException as exc:
                log.warning("%s: unit %d: %s", self.port, unit, exc)
                return "io"
            finally:
                self._quiet_at = time.monotonic() + self.gap_s
            outcome: Outcome = "exception" if response.isError() else "ok"
            self.counts[outcome] += 1
            return outcome

    def _classify_silence(self) -> Outcome:
        """A timeout with bytes received is a corrupted answer; without, the device is silent."""
        rx = bytes(self._rx)
        if len(rx) >= 4:
            crc = compute("crc16_modbus", rx[:-2])
            if crc != int.from_bytes(rx[-2:], "little"):
                return "crc"
        return "crc" if rx else "timeout"


@dataclass(frozen=True, slots=True)
class ModbusDevice:
    """One device on a bus: its id on the wire contract, its unit id, its profile."""

    id: str
    unit: int
    profile: ModbusProfile


class _Polled:
    def __init__(self, device: ModbusDevice) -> None:
        p = device.profile
        self.device = device
        self.plan = ModbusPlan(p)
        self.tracker = DeviceTracker(
            device.id,
            p.kind,
            heartbeat_ms=int(p.heartbeat_s * 1000),
            offline_after=p.offline_after,
            deadbands=profile_deadbands(p),
        )
        self.interval_s = p.report_interval_s
        self.timeout_s = p.timeout_ms / 1000
        self.due = 0.0
        self.exception_logged = False


class ModbusCollector:
    """Polls the devices of one RS-485 line and emits their readings and events."""

    def __init__(
        self,
        name: str,
        port: str,
        serial: SerialSettings,
        devices: Sequence[ModbusDevice],
        *,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self.name = name
        self.port = port
        self.serial = serial
        self.devices = [_Polled(d) for d in devices]
        self.counts: Counter[str] = Counter()
        self.bus: ModbusBus | None = None
        self._closed_bus_counts: Counter[str] = Counter()  # of buses opened before this one
        self._clock = clock
        self._wake = asyncio.Event()

    async def run(self, emit: Emit) -> None:
        """Open the line and poll until cancelled; reopen the port if it fails."""
        max_timeout = max((d.timeout_s for d in self.devices), default=1.0)
        reopen_s = _REOPEN_S
        while True:
            try:
                async with ModbusBus(self.port, self.serial, max_timeout_s=max_timeout) as bus:
                    reopen_s = _REOPEN_S  # opened: the next failure starts over
                    self.bus = bus
                    try:
                        await self._poll_forever(bus, emit)
                    finally:
                        self._closed_bus_counts.update(bus.counts)
                        self.bus = None
            except PortError as exc:
                log.warning("%s: %s; retrying in %.0f s", self.name, exc, reopen_s)
                self.counts["port_errors"] += 1
                for polled in self.devices:
                    for item in polled.tracker.miss(self._clock()):
                        await emit(item)
                await asyncio.sleep(reopen_s)
                reopen_s = min(reopen_s * 2, _REOPEN_MAX_S)

    async def _poll_forever(self, bus: ModbusBus, emit: Emit) -> None:
        if not self.devices:  # a line that only carries outputs (relay modules): keep it open
            while bus.connected:  # noqa: ASYNC110 (the bus has no event for a lost port)
                await asyncio.sleep(_IDLE_CHECK_S)
            raise PortError(self.port, "the serial port was lost")
        loop = asyncio.get_running_loop()
        start = loop.time()
        for polled in self.devices:
            polled.due = start
        while True:
            if not bus.connected:
                raise PortError(self.port, "the serial port was lost")
            polled = min(self.devices, key=lambda d: d.due)
            wait = polled.due - loop.time()
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue  # a re-read request may have changed who is due
            polled.due = max(polled.due + polled.interval_s, loop.time())
            for item in await self.poll(bus, polled):
                await emit(item)

    async def poll(self, bus: ModbusBus, polled: _Polled) -> list[Item]:
        """Read every block of one device; the items its answer (or silence) produces."""
        blocks: list[bytes] = []
        profile = polled.device.profile
        for read in polled.plan.reads:
            result = await bus.read(
                polled.device.unit,
                read,
                timeout_s=polled.timeout_s,
                retries=profile.retries,
                device_counts=polled.tracker.counts,
            )
            self.counts[result.outcome] += 1
            if result.outcome == "exception":
                if not polled.exception_logged:
                    log.warning(
                        "%s: %s (unit %d) answered exception %d to %s %d..%d",
                        self.name,
                        polled.device.id,
                        polled.device.unit,
                        result.exception_code,
                        read.table,
                        read.address,
                        read.address + read.count - 1,
                    )
                    polled.exception_logged = True
                polled.tracker.counts["exceptions"] += 1
                return polled.tracker.answered(self._clock())
            if result.outcome != "ok":
                return polled.tracker.miss(self._clock())
            blocks.append(result.data)
        self.counts["polls"] += 1
        polled.exception_logged = False
        sample = polled.plan.decode(blocks)
        for problem in sample.problems:
            log.debug("%s: %s: %s", self.name, polled.device.id, problem)
        return polled.tracker.sample(self._clock(), sample)

    def reread(self, dev: str) -> bool:
        """Poll ``dev`` now and send a full reading even if nothing changed; False if unknown."""
        for polled in self.devices:
            if polled.device.id == dev:
                polled.due = 0.0
                polled.tracker.last_reading_t = None
                self._wake.set()
                return True
        return False

    async def write_coil(self, unit: int, coil: int, value: bool) -> str | None:
        """Drive an output through this line; ``None`` on success, else what went wrong."""
        bus = self.bus
        if bus is None or not bus.connected:
            return f"{self.name}: the serial line {self.port} is not open"
        outcome = await bus.write_coil(unit, coil, value, timeout_s=1.0)
        return None if outcome == "ok" else f"{self.name}: unit {unit} coil {coil}: {outcome}"

    def poll_success(self) -> dict[str, tuple[int, int]]:
        """Per device: (good answers, polls without data: missed or refused) so far."""
        return {
            d.device.id: (
                d.tracker.counts["samples"],
                d.tracker.counts["misses"] + d.tracker.counts["exceptions"],
            )
            for d in self.devices
        }

    def diagnostics(self) -> dict[str, int]:
        """The line's error counters since start (every attempt, retries included)."""
        seen = self._closed_bus_counts + (self.bus.counts if self.bus else Counter())
        return {"timeouts": seen["timeout"], "crc_errors": seen["crc"],
                "exceptions": seen["exception"], "io_errors": seen["io"],
                "port_errors": self.counts["port_errors"]}  # fmt: skip

    def device_counts(self) -> dict[str, dict[str, int]]:
        """Per-device counters (samples, misses, offline, exceptions, value problems)."""
        return {d.device.id: dict(d.tracker.counts) for d in self.devices}
