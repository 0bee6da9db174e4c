"""The queries the product needs, written once over a small read interface.

Each store (the embedded SQLite store, InfluxDB over InfluxQL) implements
:class:`TelemetryReader`: a few primitive queries that return raw points, events and
per-day extremes. The figures — elevator availability, trips per day, fire-lane occupied
minutes, gateway uptime — are computed here from what they return, by
:mod:`server.telemetry.timeline`, so both stores answer alike. Every primitive is cheap on
InfluxDB at scale because the figures are built from *events* (sparse: a condition's start
and end) and per-day extremes, never from every heartbeat reading:

* **Availability** of an elevator over ``[since, until)``: time *available* (service mode
  ``normal`` and no fault open) over time *known*. Unknown time — the terminal offline, or
  before its first report — is reported apart and left out of the ratio, so a dead terminal
  neither helps nor hurts a company's figure; ``observed`` says how much was known. The
  service mode comes from ``service_mode_changed`` events (GB/T 24476 codes 40-47), seeded
  by the last change before the period or, when the mode never changed, the first reading.
* **Trips per day**: the growth of the ``trips`` counter over the local day: this day's
  maximum less the previous day's (the counter restarted when it went down: then this
  day's maximum less its minimum).
* **Fire-lane occupied minutes**: the time ``occupied`` was true, per lane per day, from
  the readings (the sensors report on change), with ``sensor_fault`` time unknown.
* **Gateway uptime**: time online over time known, from the gateway's status changes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from collectors.points import field_type
from collectors.wire import ELEVATOR_CODED_FAULTS, EVENTS_BY_KIND, FIELDS_BY_KIND
from server.telemetry.timeline import (
    DAY_MS,
    Change,
    Segment,
    day_offset_ms,
    days,
    per_day,
    segments,
)

__all__ = [
    "GATEWAY_KIND",
    "GATEWAY_OFFLINE",
    "STOPPING_FAULTS",
    "EventRow",
    "TelemetryQueryError",
    "TelemetryReader",
    "bucket_rows",
    "elevator_availability",
    "fire_lane_occupancy",
    "gateway_uptime",
    "numeric_fields",
    "trips_per_day",
]

#: Events of the gateway itself are stored as ``kind=gateway`` with the gateway as device.
GATEWAY_KIND: Final = "gateway"
#: ``start`` when the gateway's status says offline, ``end`` when it says online.
GATEWAY_OFFLINE: Final = "gateway_offline"

#: Elevator events during which the car is not available to passengers: the GB/T 24476
#: faults 01-11 and a power failure. Door-cycle and e-bike events do not stop the car.
STOPPING_FAULTS: Final = ELEVATOR_CODED_FAULTS | {"trapped", "power_failure"}
assert EVENTS_BY_KIND["elevator"] >= STOPPING_FAULTS


class TelemetryQueryError(Exception):
    """A store could not answer a query; the message says which and why."""


@dataclass(frozen=True, slots=True)
class EventRow:
    """One stored event."""

    t: int
    dev: str
    event: str
    state: str
    data: dict[str, Any]


class TelemetryReader(Protocol):
    """The primitive queries a telemetry store answers (times in epoch ms, ``[since, until)``)."""

    async def items(
        self, community: str, dev: str, kind: str, *, since: int, until: int, limit: int
    ) -> list[dict[str, Any]]:
        """A device's raw readings and events, oldest first, at most ``limit``."""
        ...

    async def series(
        self, community: str, dev: str, kind: str, *, since: int, until: int, interval: int
    ) -> list[dict[str, Any]]:
        """A device's readings in buckets of ``interval`` ms aligned to ``since``: per bucket
        ``{"t", "fields": last value of each field, "min": {...}, "max": {...}}`` (min/max
        for numeric fields only); empty buckets are left out."""
        ...

    async def events(
        self,
        community: str,
        kind: str,
        names: Collection[str],
        *,
        since: int,
        until: int,
        dev: str | None = None,
    ) -> list[EventRow]:
        """Events of these names on devices of ``kind`` (or on ``dev`` only), oldest first."""
        ...

    async def last_events(
        self, community: str, kind: str, names: Collection[str], *, after: int, before: int
    ) -> list[EventRow]:
        """The latest event per (device, name, state) in ``[after, before)``."""
        ...

    async def field_points(
        self, community: str, kind: str, field: str, *, since: int, until: int
    ) -> list[tuple[int, str, Any]]:
        """Every stored value of one field: ``(t, dev, value)``, oldest first."""
        ...

    async def last_field(
        self, community: str, kind: str, field: str, *, after: int, before: int
    ) -> dict[str, tuple[int, Any]]:
        """Per device, the latest value of one field in ``[after, before)``."""
        ...

    async def first_field(
        self, community: str, kind: str, field: str, *, since: int, until: int
    ) -> dict[str, tuple[int, Any]]:
        """Per device, the earliest value of one field in ``[since, until)``."""
        ...

    async def daily_range(
        self, community: str, kind: str, field: str, *, since: int, until: int, offset_ms: int
    ) -> dict[tuple[str, int], tuple[float, float]]:
        """Per (device, local day start), the field's minimum and maximum; days start at
        midnight of the UTC offset ``offset_ms`` and ``since`` is a day start."""
        ...


