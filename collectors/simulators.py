"""Device simulators: elevators, fire lanes and gates that behave like the real thing.

Theory of operation
-------------------
Each simulator is a sans-I/O state machine. ``step(now_ms)`` advances it to ``now_ms`` in
whole ticks of :data:`TICK_MS` and returns the readings and events that the real device would
have reported in that time, stamped with device time. Nothing here reads a clock, sleeps or
does I/O, so a run is a pure function of the seed, the device id and the sequence of
``now_ms`` values: the same inputs always give the same items (tests rely on it).

What each device does (probabilities are per one-second tick and were chosen so that a demo
of ~20 communities shows something happening every few seconds without being absurd):

* Elevator: idle cars get calls, travel one floor per 2 s with the doors cycling at each stop
  (opening 1 s, open 3 s, closing 1 s); passengers get in and out at stops. Now and then a
  fault event (GB/T 24476 codes 01-10) starts and ends. Rarely a car stops between floors
  with someone inside: ``trapped`` starts, and a rescue ends it after 1-6 minutes.
* Fire lane: vehicles arrive, park for one to four minutes and leave; one in six lingers 10-30
  minutes, far past the dwell threshold. The camera box reports ``obstruction`` start when the
  dwell passes its own threshold and end when the lane clears.
* Gate: residents pass (the gate opens, a passage is counted, it closes). Occasionally it is
  forced open (``forced_open``), or wedged open: ``held_open`` starts once it has been open past
  its threshold and ends when someone closes it.

Readings are sent on every change and as a full snapshot every :data:`HEARTBEAT_MS`.
"""

from __future__ import annotations

import random
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Final, Protocol

from collectors.wire import DeviceKind, Event, EventState, FieldValue, Item, Reading

__all__ = [
    "HEARTBEAT_MS",
    "TICK_MS",
    "DeviceSimulator",
    "ElevatorSim",
    "FireLaneSim",
    "GateSim",
    "make_simulator",
]

TICK_MS: Final = 1000
HEARTBEAT_MS: Final = 30_000
#: A simulator asked to catch up more than this (a paused process) skips ahead instead of
#: producing an hour of history in one burst.
MAX_CATCH_UP_TICKS: Final = 600

FAULTS: Final = (
    "safety_circuit_open",
    "door_close_fault",
    "door_open_fault",
    "stopped_outside_door_zone",
    "position_lost",
    "restart_prevented",
)


class DeviceSimulator(Protocol):
    """What a simulated device offers the collector that drives it."""

    dev: str
    kind: DeviceKind

    def step(self, now_ms: int) -> list[Item]:
        """Advance to ``now_ms``; return what the device reported meanwhile."""
        ...


def _rng(seed: int, dev: str) -> random.Random:
    # crc32, not hash(): str hashes are salted per process and would break determinism.
    # S311: the simulation wants a reproducible PRNG, not a cryptographic one.
    return random.Random(seed * 1_000_003 + zlib.crc32(dev.encode()))  # noqa: S311


