"""Alert rules: readings, events and gateway statuses in, :class:`Signal` out.

Pure decision logic (DESIGN.md, "Layout"): no I/O, no clock of its own; every method takes
``now`` (epoch ms, the server's clock) and the server drives it. A signal says that a rule's
condition holds for a device (``active``) or has ended (not ``active``); the lifecycle
(:mod:`alerts.lifecycle`) turns signals into one alert per (device, rule).

Rules that depend on absence or duration (a lane still blocked, a gate still held, a device
or gateway silent) are decided in :meth:`RuleEngine.tick`, not only when something arrives.
Their clocks start from what the server saw; the server keeps them across restarts.

Thresholds come per device from :class:`RuleSettings` (DOMAIN.md defaults; a community, zone
or device may override them, see :class:`SettingsTable`). Each rule below cites its source.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

import msgspec

from collectors.wire import ELEVATOR_CODED_FAULTS, Event, Item, Reading

__all__ = [
    "ELEVATOR_FAULTS",
    "RULES",
    "Condition",
    "RuleEngine",
    "RuleId",
    "RuleInfo",
    "RuleSettings",
    "SettingsTable",
    "Severity",
    "Signal",
    "maintenance_signals",
]

Severity = Literal["info", "minor", "major", "critical"]
RuleId = Literal[
    "trapped",
    "elevator_fault",
    "frequent_faults",
    "maintenance_overdue",
    "inspection_due",
    "inspection_overdue",
    "ebike_in_elevator",
    "fire_lane_blocked",
    "gate_forced",
    "gate_held_open",
    "fire_release",
    "device_offline",
    "gateway_offline",
]


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """What the lifecycle needs to know of a rule."""

    severity: Severity
    #: Resolved by itself when the condition ends (the car moves, the lane clears); rules
    #: without it stay open until a person resolves them (an elevator fault needs a note
    #: that the car was inspected before reuse: 特种设备安全法 Art.42).
    auto_resolve: bool
    #: Special equipment (特种设备): market supervision receives it.
    special_equipment: bool = False


RULES: Final[dict[str, RuleInfo]] = {
    "trapped": RuleInfo("critical", auto_resolve=True, special_equipment=True),
    "elevator_fault": RuleInfo("major", auto_resolve=False, special_equipment=True),
    "frequent_faults": RuleInfo("major", auto_resolve=False, special_equipment=True),
    "maintenance_overdue": RuleInfo("minor", auto_resolve=True, special_equipment=True),
    "inspection_due": RuleInfo("minor", auto_resolve=True, special_equipment=True),
    "inspection_overdue": RuleInfo("major", auto_resolve=True, special_equipment=True),
    "ebike_in_elevator": RuleInfo("minor", auto_resolve=True, special_equipment=True),
    "fire_lane_blocked": RuleInfo("major", auto_resolve=True),
    "gate_forced": RuleInfo("major", auto_resolve=False),
    "gate_held_open": RuleInfo("minor", auto_resolve=True),
    "fire_release": RuleInfo("info", auto_resolve=True),
    "device_offline": RuleInfo("minor", auto_resolve=True),
    "gateway_offline": RuleInfo("major", auto_resolve=True),
}
assert set(RULES) == set(get_args(RuleId))

#: Elevator fault events (GB/T 24476 codes 01-10, and the extended ones platforms report).
ELEVATOR_FAULTS: Final = ELEVATOR_CODED_FAULTS | {
    "door_open_while_running",
    "overspeed",
    "repeated_door_cycles",
    "power_failure",
}


class RuleSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Thresholds of the rules, DOMAIN.md's defaults. Escalation timings are in the ladders
    (:mod:`alerts.ladders`), not here."""

    #: Faults on one elevator within the window that make it "frequent" (platform practice,
    #: 疑似故障停梯; *configurable default*).
    frequent_faults: int = 3
    frequent_faults_window_h: float = 24
    #: A lane occupied this long becomes an alert (消防法 Art.28; the on-site voice warning
    #: at 60 s is the gateway's, docs/gateway.md).
    fire_lane_alert_s: float = 300
    #: A gate held open longer than this (GB 50396-2007 alarm types; *configurable default*).
    gate_held_open_s: float = 300
    #: No reading from a device for this long: offline. 0: its silence is no fault (a
    #: detector that only speaks on detections, e.g. an e-bike camera): never offline.
    device_offline_s: float = 600
    #: A gateway whose Last Will arrived and that is not back within this: offline.
    gateway_offline_s: float = 300
    #: Days without a maintenance record before it is overdue (特种设备安全监察条例 Art.31;
    #: TSG T5002-2017 half-monthly maintenance). An on-demand pilot (按需维保) sets up to 92.
    maintenance_days: int = 15
    #: Days before the next inspection date that the reminder starts (特种设备安全法 Art.40).
    inspection_reminder_days: int = 30
    #: A condition that ends and comes back within this many seconds stays one alert
    #: (flapping suppression): the alert is resolved only after the end has held this long.
    flap_s: float = 60

    def check(self) -> list[str]:
        """What is out of range, each as ``name: reason``."""
        problems = [
            f"{name}: must be > 0"
            for name in self.__struct_fields__
            if name not in _ZERO_ALLOWED and getattr(self, name) <= 0
        ]
        problems += [f"{name}: must be >= 0" for name in _ZERO_ALLOWED if getattr(self, name) < 0]
        if not 1 <= self.maintenance_days <= 92:
            problems.append("maintenance_days: must be 1..92 (at most 3 months, 按需维保)")
        return problems


