"""Compliance measures (issue 15): what the devices saw and how organisations responded,
for any set of days of any communities, as numbers with the records behind them.

Pure: the caller (server/compliance/store.py) loads alert timelines, maintenance and
inspection dates from SQL and passes plain facts; nothing here does I/O.

A **window** is a span of one community's days: the whole period for a community's
measures, or the days a company held the contract (so a company that took over mid-quarter
answers only for its days). An alert belongs to the window its opening falls in; durations
(blocked minutes, downtime, offline time) are clipped to the window.

Each measure is a :class:`Measure`: its value (None when there is nothing to measure: a
share of zero alerts), how many records it was computed from, and the evidence, the alert
ids (``a:<id>``) or devices (``d:<community>/<dev>``) behind it. Definitions are in
docs/compliance.md; the names below are the keys city tables score.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "MEASURES",
    "RESPONSE_DEADLINE_S",
    "AlertFacts",
    "CommunityFacts",
    "Measure",
    "RescueFacts",
    "Window",
    "alerts_by_rule",
    "compute",
    "percentile",
]

#: Response (someone acknowledged, or went on site) within this many seconds is "in time"
#: (DOMAIN.md, Lifecycle: "Response within 3 min").
RESPONSE_DEADLINE_S: Final = 180
#: Rules whose alerts a person must respond to (date reminders and the fire-release report
#: are records, not calls to act).
RESPONSE_RULES: Final = frozenset({
    "trapped", "elevator_fault", "frequent_faults", "ebike_in_elevator", "fire_lane_blocked",
    "gate_forced", "gate_held_open", "device_offline", "gateway_offline"})  # fmt: skip
ELEVATOR_DOWN_RULES: Final = frozenset({"trapped", "elevator_fault"})
GATE_RULES: Final = frozenset({"gate_forced", "gate_held_open"})

#: Every measure: its key, unit and Chinese label (reports, city tables).
MEASURES: Final[dict[str, tuple[str, str]]] = {
    "alerts": ("count", "告警总数"),
    "alerts_critical": ("count", "紧急告警"),
    "alerts_major": ("count", "重要告警"),
    "alerts_minor": ("count", "一般告警"),
    "response_p50_s": ("s", "响应时间中位数(秒)"),
    "response_p90_s": ("s", "响应时间P90(秒)"),
    "response_in_time": ("share", "3分钟内响应率"),
    "trapped": ("count", "困人事件"),
    "arrival_p50_s": ("s", "到场时间中位数(秒)"),
    "arrival_p90_s": ("s", "到场时间P90(秒)"),
    "arrival_in_time": ("share", "按时到场率"),
    "arrival_not_recorded": ("count", "未记录到场"),
    "rescue_records_late": ("count", "救援记录补录超时"),
    "rescue_p50_s": ("s", "救援时长中位数(秒)"),
    "accidents": ("count", "事故记录"),
    "elevator_faults": ("count", "电梯故障"),
    "fire_lane_blocked": ("count", "消防通道占用告警"),
    "fire_lane_blocked_min": ("min", "消防通道占用分钟"),
    "fire_lane_escalated": ("count", "占用未清除移交消防"),
    "false_alarms": ("count", "误报"),
    "gate_incidents": ("count", "门禁异常"),
    "ebike_incidents": ("count", "电动车入梯"),
    "maintenance_adherence": ("share", "按期维保率"),
    "inspections_overdue": ("count", "超期未检电梯"),
    "elevator_availability": ("share", "电梯可用率"),
    "device_availability": ("share", "设备在线率"),
    "gateway_availability": ("share", "网关在线率"),
}


@dataclass(frozen=True, slots=True)
class RescueFacts:
    """The rescue record (救援记录) of a trapped-passenger alert, entered afterwards."""

    arrival_t: int
    released_by: str
    method: str
    entered_t: int
    late: bool
    released_t: int | None = None


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """One alert as the measures see it (from its row, timeline and recipients)."""

    id: int
    rule: str
    severity: str
    community: str
    device: str
    opened_t: int
    #: First step by a person: acknowledged, on site, resolved or false alarm (not system).
    responded_t: int | None = None
    on_site_t: int | None = None
    #: When it stopped running (resolved, false alarm or closed); None while running.
    ended_t: int | None = None
    false_alarm: bool = False
    #: Roles that escalation steps added (``fire_rescue``, ``street_office`` …).
    escalated_to: frozenset[str] = frozenset()
    accident: bool = False
    rescue: RescueFacts | None = None


@dataclass(frozen=True, slots=True)
class CommunityFacts:
    """A community's devices and dates: what date and availability measures read."""

    id: str
    arrival_deadline_min: int = 30
    maintenance_days: int = 15
    elevators: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()
    #: Maintenance days per elevator (any order).
    maintenance: Mapping[str, Sequence[dt.date]] = field(default_factory=dict)
    next_inspection: Mapping[str, dt.date] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Window:
    """Days ``[start, end)`` of one community, as epoch ms, and the same as local dates."""

    community: str
    start_t: int
    end_t: int
    first_day: dt.date
    last_day: dt.date  # inclusive