@dataclass
class _Base(ABC):
    """Tick bookkeeping shared by the simulators: time, heartbeat and change detection."""

    dev: str
    seed: int
    rng: random.Random = field(init=False)
    now: int | None = field(default=None, init=False)
    _last_sent: dict[str, FieldValue] = field(default_factory=dict, init=False)
    _last_heartbeat: int = field(default=-HEARTBEAT_MS, init=False)
    _out: list[Item] = field(default_factory=list, init=False)

    kind: DeviceKind = field(default="elevator", init=False)

    def __post_init__(self) -> None:
        self.rng = _rng(self.seed, self.dev)

    def step(self, now_ms: int) -> list[Item]:
        if self.now is None:
            self.now = now_ms - TICK_MS
        ticks = (now_ms - self.now) // TICK_MS
        if ticks > MAX_CATCH_UP_TICKS:
            self.now = now_ms - MAX_CATCH_UP_TICKS * TICK_MS
            ticks = MAX_CATCH_UP_TICKS
        for _ in range(ticks):
            self.now += TICK_MS
            self._tick()
            self._report()
        out, self._out = self._out, []
        return out

    @abstractmethod
    def _tick(self) -> None:
        """Advance the device's own behaviour by one tick, queueing its events."""

    @abstractmethod
    def _fields(self) -> dict[str, FieldValue]:
        """The device's current readings."""

    def _event(self, name: str, state: EventState, **data: FieldValue) -> None:
        assert self.now is not None
        self._out.append(Event(self.now, self.dev, self.kind, name, state, dict(data)))

    def _report(self) -> None:
        assert self.now is not None
        fields = self._fields()
        due = self.now - self._last_heartbeat >= HEARTBEAT_MS
        if due or fields != self._last_sent:
            mode, was = fields.get("service_mode"), self._last_sent.get("service_mode")
            if None not in (mode, was) and mode != was:  # as terminals report it (40-47)
                self._event("service_mode_changed", "instant", **{"from": was, "to": mode})  # type: ignore[arg-type]
            self._out.append(Reading(self.now, self.dev, self.kind, fields))
            self._last_sent = fields
            if due:
                self._last_heartbeat = self.now

    def _chance(self, p: float) -> bool:
        return self.rng.random() < p


@dataclass
class ElevatorSim(_Base):
    """An elevator car serving ``floors`` landings (1..floors)."""

    floors: int = 18
    kind: DeviceKind = field(default="elevator", init=False)
    floor: int = field(default=1, init=False)
    target: int = field(default=1, init=False)
    door: str = field(default="closed", init=False)
    door_timer: int = field(default=0, init=False)
    move_timer: int = field(default=0, init=False)
    occupied: bool = field(default=False, init=False)
    between_floors: bool = field(default=False, init=False)
    trips: int = field(default=0, init=False)
    run_s: int = field(default=0, init=False)
    trapped_left: int = field(default=0, init=False)
    fault: str | None = field(default=None, init=False)
    fault_left: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.floor = self.rng.randint(1, self.floors)
        self.target = self.floor

    @property
    def running(self) -> bool:
        return self.target != self.floor or self.between_floors

    def _tick(self) -> None:
        if self.trapped_left:
            self.trapped_left -= 1
            if self.trapped_left == 0:  # rescued: the car is levelled, doors open, all out
                self.between_floors = False
                self.target = self.floor
                self._event("trapped", "end", floor=self.floor)
                self.door, self.door_timer = "opening", 1
                self.occupied = False
            return
        if self.fault:
            self.fault_left -= 1
            if self.fault_left <= 0:
                self._event(self.fault, "end")
                self.fault = None
        elif self.door == "closed" and not self.running and self._chance(1 / 20_000):
            self.fault = self.rng.choice(FAULTS)
            self.fault_left = self.rng.randint(30, 240)
            self._event(self.fault, "start")
        if self.door != "closed":
            self._door_tick()
        elif self.running:
            self._move_tick()
        elif self.fault is None and self._chance(1 / 8):
            self.target = self.rng.randint(1, self.floors)
            if self.target == self.floor:
                self.door, self.door_timer = "opening", 1

    def _door_tick(self) -> None:
        self.door_timer -= 1
        if self.door_timer > 0:
            return
        if self.door == "opening":
            self.door, self.door_timer = "open", 3
            # Some get out, some get in.
            self.occupied = self._chance(0.6)
        elif self.door == "open":
            self.door, self.door_timer = "closing", 1
        else:
            self.door = "closed"

    def _move_tick(self) -> None:
        self.run_s += 1
        self.move_timer += 1
        if self.move_timer == 1:
            self.between_floors = True
            if self.occupied and self._chance(1 / 6_000):
                self.trapped_left = self.rng.randint(60, 360)
                self._event("trapped", "start", floor=self.floor)
            return
        self.move_timer = 0
        self.between_floors = False
        self.floor += 1 if self.target > self.floor else -1
        if self.floor == self.target:
            self.trips += 1
            self.door, self.door_timer = "opening", 1

    def _fields(self) -> dict[str, FieldValue]:
        stopped_between = self.trapped_left > 0
        direction = "none"
        if self.running and not stopped_between:
            direction = "up" if self.target > self.floor else "down"
        return {
            "running": self.running and not stopped_between,
            "direction": direction,
            "floor": self.floor,
            "door_zone": not self.between_floors,
            "door": self.door,
            "occupied": self.occupied,
            "service_mode": "out_of_service" if self.fault else "normal",
            "power": "mains",
            "run_hours": round(self.run_s / 3600, 3),
            "trips": self.trips,
        }