#: Settings where 0 means something: no flapping window; a device whose silence is no fault
#: (a detector that only speaks on detections: ``device_offline_s: 0``, never offline).
_ZERO_ALLOWED: Final = ("flap_s", "device_offline_s")


class SettingsTable:
    """Settings per device: DOMAIN.md's defaults, overridden per community, then per zone
    (a building or a group of devices), then per device."""

    def __init__(
        self,
        base: RuleSettings | None = None,
        *,
        communities: Mapping[str, Mapping[str, Any]] | None = None,
        zones: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
        devices: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
        zone_of: Callable[[str, str], str | None] | None = None,
    ) -> None:
        self.base = base or RuleSettings()
        self._communities = dict(communities or {})
        self._zones = dict(zones or {})
        self._devices = dict(devices or {})
        self._zone_of = zone_of or (lambda _c, _d: None)
        self._cache: dict[tuple[str, str], RuleSettings] = {}
        problems = self.base.check()
        for key, layer in [
            *((f"communities.{c}", v) for c, v in self._communities.items()),
            *((f"zones.{c}/{z}", v) for (c, z), v in self._zones.items()),
            *((f"devices.{c}/{d}", v) for (c, d), v in self._devices.items()),
        ]:
            try:
                merged = msgspec.structs.replace(self.base, **layer)
            except TypeError as exc:
                problems.append(f"{key}: {exc}")
                continue
            problems += [f"{key}.{p}" for p in merged.check()]
        if problems:
            raise ValueError("; ".join(problems))

    def for_device(self, community: str, device: str) -> RuleSettings:
        """The settings that apply to one device."""
        key = (community, device)
        found = self._cache.get(key)
        if found is None:
            layers: dict[str, Any] = dict(self._communities.get(community, {}))
            zone = self._zone_of(community, device)
            if zone is not None:
                layers.update(self._zones.get((community, zone), {}))
            layers.update(self._devices.get(key, {}))
            found = self._cache[key] = msgspec.structs.replace(self.base, **layers)
        return found


@dataclass(frozen=True, slots=True)
class Signal:
    """A rule's condition holds (``active``) or has ended, for one device, at ``t``."""

    rule: RuleId
    community: str
    device: str
    t: int
    active: bool
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> Severity:
        return RULES[self.rule].severity