def numeric_fields(kind: str) -> list[str]:
    """The fields of ``kind`` that charts get a min/max envelope for."""
    return [
        name
        for name in FIELDS_BY_KIND[kind].__struct_fields__
        if (ft := field_type(kind, name)) and ft[0] in ("int", "float")
    ]


def bucket_rows(
    rows: Iterable[tuple[int, Mapping[str, Any]]], *, since: int, interval: int, kind: str
) -> list[dict[str, Any]]:
    """Downsample ``(t, fields)`` rows (oldest first) into buckets as
    :meth:`TelemetryReader.series` describes: the reference for stores that cannot do it."""
    numeric = set(numeric_fields(kind))
    out: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for t, fields in rows:
        start = since + (t - since) // interval * interval
        if current is None or current["t"] != start:
            current = {"t": start, "fields": {}, "min": {}, "max": {}}
            out.append(current)
        for name, value in fields.items():
            current["fields"][name] = value
            if name in numeric and isinstance(value, int | float):
                lo, hi = current["min"].get(name), current["max"].get(name)
                current["min"][name] = value if lo is None else min(lo, value)
                current["max"][name] = value if hi is None else max(hi, value)
    return out


# --- the figures ------------------------------------------------------------------------


def _open_at(rows: Iterable[EventRow]) -> dict[tuple[str, str], EventRow | None]:
    """From the last start and last end per (dev, event) before a time: the start still
    open then (None when the latest was an end)."""
    latest: dict[tuple[str, str], EventRow] = {}
    for row in rows:
        if row.state not in ("start", "end"):
            continue
        key = (row.dev, row.event)
        # At one millisecond a start follows the end before it (a fault code changing).
        seen = latest.get(key)
        if seen is None or (row.t, row.state == "start") > (seen.t, seen.state == "start"):
            latest[key] = row
    return {k: (r if r.state == "start" else None) for k, r in latest.items()}


def _ordered(rows: Iterable[EventRow]) -> list[EventRow]:
    """Oldest first; at one millisecond an end before a start (see :func:`_open_at`)."""
    return sorted(rows, key=lambda r: (r.t, r.state == "start"))


def _ratio(good: int, known: int) -> float | None:
    return round(good / known, 6) if known else None