@dataclass(slots=True)
class Measure:
    value: float | int | None
    n: int = 0
    evidence: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {"value": self.value, "n": self.n, "evidence": self.evidence}


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` percentile (0..100) by linear interpolation between closest ranks (the
    method of numpy's default and of spreadsheets' PERCENTILE.INC); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _share(good: int, total: int) -> float | None:
    return round(good / total, 4) if total else None


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000, 1)


def _clip(start: int, end: int | None, window: Window, now_t: int) -> int:
    """Milliseconds of ``[start, end)`` (end None: still running) inside the window."""
    stop = min(window.end_t, now_t) if end is None else min(end, window.end_t)
    return max(0, stop - max(start, window.start_t))


def _union_ms(spans: Iterable[tuple[int, int]]) -> int:
    total, cur_s, cur_e = 0, None, None
    for s, e in sorted(spans):
        if cur_e is None or s > cur_e:
            if cur_e is not None and cur_s is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None and cur_s is not None:
        total += cur_e - cur_s
    return total


def _in(alert: AlertFacts, windows: Mapping[str, Sequence[Window]]) -> Window | None:
    for w in windows.get(alert.community, ()):
        if w.start_t <= alert.opened_t < w.end_t:
            return w
    return None


def _maintained_in_time(days: Sequence[dt.date], w: Window, limit: int, today: dt.date) -> bool:
    """Every stretch of the window's days went at most ``limit`` days without maintenance
    (the last visit before the window counts; the window's end is judged up to ``today``)."""
    end = min(w.last_day, today)
    if end < w.first_day:
        return True
    before = [d for d in days if d < w.first_day]
    inside = sorted(d for d in days if w.first_day <= d <= end)
    last = max(before) if before else None
    for d in inside:
        if last is None:
            # No record before the window: judged from the window's first day.
            if (d - w.first_day).days > limit:
                return False
        elif (d - last).days > limit:
            return False
        last = d
    if last is None:
        return False  # no maintenance on record at all: nothing shows it was maintained
    return (end - last).days <= limit


def alerts_by_rule(alerts: Iterable[AlertFacts], windows: Sequence[Window]) -> dict[str, int]:
    """How many alerts of each rule opened in ``windows`` (the measures' ``alerts``, split)."""
    by_community: dict[str, list[Window]] = {}
    for w in windows:
        by_community.setdefault(w.community, []).append(w)
    out: dict[str, int] = {}
    for a in alerts:
        if _in(a, by_community) is not None:
            out[a.rule] = out.get(a.rule, 0) + 1
    return dict(sorted(out.items()))


def compute(
    alerts: Iterable[AlertFacts],
    communities: Mapping[str, CommunityFacts],
    windows: Sequence[Window],
    *,
    today: dt.date,
    now_t: int,
) -> dict[str, Measure]:
    """Every measure of :data:`MEASURES` over ``windows`` (see the module docstring), as
    known at ``now_t`` (``today`` is its local date): the part of a window still to come
    counts for nothing."""
    all_alerts = list(alerts)
    by_community: dict[str, list[Window]] = {}
    for w in windows:
        by_community.setdefault(w.community, []).append(w)
    mine = [(a, at) for a in all_alerts if (at := _in(a, by_community)) is not None]
    mine.sort(key=lambda aw: (aw[0].opened_t, aw[0].id))
    out: dict[str, Measure] = {}

    def count(key: str, chosen: list[AlertFacts]) -> None:
        out[key] = Measure(len(chosen), len(chosen), [f"a:{a.id}" for a in chosen])

    every = [a for a, _ in mine]
    count("alerts", every)
    for sev in ("critical", "major", "minor"):
        count(f"alerts_{sev}", [a for a in every if a.severity == sev])

    # Response: the first person's step, for alerts that ask for one (false alarms too:
    # somebody had to look). An alert that ended with nobody responding is not in time.
    limit = RESPONSE_DEADLINE_S * 1000
    # An alert nobody has answered yet but whose deadline is still to come is not judged.
    asked = [a for a in every if a.rule in RESPONSE_RULES
             and not (a.responded_t is None and now_t - a.opened_t <= limit)]  # fmt: skip
    answered = [a for a in asked if a.responded_t is not None]
    times = [a.responded_t - a.opened_t for a in answered if a.responded_t is not None]
    late = [a for a in asked if a.responded_t is None or a.responded_t - a.opened_t > limit]
    refs = [f"a:{a.id}" for a in answered]
    out["response_p50_s"] = Measure(_seconds(percentile(times, 50)), len(times), refs)
    out["response_p90_s"] = Measure(_seconds(percentile(times, 90)), len(times), refs)
    out["response_in_time"] = Measure(
        _share(len(asked) - len(late), len(asked)), len(asked), [f"a:{a.id}" for a in late]
    )

    # Trapped passengers: arrival (on site in the timeline, or the rescue record's arrival),
    # within the community's deadline; an incident with neither is "arrival not recorded".
    trapped = [a for a in every if a.rule == "trapped"]
    count("trapped", trapped)
    arrivals: list[int] = []
    arrived_refs: list[str] = []
    missing: list[AlertFacts] = []
    slow: list[AlertFacts] = []
    pending: list[AlertFacts] = []
    for a in trapped:
        arrived = a.on_site_t if a.on_site_t is not None else (
            a.rescue.arrival_t if a.rescue is not None else None)  # fmt: skip
        deadline = communities[a.community].arrival_deadline_min * 60_000
        if arrived is None:
            # Not recorded yet: judged once the arrival deadline has passed.
            (pending if now_t - a.opened_t <= deadline else missing).append(a)
            continue
        arrivals.append(arrived - a.opened_t)
        arrived_refs.append(f"a:{a.id}")
        if arrived - a.opened_t > deadline:
            slow.append(a)
    judged = len(trapped) - len(pending)
    out["arrival_p50_s"] = Measure(_seconds(percentile(arrivals, 50)), len(arrivals), arrived_refs)
    out["arrival_p90_s"] = Measure(_seconds(percentile(arrivals, 90)), len(arrivals), arrived_refs)
    out["arrival_in_time"] = Measure(
        _share(judged - len(missing) - len(slow), judged), judged,
        [f"a:{a.id}" for a in (*missing, *slow)],
    )  # fmt: skip
    count("arrival_not_recorded", missing)
    count("rescue_records_late", [a for a in trapped if a.rescue is not None and a.rescue.late])
    # The rescue lasted until the passengers were released (the rescue record), else until
    # the alert ended (the condition's end confirmed after the flapping window).
    rescues: list[tuple[int, int]] = []
    for a in trapped:
        released = a.rescue.released_t if a.rescue is not None else None
        end = released if released is not None else a.ended_t
        if end is not None:
            rescues.append((end - a.opened_t, a.id))
    out["rescue_p50_s"] = Measure(_seconds(percentile([d for d, _ in rescues], 50)),
                                  len(rescues), [f"a:{i}" for _, i in rescues])  # fmt: skip
    count("accidents", [a for a in every if a.accident])
    count("elevator_faults", [a for a in every if a.rule == "elevator_fault"])

    lanes = [(a, w) for a, w in mine if a.rule == "fire_lane_blocked"]
    count("fire_lane_blocked", [a for a, _ in lanes])
    blocked = sum(_clip(a.opened_t, a.ended_t, w, now_t) for a, w in lanes)
    out["fire_lane_blocked_min"] = Measure(
        round(blocked / 60_000, 1), len(lanes), [f"a:{a.id}" for a, _ in lanes]
    )
    count("fire_lane_escalated", [a for a, _ in lanes if "fire_rescue" in a.escalated_to])
    count("false_alarms", [a for a in every if a.false_alarm])
    count("gate_incidents", [a for a in every if a.rule in GATE_RULES])
    count("ebike_incidents", [a for a in every if a.rule == "ebike_in_elevator"])

    # Maintenance and inspections: per elevator of each window's community.
    judged, behind, overdue = 0, [], []
    for w in windows:
        c = communities[w.community]
        for el in c.elevators:
            judged += 1
            if not _maintained_in_time(c.maintenance.get(el, ()), w, c.maintenance_days, today):
                behind.append(f"d:{c.id}/{el}")
            nxt = c.next_inspection.get(el)
            if nxt is not None and nxt <= min(w.last_day, today):
                overdue.append(f"d:{c.id}/{el}")
    out["maintenance_adherence"] = Measure(_share(judged - len(behind), judged), judged, behind)
    out["inspections_overdue"] = Measure(len(overdue), judged, overdue)

    # Availability: the share of device-time not covered by the alerts that say it was
    # down (overlapping alerts of one device count once).
    by_device: dict[tuple[str, str], list[AlertFacts]] = {}
    for a in all_alerts:
        by_device.setdefault((a.community, a.device), []).append(a)

    def availability(key: str, rules: frozenset[str], things: Mapping[str, Sequence[str]]) -> None:
        total = down = 0
        evidence: set[str] = set()
        for w in windows:
            stop = min(w.end_t, now_t)
            if stop <= w.start_t:
                continue
            for thing in things[w.community]:
                total += stop - w.start_t
                hits = [a for a in by_device.get((w.community, thing), ())
                        if a.rule in rules and a.opened_t < stop
                        and (a.ended_t or stop) > w.start_t]  # fmt: skip
                down += _union_ms(
                    (max(a.opened_t, w.start_t), min(a.ended_t or stop, stop)) for a in hits
                )
                evidence.update(f"a:{a.id}" for a in hits)
        out[key] = Measure(_share(total - down, total), len(evidence), sorted(evidence))

    availability("elevator_availability", ELEVATOR_DOWN_RULES,
                 {k: c.elevators for k, c in communities.items()})  # fmt: skip
    availability("device_availability", frozenset({"device_offline"}),
                 {k: c.devices for k, c in communities.items()})  # fmt: skip
    availability("gateway_availability", frozenset({"gateway_offline"}),
                 {k: c.gateways for k, c in communities.items()})  # fmt: skip
    assert set(out) == set(MEASURES), set(out) ^ set(MEASURES)
    return out