@dataclass(frozen=True, slots=True)
class Condition:
    """A timed rule's condition began (``active``: it becomes an alert at ``due_t`` unless
    it ends first) or ended. The engine decides these on its own clock in :meth:`RuleEngine.
    tick`; a server that keeps them in SQL instead (to survive restarts and share them
    between workers) takes them from :meth:`RuleEngine.take_conditions`."""

    rule: RuleId
    community: str
    device: str
    active: bool
    since_t: int = 0
    due_t: int = 0
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Since:
    """A condition that started at ``t`` and becomes an alert at ``due_t``."""

    t: int
    detail: dict[str, Any]
    due_t: int = 0
    raised: bool = False


@dataclass(slots=True)
class _DeviceState:
    kind: str
    last_seen: int
    offline: bool = False  # the device_offline signal is active
    faults: deque[int] = field(default_factory=deque)


_MS: Final = 1000


class RuleEngine:
    """Every rule for the devices of many communities (see the module docstring)."""

    def __init__(self, settings: SettingsTable | None = None) -> None:
        self.settings = settings or SettingsTable()
        self._devices: dict[tuple[str, str], _DeviceState] = {}
        self._lanes: dict[tuple[str, str], _Since] = {}
        self._held: dict[tuple[str, str], _Since] = {}
        self._gateways_down: dict[tuple[str, str], _Since] = {}
        self._conditions: list[Condition] = []
        # Lanes known clear since their last end: a clear reading of one of them ends
        # nothing. Unknown after a start, so the first clear reading ends a lane that a
        # server before a restart may have been timing.
        self._clear: set[tuple[str, str]] = set()

    def take_conditions(self) -> list[Condition]:
        """The timed conditions begun or ended since the last call."""
        taken, self._conditions = self._conditions, []
        return taken

    def _begin(self, rule: RuleId, key: tuple[str, str], since: _Since, limit_s: float) -> None:
        since.due_t = since.t + int(limit_s * _MS)
        self._conditions.append(
            Condition(rule, key[0], key[1], True, since.t, since.due_t, dict(since.detail))
        )

    def _end(self, rule: RuleId, key: tuple[str, str]) -> None:
        self._conditions.append(Condition(rule, key[0], key[1], False))

    # --- what the server knows at start ------------------------------------------------

    def watch(self, community: str, device: str, kind: str, now: int) -> None:
        """Expect readings from ``device`` from ``now`` on (the registry's devices at start),
        so that one that never reports goes offline too."""
        self._devices.setdefault((community, device), _DeviceState(kind, now))

    def forget(self, community: str, device: str) -> None:
        """Stop timing ``device``'s conditions (a lane occupied, a gate held open) without
        ending anything: its gateway went offline, so nobody watches it any more and its
        last reading must not become an alert. Running alerts are not touched."""
        key = (community, device)
        self._lanes.pop(key, None)
        self._held.pop(key, None)
        self._clear.discard(key)

    # --- arrivals ------------------------------------------------------------------------

    def observe(self, community: str, item: Item, now: int) -> list[Signal]:
        """The signals one reading or event gives at once."""
        key = (community, item.dev)
        out: list[Signal] = []
        state = self._devices.get(key)
        if state is None:
            state = self._devices[key] = _DeviceState(item.kind, now)
        state.last_seen = max(state.last_seen, now)
        if state.offline and not (isinstance(item, Event) and _is_offline_event(item)):
            state.offline = False
            out.append(Signal("device_offline", community, item.dev, now, active=False))
        if isinstance(item, Event):
            out += self._event(community, item, state, now)
        else:
            out += self._reading(community, item, now)
        return out

    def _event(self, community: str, ev: Event, state: _DeviceState, now: int) -> list[Signal]:
        key = (community, ev.dev)
        starts = ev.state in ("start", "instant")
        detail: dict[str, Any] = {"event": ev.event, "device_t": ev.t, **ev.data}

        def signal(rule: RuleId, active: bool = True) -> list[Signal]:
            return [Signal(rule, community, ev.dev, now, active, detail)]

        name = ev.event
        if ev.kind == "elevator":
            if name == "trapped":
                # 特种设备安全法 Art.45, 70; TSG T5002-2017: reported by the terminal, or
                # inferred by the gateway's edge rule ({"inferred": true}).
                return signal("trapped", starts)
            if name in ELEVATOR_FAULTS and starts:
                # 特种设备安全法 Art.42: every fault, open until resolved with a note.
                return signal("elevator_fault") + self._count_fault(community, ev, state, now)
            if name == "ebike_detected":
                # 高层民用建筑消防安全管理规定 Art.37.
                return signal("ebike_in_elevator", starts)
        if ev.kind == "fire_lane" and name == "obstruction":
            return self._lane(community, ev.dev, starts, now, detail)
        if ev.kind == "gate":
            if name == "forced_open" and starts:
                return signal("gate_forced")  # GB 50396-2007 alarm types
            if name == "held_open":
                if starts:
                    if key not in self._held:
                        begun = self._held[key] = _Since(now, detail)
                        limit = self.settings.for_device(community, ev.dev).gate_held_open_s
                        self._begin("gate_held_open", key, begun, limit)
                    return []
                self._end("gate_held_open", key)
                held = self._held.pop(key, None)
                return signal("gate_held_open", False) if held and held.raised else []
            if name == "fire_release":
                # GB 55024-2022 5.3.6: the gateway released the gates; report it.
                return signal("fire_release", starts)
        if _is_offline_event(ev):
            if starts and not state.offline:
                state.offline = True
                return signal("device_offline")
            if not starts and state.offline:
                state.offline = False
                return signal("device_offline", False)
        return []

    def _count_fault(
        self, community: str, ev: Event, state: _DeviceState, now: int
    ) -> list[Signal]:
        """Platform practice (疑似故障停梯): N faults on one car within the window."""
        settings = self.settings.for_device(community, ev.dev)
        window = int(settings.frequent_faults_window_h * 3600 * _MS)
        faults = state.faults
        faults.append(now)
        while faults and faults[0] <= now - window:
            faults.popleft()
        if len(faults) < settings.frequent_faults:
            return []
        detail = {"faults": len(faults), "window_h": settings.frequent_faults_window_h}
        return [Signal("frequent_faults", community, ev.dev, now, True, detail)]

    def _lane(
        self, community: str, dev: str, occupied: bool, now: int, detail: dict[str, Any]
    ) -> list[Signal]:
        key = (community, dev)
        if occupied:
            lane = self._lanes.get(key)
            if lane is None:
                self._start_lane(key, _Since(now, detail))
            else:
                lane.detail.update(detail)
            return []
        if key in self._clear:
            return []  # still clear: nothing ended (a lane reports every heartbeat)
        self._clear.add(key)
        self._end("fire_lane_blocked", key)
        lane = self._lanes.pop(key, None)
        if lane is not None and lane.raised:
            return [Signal("fire_lane_blocked", community, dev, now, False, lane.detail)]
        return []

    def _start_lane(self, key: tuple[str, str], lane: _Since) -> None:
        self._clear.discard(key)
        self._lanes[key] = lane
        limit = self.settings.for_device(*key).fire_lane_alert_s
        self._begin("fire_lane_blocked", key, lane, limit)

    def _reading(self, community: str, reading: Reading, now: int) -> list[Signal]:
        fields = reading.fields
        if reading.kind == "fire_lane" and "occupied" in fields:
            occupied = bool(fields["occupied"])
            detail: dict[str, Any] = {k: fields[k] for k in ("object", "evidence") if k in fields}
            key = (community, reading.dev)
            # The sensor counts its own dwell: the occupation began that long ago.
            dwell = fields.get("dwell_s")
            started = now - int(float(dwell) * _MS) if isinstance(dwell, int | float) else now
            lane = self._lanes.get(key)
            if occupied and lane is None:
                self._start_lane(key, _Since(started, detail))
                return []
            if occupied and lane is not None and not lane.raised and started < lane.t:
                # Heard first from an event (the edge's obstruction), the dwell now says the
                # vehicle stood longer: the wait counts from when it really arrived.
                lane.t = started
                lane.detail.update(detail)
                self._begin("fire_lane_blocked", key, lane,
                            self.settings.for_device(*key).fire_lane_alert_s)  # fmt: skip
                return []
            return self._lane(community, reading.dev, occupied, now, detail)
        return []

    def gateway_status(self, community: str, gateway: str, online: bool, now: int) -> list[Signal]:
        """A gateway's retained status: ``offline`` is its Last Will."""
        key = (community, gateway)
        if not online:
            if key not in self._gateways_down:
                went = self._gateways_down[key] = _Since(now, {})
                limit = self.settings.for_device(community, gateway).gateway_offline_s
                self._begin("gateway_offline", key, went, limit)
            return []
        self._end("gateway_offline", key)
        down = self._gateways_down.pop(key, None)
        if down is not None and down.raised:
            return [Signal("gateway_offline", community, gateway, now, False)]
        return []

    # --- time ----------------------------------------------------------------------------

    def tick(self, now: int) -> list[Signal]:
        """The signals that time alone gives: durations reached, silences too long."""
        return self.tick_conditions(now) + self.tick_silence(now)

    def tick_conditions(self, now: int) -> list[Signal]:
        """Timed conditions that reached their duration (see :class:`Condition`): a lane
        still occupied after the warnings, so the company must act (消防法 Art.28, 60); a
        gate held open; a gateway not back after its Last Will."""
        out: list[Signal] = []
        timed: tuple[tuple[RuleId, dict[tuple[str, str], _Since]], ...] = (
            ("fire_lane_blocked", self._lanes),
            ("gate_held_open", self._held),
            ("gateway_offline", self._gateways_down),
        )
        for rule, conditions in timed:
            for (community, dev), since in conditions.items():
                if not since.raised and now >= since.due_t:
                    since.raised = True
                    detail = {**since.detail, "since_t": since.t}
                    out.append(Signal(rule, community, dev, now, True, detail))
        return out

    def tick_silence(self, now: int) -> list[Signal]:
        """Devices silent for longer than ``device_offline_s``."""
        out: list[Signal] = []
        for (community, dev), state in self._devices.items():
            limit = self.settings.for_device(community, dev).device_offline_s
            if limit > 0 and not state.offline and now - state.last_seen >= limit * _MS:
                state.offline = True
                detail = {"last_seen_t": state.last_seen}
                out.append(Signal("device_offline", community, dev, now, True, detail))
        return out


