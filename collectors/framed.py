"""The framed-serial collector: a maker's own frames on a line, decoded by its profile.

The I/O shell is thin: read what the line delivers, feed the parser, take out every good
frame, decode it, hand the items on. When the line is quiet for the inter-frame gap, the
parser is told (:meth:`FrameParser.idle`) so that a torn frame never holds back the next;
devices that stop sending for their profile's ``offline_after_s`` are reported offline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from collectors.base import Emit, wall_ms
from collectors.decode import FrameDecoder
from collectors.errors import PortError
from collectors.framing import FrameParser
from collectors.profile import FramedProfile, SerialSettings, profile_deadbands
from collectors.serial_port import SerialPort
from collectors.tracker import DeviceTracker
from collectors.wire import Item

__all__ = ["FramedCollector", "FramedDevice", "FramedSession"]

log = logging.getLogger(__name__)

#: The line is "quiet" after this many character times without a byte (at least 20 ms,
#: since USB-serial adapters deliver in bursts of a few ms).
_IDLE_CHARS: Final = 8
_MIN_IDLE_S: Final = 0.02
_REOPEN_S: Final = 2.0
#: The reopen delay doubles while the port keeps failing, up to this: an adapter that
#: was pulled out must not flood the log.
_REOPEN_MAX_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class FramedDevice:
    """A device on a framed line; ``address`` is its bus address (None: the only device)."""

    id: str
    address: int | None = None


def line_counters(parser: Counter[str], session: Counter[str]) -> dict[str, int]:
    """A framed line's counters under the names the health item and the docs use."""
    return {"frames": parser["frames"], "checksum_errors": parser["checksum"],
            "stray_bytes": parser["garbage_bytes"], "torn_frames": parser["torn"],
            "bad_frames": parser["bad_length"] + parser["bad_end"] + parser["too_long"]
            + parser["short"], "overflow_bytes": parser["overflow_bytes"],
            "unknown_messages": session["unknown_message"],
            "unknown_addresses": session["unknown_address"]}  # fmt: skip


class FramedSession:
    """Sans-I/O core of the collector: bytes and quiet periods in, wire items out."""

    def __init__(
        self, profile: FramedProfile, devices: Sequence[FramedDevice], *, started_t: int
    ) -> None:
        self.profile = profile
        self.parser = FrameParser(profile.frame)
        self.decoder = FrameDecoder(profile)
        self.counts: Counter[str] = Counter()
        self.started_t = started_t
        self.trackers = {
            d.address: DeviceTracker(
                d.id,
                profile.kind,
                heartbeat_ms=int(profile.heartbeat_s * 1000),
                deadbands=profile_deadbands(profile),
            )
            for d in devices
        }

    def diagnostics(self) -> dict[str, int]:
        """The line's error counters since start."""
        return line_counters(self.parser.counts, self.counts)

    def feed(self, t: int, data: bytes) -> list[Item]:
        """Bytes from the line at time ``t``: the items of every complete frame."""
        self.parser.feed(data)
        return self._drain(t)

    def idle(self, t: int) -> list[Item]:
        """The line was quiet: give up a torn frame, and report devices silent too long."""
        self.parser.idle()
        return self._drain(t) + self.check_silence(t)

    def check_silence(self, t: int) -> list[Item]:
        """Offline events for devices that sent no good frame for ``offline_after_s``."""
        items: list[Item] = []
        limit_ms = int(self.profile.offline_after_s * 1000)
        if limit_ms > 0:
            for tracker in self.trackers.values():
                items.extend(tracker.silent_since(t, limit_ms, self.started_t))
        return items

    def _drain(self, t: int) -> list[Item]:
        items: list[Item] = []
        while (frame := self.parser.next_frame()) is not None:
            decoded = self.decoder.decode(frame.data)
            if decoded is None:
                self.counts["unknown_message"] += 1
                continue
            address, message, sample = decoded
            tracker = self.trackers.get(address)
            if tracker is None and self.decoder.address_at is None and len(self.trackers) == 1:
                tracker = next(iter(self.trackers.values()))
            if tracker is None:
                self.counts["unknown_address"] += 1
                continue
            self.counts[f"message:{message}"] += 1
            items.extend(tracker.sample(t, sample))
        return items


class FramedCollector:
    """Reads one serial line of framed devices (one profile per line)."""

    def __init__(
        self,
        name: str,
        port: str,
        serial: SerialSettings,
        profile: FramedProfile,
        devices: Sequence[FramedDevice],
        *,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self.name = name
        self.port = port
        self.serial = serial
        self._clock = clock
        self.session = FramedSession(profile, devices, started_t=clock())
        char_s = serial.bits_per_char / serial.baudrate
        self.idle_s = max(_MIN_IDLE_S, _IDLE_CHARS * char_s)
        self.counts: Counter[str] = Counter()

    def diagnostics(self) -> dict[str, int]:
        """The line's error counters since start."""
        return {**self.session.diagnostics(), "port_errors": self.counts["port_errors"]}

    async def run(self, emit: Emit) -> None:
        """Read until cancelled; reopen the port if it fails."""
        reopen_s = _REOPEN_S
        while True:
            try:
                async with SerialPort(self.port, self.serial) as port:
                    reopen_s = _REOPEN_S  # opened: the next failure starts over
                    await self._read_forever(port, emit)
            except PortError as exc:
                log.warning("%s: %s; retrying in %.0f s", self.name, exc, reopen_s)
                self.counts["port_errors"] += 1
                for item in self.session.idle(self._clock()):
                    await emit(item)
                await asyncio.sleep(reopen_s)
                reopen_s = min(reopen_s * 2, _REOPEN_MAX_S)

    async def _read_forever(self, port: SerialPort, emit: Emit) -> None:
        # The silence check runs at least this often even when the line is busy.
        check_s = max(1.0, min(10.0, self.session.profile.offline_after_s / 4))
        next_check = time.monotonic() + check_s
        while True:
            try:
                data = await asyncio.wait_for(port.read(), self.idle_s)
            except TimeoutError:
                items = self.session.idle(self._clock())
                next_check = time.monotonic() + check_s
            else:
                self.counts["rx_bytes"] += len(data)
                items = self.session.feed(self._clock(), data)
                if time.monotonic() >= next_check:
                    items += self.session.check_silence(self._clock())
                    next_check = time.monotonic() + check_s
            for item in items:
                await emit(item)