async def elevator_availability(
    reader: TelemetryReader,
    community: str,
    devices: Sequence[str],
    *,
    since: int,
    until: int,
    tz: str,
    lookback_ms: int,
) -> dict[str, Any]:
    """Availability of each elevator in ``devices`` over ``[since, until)``, total and per
    local day (see the module doc for the definition)."""
    names = {"service_mode_changed", "terminal_offline", *STOPPING_FAULTS}
    before = await reader.last_events(
        community, "elevator", names, after=since - lookback_ms, before=since
    )
    during = _ordered(await reader.events(community, "elevator", names, since=since, until=until))
    first_mode = await reader.first_field(
        community, "elevator", "service_mode", since=since, until=until
    )
    initial: dict[str, dict[str, object]] = {d: {} for d in devices}
    changes: dict[str, list[Change]] = defaultdict(list)
    mode_known: set[str] = set()
    for (dev, event), row in _open_at(before).items():
        if dev in initial and event != "service_mode_changed":
            initial[dev][event] = row is not None
    for row in sorted(before, key=lambda r: r.t):
        if row.event == "service_mode_changed" and row.dev in initial:
            initial[row.dev]["mode"] = row.data.get("to")
            mode_known.add(row.dev)
    for row in during:
        if row.dev not in initial:
            continue
        if row.event == "service_mode_changed":
            if row.dev not in mode_known:  # the mode before the first change is its 'from'
                initial[row.dev]["mode"] = row.data.get("from")
                mode_known.add(row.dev)
            changes[row.dev].append(Change(row.t, "mode", row.data.get("to")))
        elif row.state in ("start", "end"):
            changes[row.dev].append(Change(row.t, row.event, row.state == "start"))
    for dev, (t, mode) in first_mode.items():
        if dev in initial and dev not in mode_known:  # never changed: known from its report
            changes[dev].insert(0, Change(t, "mode", mode))

    def classify(state: Mapping[str, object]) -> str:
        if state.get("terminal_offline") or state.get("mode") is None:
            return "unknown"
        if state["mode"] != "normal" or any(state.get(f) for f in STOPPING_FAULTS):
            return "unavailable"
        return "available"

    day_list = days(since, until, day_offset_ms(tz, since))
    out: dict[str, Any] = {}
    for dev in devices:
        segs = list(segments(initial[dev], changes[dev], since, until))
        out[dev] = _summary(per_day(segs, day_list, classify), "available", until - since)
    return out


def _summary(by_day: Mapping[str, Mapping[str, int]], good: str, span: int) -> dict[str, Any]:
    """Totals, ratio and observed share from per-day milliseconds per category."""
    totals: dict[str, int] = defaultdict(int)
    day_out = {}
    for label, cats in by_day.items():
        for cat, ms in cats.items():
            totals[cat] += ms
        known = sum(ms for cat, ms in cats.items() if cat != "unknown")
        day_out[label] = {
            **{f"{cat}_s": ms / 1000 for cat, ms in sorted(cats.items())},
            "ratio": _ratio(cats.get(good, 0), known),
        }
    known = sum(ms for cat, ms in totals.items() if cat != "unknown")
    return {
        **{f"{cat}_s": ms / 1000 for cat, ms in sorted(totals.items())},
        "ratio": _ratio(totals.get(good, 0), known),
        "observed": _ratio(known, span),
        "days": day_out,
    }


async def trips_per_day(
    reader: TelemetryReader,
    community: str,
    devices: Sequence[str],
    *,
    since: int,
    until: int,
    tz: str,
) -> dict[str, dict[str, int | None]]:
    """Trips per elevator per local day (None: no counter reading that day)."""
    offset = day_offset_ms(tz, since)
    day_list = days(since, until, offset)
    first_day = day_list[0][1] if day_list else since
    day0 = (first_day + offset) // DAY_MS * DAY_MS - offset  # local midnight
    ranges = await reader.daily_range(
        community, "elevator", "trips", since=day0 - DAY_MS, until=until, offset_ms=offset
    )
    out: dict[str, dict[str, int | None]] = {}
    for dev in devices:
        per: dict[str, int | None] = {}
        prev = ranges.get((dev, day0 - DAY_MS))
        start = day0
        for label, _, _ in day_list:
            cur = ranges.get((dev, start))
            if cur is None:
                per[label] = None
            elif prev is not None and cur[1] >= prev[1]:
                per[label] = int(cur[1] - prev[1])
            else:  # no earlier day, or the counter restarted
                per[label] = int(cur[1] - cur[0])
            if cur is not None:
                prev = cur
            start += DAY_MS
        out[dev] = per
    return out