@dataclass
class FireLaneSim(_Base):
    """A fire lane watched by a camera-AI box with its own dwell threshold."""

    dwell_threshold_s: int = 60
    kind: DeviceKind = field(default="fire_lane", init=False)
    occupied: bool = field(default=False, init=False)
    obj: str = field(default="vehicle", init=False)
    dwell: int = field(default=0, init=False)
    stay: int = field(default=0, init=False)
    obstructing: bool = field(default=False, init=False)

    def _tick(self) -> None:
        if not self.occupied:
            if self._chance(1 / 240):
                self.occupied = True
                self.obj = self.rng.choices(
                    ["vehicle", "ebike", "goods", "unknown"], weights=[6, 2, 1, 1]
                )[0]
                self.dwell = 0
                lingering = self._chance(1 / 6)
                self.stay = self.rng.randint(600, 1800) if lingering else self.rng.randint(20, 240)
            return
        self.dwell += 1
        if not self.obstructing and self.dwell >= self.dwell_threshold_s:
            self.obstructing = True
            self._event("obstruction", "start", object=self.obj)
        if self.dwell >= self.stay:
            self.occupied = False
            if self.obstructing:
                self.obstructing = False
                self._event("obstruction", "end", dwell_s=self.dwell)
            self.dwell = 0

    def _fields(self) -> dict[str, FieldValue]:
        if not self.occupied:
            return {"occupied": False, "dwell_s": 0}
        # While occupied the box reports its dwell in steps of 5 s (not every second).
        return {"occupied": True, "dwell_s": self.dwell - self.dwell % 5, "object": self.obj}


@dataclass
class GateSim(_Base):
    """A pedestrian or vehicle gate with a passage counter."""

    held_open_threshold_s: int = 300
    kind: DeviceKind = field(default="gate", init=False)
    is_open: bool = field(default=False, init=False)
    open_left: int = field(default=0, init=False)
    open_for: int = field(default=0, init=False)
    passages: int = field(default=0, init=False)
    held: bool = field(default=False, init=False)

    def _tick(self) -> None:
        if self.is_open:
            self.open_for += 1
            self.open_left -= 1
            if not self.held and self.open_for >= self.held_open_threshold_s:
                self.held = True
                self._event("held_open", "start")
            if self.open_left <= 0:
                self.is_open = False
                if self.held:
                    self.held = False
                    self._event("held_open", "end", open_s=self.open_for)
            return
        if self._chance(1 / 25):
            self.is_open, self.open_for = True, 0
            self.passages += self.rng.randint(1, 3)
            self.open_left = self.rng.randint(3, 8)
            if self._chance(1 / 400):  # wedged open with a brick
                self.open_left = self.rng.randint(400, 900)
        elif self._chance(1 / 30_000):
            self.is_open, self.open_for = True, 0
            self.open_left = self.rng.randint(10, 60)
            self._event("forced_open", "instant")

    def _fields(self) -> dict[str, FieldValue]:
        return {
            "open": self.is_open,
            "locked": not self.is_open,
            "mode": "held_open" if self.held else "normal",
            "passages": self.passages,
        }


def make_simulator(dev: str, kind: DeviceKind, seed: int, *, floors: int = 18) -> DeviceSimulator:
    """The simulator for one device of ``kind``."""
    if kind == "elevator":
        return ElevatorSim(dev, seed, floors=floors)
    if kind == "fire_lane":
        return FireLaneSim(dev, seed)
    if kind == "gate":
        return GateSim(dev, seed)
    raise ValueError(f"no simulator for device kind {kind!r}")