_OFFLINE_EVENTS: Final = frozenset({"terminal_offline", "comm_lost"})


def _is_offline_event(ev: Event) -> bool:
    """The gateway's word that a device stopped answering: the kind's offline event, or for
    fire lanes (which have none) ``sensor_fault`` with ``{"reason": "no_response"}``."""
    if ev.event in _OFFLINE_EVENTS:
        return True
    return ev.event == "sensor_fault" and ev.data.get("reason") == "no_response"


def maintenance_signals(
    community: str,
    device: str,
    *,
    last_maintained: dt.date | None,
    next_inspection: dt.date | None,
    today: dt.date,
    settings: RuleSettings,
    now: int,
) -> list[Signal]:
    """The date rules of one elevator, evaluated once a day: maintenance overdue (特种设备
    安全监察条例 Art.31; TSG T5002-2017) and inspection due or past due (特种设备安全法
    Art.40: past the date the elevator must not be used). A rule not active is signalled
    ended, so an alert raised earlier resolves once a record arrives. Without any
    maintenance record or inspection date there is nothing to judge: no signal (an elevator
    newly registered is not overdue for want of history)."""
    out: list[Signal] = []
    if last_maintained is not None:
        days = (today - last_maintained).days
        detail: dict[str, Any] = {"last_maintained": last_maintained.isoformat(), "days": days}
        overdue = days > settings.maintenance_days
        out.append(Signal("maintenance_overdue", community, device, now, overdue, detail))
    if next_inspection is not None:
        left = (next_inspection - today).days
        detail = {"next_inspection": next_inspection.isoformat(), "days_left": left}
        past = left < 0
        due = 0 <= left <= settings.inspection_reminder_days
        out.append(Signal("inspection_due", community, device, now, due, detail))
        out.append(Signal("inspection_overdue", community, device, now, past, detail))
    return out
