"""What a collector remembers about each device, to turn samples into wire items.

Sans-I/O; time is passed in (epoch ms). A :class:`DeviceTracker` receives what each poll or
frame said (a :class:`~collectors.points.Sample`) and produces the items to send:

* a **reading** when a field changed, or when ``heartbeat_ms`` passed since the last one (so
  that a silent line and a quiet device can be told apart upstream);
* **start/end events** on the edges of conditions (a status bit, a fault code): the first
  sample after start-up reports a condition that is already on, never one that is off;
* **instant events** as they come;
* the device's **offline** event (the kind's own name, :data:`OFFLINE_EVENT`) when it stops
  answering, and its end when it answers again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, Final

from collectors.points import Sample
from collectors.wire import DeviceKind, Event, Item, Reading

__all__ = ["OFFLINE_EVENT", "DeviceTracker"]

#: The event that says a device stopped answering, per kind (DOMAIN.md: ``terminal_offline``
#: for elevator terminals, ``comm_lost`` for gates; a fire-lane sensor that falls silent is a
#: ``sensor_fault`` with reason ``no_response``).
OFFLINE_EVENT: Final[dict[DeviceKind, tuple[str, dict[str, Any]]]] = {
    "elevator": ("terminal_offline", {}),
    "gate": ("comm_lost", {}),
    "fire_lane": ("sensor_fault", {"reason": "no_response"}),
    "fire_panel": ("comm_lost", {}),
}


class DeviceTracker:
    """One device's last reported state (see the module docstring)."""

    def __init__(
        self,
        dev: str,
        kind: DeviceKind,
        *,
        heartbeat_ms: int,
        offline_after: int = 1,
        deadbands: Mapping[str, float] | None = None,
    ):
        self.dev = dev
        self.kind = kind
        self.heartbeat_ms = heartbeat_ms
        self.offline_after = offline_after
        #: Number fields whose changes below this (from the last reported value) are noise.
        self.deadbands = dict(deadbands or {})
        self.fields: dict[str, bool | int | float | str] = {}
        self.reported: dict[str, bool | int | float | str] = {}
        self.active: dict[str, dict[str, Any]] = {}
        self.last_reading_t: int | None = None
        self.last_seen_t: int | None = None
        self.misses = 0
        self.offline = False
        self.counts: Counter[str] = Counter()

    def sample(self, t: int, sample: Sample) -> list[Item]:
        """The items one successful poll or frame produces."""
        items: list[Item] = []
        self.last_seen_t = t
        self.misses = 0
        self.counts["samples"] += 1
        if sample.problems:
            self.counts["value_problems"] += len(sample.problems)
        if self.offline:
            self.offline = False
            name, offline_data = OFFLINE_EVENT[self.kind]
            items.append(Event(t, self.dev, self.kind, name, "end", offline_data))
        if sample.fields:
            mode, was_mode = sample.fields.get("service_mode"), self.fields.get("service_mode")
            if self.kind == "elevator" and None not in (mode, was_mode) and mode != was_mode:
                # GB/T 24476 reports a service-mode change as an event (codes 40-47); the
                # server's availability figures are built from these, not from readings.
                items.append(
                    Event(t, self.dev, self.kind, "service_mode_changed", "instant",
                          {"from": was_mode, "to": mode})
                )  # fmt: skip
            changed = any(self._changed(k, v) for k, v in sample.fields.items())
            due = self.last_reading_t is None or t - self.last_reading_t >= self.heartbeat_ms
            self.fields.update(sample.fields)
            if changed or due:
                items.append(Reading(t, self.dev, self.kind, dict(sample.fields)))
                self.reported.update(sample.fields)
                self.last_reading_t = t
        for event, on in sample.active.items():
            was = self.active.get(event)
            if on is not None and was is None:
                self.active[event] = on
                items.append(Event(t, self.dev, self.kind, event, "start", on))
            elif on is None and was is not None:
                del self.active[event]
                end = sample.ended.get(event, was)  # the clearing message's own data, if any
                items.append(Event(t, self.dev, self.kind, event, "end", end))
            elif on is not None and was is not None:
                if "code" in on and "code" in was and on["code"] != was["code"]:
                    # Same event, another fault code: end the old occurrence and start the
                    # new one so each keeps its own code. Other data is only detail.
                    self.active[event] = on
                    items.append(Event(t, self.dev, self.kind, event, "end", was))
                    items.append(Event(t, self.dev, self.kind, event, "start", on))
                elif "code" in on and "code" not in was:
                    # A status bit started it and a fault code now names it: one event,
                    # whose end will carry the code.
                    self.active[event] = on
        for event, data in sample.instants:
            items.append(Event(t, self.dev, self.kind, event, "instant", data))
        return items

    def _changed(self, name: str, value: bool | int | float | str) -> bool:
        was = self.reported.get(name)
        band = self.deadbands.get(name)
        if (
            band is None
            or was is None
            or isinstance(value, bool | str)
            or isinstance(was, bool | str)
        ):
            return was != value
        return abs(value - was) >= band

    def answered(self, t: int) -> list[Item]:
        """The device answered without data (a Modbus exception response): it is there, so
        it is not offline (an offline event ends), but the poll is no success."""
        self.last_seen_t = t
        self.misses = 0
        if not self.offline:
            return []
        self.offline = False
        name, offline_data = OFFLINE_EVENT[self.kind]
        return [Event(t, self.dev, self.kind, name, "end", offline_data)]

    def miss(self, t: int) -> list[Item]:
        """A poll that got no usable answer; after ``offline_after`` in a row: offline."""
        self.misses += 1
        self.counts["misses"] += 1
        if self.offline or self.misses < self.offline_after:
            return []
        return self._go_offline(t)

    def silent_since(self, t: int, limit_ms: int, started_t: int) -> list[Item]:
        """For devices that push: offline when nothing arrived for ``limit_ms``."""
        last = self.last_seen_t if self.last_seen_t is not None else started_t
        if self.offline or t - last < limit_ms:
            return []
        return self._go_offline(t)

    def _go_offline(self, t: int) -> list[Item]:
        self.offline = True
        self.counts["offline"] += 1
        name, data = OFFLINE_EVENT[self.kind]
        return [Event(t, self.dev, self.kind, name, "start", data)]
