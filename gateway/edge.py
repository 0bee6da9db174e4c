"""Edge rules: the safety reflexes a gateway keeps on site, with or without its uplink.

Sans-I/O: items go in (:meth:`EdgeRules.observe`, with the gateway's time of arrival: durations
are measured on the gateway's clock, never across a device's clock and the gateway's), time
goes in (:meth:`EdgeRules.tick`), and
what comes out is a :class:`Decision`: items to queue like any other and :class:`Action`
requests for on-site outputs (a speaker, a gate relay) that the runtime carries out. The
runtime calls ``tick`` about once a second, so rules based on how long something lasted fire
even when the devices report only on change.

Rules (defaults in DOMAIN.md, "Rules and their defaults"; settings in the site config's
``edge`` section):

* **Fire lane dwell** (消防法 Art.28; 北京市消防条例 Art.24): a lane occupied for ``dwell_s``
  (60 s) plays the on-site voice warning, again every ``repeat_s`` (60 s) while it stays
  occupied, and only then is reported as a blockage (``obstruction`` start; its end when the
  lane clears). A sensor that reports ``obstruction`` itself (a camera box with its own dwell
  logic: its profile maps an ``obstruction`` event, or a simulated lane) keeps doing so; Linli
  then adds none of its own, not even before the sensor's first report.
* **Fire release** (GB 55024-2022 5.3.6; GB 50116-2013 4.10.3): a fire panel's ``fire_alarm``
  start unlocks every gate listed in ``fire_release.gates`` and reports ``fire_release`` start
  on each; when no panel is in alarm any more the gates are locked again and
  ``fire_release`` ends.
* **Trapped passengers, inferred** (TSG T5002 arrival times make minutes count; thresholds
  are the terminals' usual vendor defaults): a car standing still outside the door zone with
  someone inside for ``outside_door_zone_s`` (15 s), or at a landing with doors closed and
  someone inside for ``doors_closed_at_landing_s`` (90 s), is reported as ``trapped`` with
  ``{"inferred": true}``, unless the terminal itself already says trapped. Not in
  inspection or other special service modes (staff are in the car then).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from collectors.wire import DeviceKind, Event, Item, Reading

__all__ = [
    "Action",
    "Decision",
    "EdgeConfig",
    "EdgeRules",
    "FireLaneRule",
    "FireReleaseRule",
    "TrappedRule",
]

ActionKind = Literal["voice_warning", "unlock", "lock"]


class FireLaneRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Seconds of occupancy before the voice warning and the blockage report; repeat period.
    ``voice_warning: false`` where a lane has no speaker: blockages are still reported (with
    it on, the site check requires a ``voice_warning`` output for every lane)."""

    dwell_s: float = 60.0
    repeat_s: float = 60.0
    voice_warning: bool = True


class TrappedRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Seconds before a stopped, occupied car counts as trapping its passengers."""

    outside_door_zone_s: float = 15.0
    doors_closed_at_landing_s: float = 90.0


class FireReleaseRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The gates (device ids on this gateway) unlocked for evacuation on a fire alarm."""

    gates: list[str] = []


class EdgeConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The ``edge`` section of a site config."""

    fire_lane: FireLaneRule = FireLaneRule()
    trapped: TrappedRule = TrappedRule()
    fire_release: FireReleaseRule = FireReleaseRule()


@dataclass(frozen=True, slots=True)
class Action:
    """An on-site output to drive: play the warning on a lane, unlock or lock a gate."""

    kind: ActionKind
    device: str
    reason: str


@dataclass(slots=True)
class Decision:
    """What one observation or tick produced."""

    items: list[Item] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.items or self.actions)


@dataclass(slots=True)
class _Lane:
    since: int | None = None  # when the current occupancy began (device time, ms)
    warnings: int = 0
    last_warning: int | None = None
    reported: bool = False
    self_reporting: bool = False
    last: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Car:
    fields: dict[str, Any] = field(default_factory=dict)
    condition: str | None = None
    since: int = 0
    inferred: bool = False
    terminal_trapped: bool = False


_STILL_MODES = (None, "normal")


class EdgeRules:
    """The rule state of one gateway (see the module docstring)."""

    def __init__(
        self,
        config: EdgeConfig,
        kinds: Mapping[str, DeviceKind],
        self_reporting: Iterable[str] = (),
    ) -> None:
        self.config = config
        self.kinds = dict(kinds)
        #: Lanes whose sensor reports ``obstruction`` itself (SiteConfig.self_reporting_lanes).
        self.self_reporting = frozenset(self_reporting)
        self._lanes: dict[str, _Lane] = {}
        self._cars: dict[str, _Car] = {}
        self._alarms: set[str] = set()  # fire panels in alarm
        self.released = False

    def reconfigure(
        self,
        config: EdgeConfig,
        kinds: Mapping[str, DeviceKind],
        self_reporting: Iterable[str] = (),
    ) -> None:
        """New thresholds take effect at the next tick; what is being watched is kept."""
        self.config = config
        self.kinds = dict(kinds)
        self.self_reporting = frozenset(self_reporting)

    # --- observations --------------------------------------------------------------

    def observe(self, item: Item, now: int) -> Decision:
        """What one item from a collector, arriving at gateway time ``now``, changes."""
        if item.kind == "fire_lane":
            return self._lane_item(item, now)
        if item.kind == "elevator":
            return self._car_item(item, now)
        if item.kind == "fire_panel":
            return self._panel_item(item)
        return Decision()

    def _lane_item(self, item: Item, now: int) -> Decision:
        lane = self._lanes.setdefault(item.dev, _Lane())
        out = Decision()
        if isinstance(item, Event):
            if item.event == "obstruction":
                lane.self_reporting = True
            elif item.event == "sensor_fault" and item.state == "start":
                # The sensor cannot see the lane: what it said last no longer holds.
                self._lane_clear(item.dev, lane, item.t, now, out)
            return out
        occupied = item.fields.get("occupied")
        lane.last.update(item.fields)
        if occupied is True and lane.since is None:
            dwell = item.fields.get("dwell_s")
            lead = int(float(dwell) * 1000) if isinstance(dwell, int | float) else 0
            lane.since = now - max(0, lead)
        elif occupied is False:
            self._lane_clear(item.dev, lane, item.t, now, out)
        return out

    def _lane_clear(self, dev: str, lane: _Lane, t: int, now: int, out: Decision) -> None:
        if lane.reported and lane.since is not None:
            out.items.append(
                Event(t, dev, "fire_lane", "obstruction", "end",
                      {"dwell_s": round((now - lane.since) / 1000), "warnings": lane.warnings,
                       "by": "edge"})
            )  # fmt: skip
        lane.since = None
        lane.warnings = 0
        lane.last_warning = None
        lane.reported = False

    def _car_item(self, item: Item, now: int) -> Decision:
        car = self._cars.setdefault(item.dev, _Car())
        out = Decision()
        if isinstance(item, Event):
            if item.event == "trapped":
                car.terminal_trapped = item.state == "start"
                if car.terminal_trapped:
                    car.inferred = False  # the terminal's own report takes over
            elif item.event == "terminal_offline" and item.state == "start":
                car.fields.clear()  # nothing known about the car any more
                self._car_update(item.dev, car, item.t, now, out)
            return out
        car.fields.update(item.fields)
        self._car_update(item.dev, car, item.t, now, out)
        return out

    def _car_update(self, dev: str, car: _Car, t: int, now: int, out: Decision) -> None:
        f = car.fields
        condition = None
        still = f.get("running") is False and f.get("service_mode") in _STILL_MODES
        if still and f.get("occupied") is True:
            if f.get("door_zone") is False:
                condition = "stopped_outside_door_zone"
            elif f.get("door_zone") is True and f.get("door") == "closed":
                condition = "doors_closed_at_landing"
        if condition == car.condition:
            return
        if car.inferred:
            out.items.append(
                Event(t, dev, "elevator", "trapped", "end",
                      {"inferred": True, "reason": car.condition})
            )  # fmt: skip
            car.inferred = False
        car.condition = condition
        car.since = now

    def _panel_item(self, item: Item) -> Decision:
        alarm: bool | None = None
        if isinstance(item, Event) and item.event == "fire_alarm":
            alarm = item.state == "start"
        elif isinstance(item, Reading) and isinstance(item.fields.get("alarm"), bool):
            alarm = bool(item.fields["alarm"])
        out = Decision()
        if alarm is None:
            return out
        if alarm:
            self._alarms.add(item.dev)
        else:
            self._alarms.discard(item.dev)
        gates = self.config.fire_release.gates
        if self._alarms and not self.released:
            self.released = True
            for gate in gates:
                out.actions.append(Action("unlock", gate, f"fire_alarm on {item.dev}"))
        elif not self._alarms and self.released:
            self.released = False
            for gate in gates:
                out.actions.append(Action("lock", gate, f"fire_alarm on {item.dev} ended"))
        return out

    # --- time ----------------------------------------------------------------------

    def tick(self, now: int) -> Decision:
        """What the passing of time decides (call about once a second)."""
        out = Decision()
        lane_rule = self.config.fire_lane
        for dev, lane in self._lanes.items():
            if lane.since is None or now - lane.since < lane_rule.dwell_s * 1000:
                continue
            due = lane.last_warning is None or now - lane.last_warning >= lane_rule.repeat_s * 1000
            if lane_rule.voice_warning and due:
                lane.warnings += 1
                lane.last_warning = now
                out.actions.append(
                    Action("voice_warning", dev, f"occupied {round((now - lane.since) / 1000)} s")
                )
            if not lane.reported and not lane.self_reporting and dev not in self.self_reporting:
                lane.reported = True
                data: dict[str, Any] = {"dwell_s": round((now - lane.since) / 1000), "by": "edge"}
                for key in ("object", "evidence"):
                    if key in lane.last:
                        data[key] = lane.last[key]
                out.items.append(Event(now, dev, "fire_lane", "obstruction", "start", data))
        trapped = self.config.trapped
        limits = {
            "stopped_outside_door_zone": trapped.outside_door_zone_s,
            "doors_closed_at_landing": trapped.doors_closed_at_landing_s,
        }
        for dev, car in self._cars.items():
            if car.condition is None or car.inferred or car.terminal_trapped:
                continue
            if now - car.since >= limits[car.condition] * 1000:
                car.inferred = True
                data = {"inferred": True, "reason": car.condition, "since": car.since}
                if "floor" in car.fields:
                    data["floor"] = car.fields["floor"]
                out.items.append(Event(now, dev, "elevator", "trapped", "start", data))
        return out