async def fire_lane_occupancy(
    reader: TelemetryReader,
    community: str,
    devices: Sequence[str],
    *,
    since: int,
    until: int,
    tz: str,
    lookback_ms: int,
) -> dict[str, Any]:
    """Minutes each lane was occupied per local day, and the share of known time."""
    # Sensors report at least every heartbeat (minutes), so the state at ``since`` is in
    # the last day: no need to scan the whole look-back of readings for it.
    seed = await reader.last_field(
        community, "fire_lane", "occupied", after=since - min(lookback_ms, DAY_MS), before=since
    )
    points = await reader.field_points(community, "fire_lane", "occupied", since=since, until=until)
    faults_before = await reader.last_events(
        community, "fire_lane", {"sensor_fault"}, after=since - lookback_ms, before=since
    )
    faults = _ordered(
        await reader.events(community, "fire_lane", {"sensor_fault"}, since=since, until=until)
    )
    initial: dict[str, dict[str, object]] = {d: {} for d in devices}
    changes: dict[str, list[Change]] = defaultdict(list)
    for dev, (_, value) in seed.items():
        if dev in initial:
            initial[dev]["occupied"] = bool(value)
    for (dev, _), row in _open_at(faults_before).items():
        if dev in initial:
            initial[dev]["fault"] = row is not None
    for t, dev, value in points:
        if dev in initial:
            changes[dev].append(Change(t, "occupied", bool(value)))
    for row in faults:
        if row.dev in initial and row.state in ("start", "end"):
            changes[row.dev].append(Change(row.t, "fault", row.state == "start"))

    def classify(state: Mapping[str, object]) -> str:
        if state.get("fault") or state.get("occupied") is None:
            return "unknown"
        return "occupied" if state["occupied"] else "free"

    day_list = days(since, until, day_offset_ms(tz, since))
    out: dict[str, Any] = {}
    for dev in devices:
        segs: list[Segment] = list(segments(initial[dev], changes[dev], since, until))
        summary = _summary(per_day(segs, day_list, classify), "occupied", until - since)
        summary["occupied_min"] = _minutes(summary.get("occupied_s", 0.0))
        for day in summary["days"].values():
            day["occupied_min"] = _minutes(day.get("occupied_s", 0.0))
        out[dev] = summary
    return out


def _minutes(seconds: float) -> float:
    return math.floor(seconds / 60 * 100) / 100


async def gateway_uptime(
    reader: TelemetryReader,
    community: str,
    gateways: Sequence[str],
    *,
    since: int,
    until: int,
    tz: str,
    lookback_ms: int,
) -> dict[str, Any]:
    """Share of known time each gateway was online, total and per local day."""
    names = {GATEWAY_OFFLINE}
    before = await reader.last_events(
        community, GATEWAY_KIND, names, after=since - lookback_ms, before=since
    )
    during = _ordered(await reader.events(community, GATEWAY_KIND, names, since=since, until=until))
    initial: dict[str, dict[str, object]] = {g: {} for g in gateways}
    for (gw, _), row in _open_at(before).items():
        if gw in initial:
            initial[gw]["offline"] = row is not None
    changes: dict[str, list[Change]] = defaultdict(list)
    for row in during:
        if row.dev in initial:
            changes[row.dev].append(Change(row.t, "offline", row.state == "start"))

    def classify(state: Mapping[str, object]) -> str:
        offline = state.get("offline")
        if offline is None:
            return "unknown"
        return "offline" if offline else "online"

    day_list = days(since, until, day_offset_ms(tz, since))
    return {
        gw: _summary(
            per_day(segments(initial[gw], changes[gw], since, until), day_list, classify),
            "online",
            until - since,
        )
        for gw in gateways
    }
