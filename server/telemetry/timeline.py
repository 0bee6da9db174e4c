"""Time-weighted figures from state changes (sans-I/O): availability, occupancy, uptime.

Stores answer with *changes* — (time, key, value) — and the state in force when the period
began; this module replays them over ``[start, end)`` and adds up how long each category
held, per local day. It never sees a store, so the embedded SQLite store and InfluxDB give
the same figures from the same data, and the arithmetic is tested on its own.

Days are local days at a fixed UTC offset: the zone's offset at the start of the range
(China keeps one offset all year; in zones with summer time a day that changes clocks is
counted on the offset the range began with).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from zoneinfo import ZoneInfo

__all__ = [
    "DAY_MS",
    "Change",
    "Segment",
    "day_offset_ms",
    "days",
    "nice_interval_ms",
    "per_day",
    "segments",
]

DAY_MS: Final = 86_400_000

#: Bucket widths a chart may use, smallest first (ms): whole seconds, minutes, hours, days.
NICE_INTERVALS_MS: Final = tuple(
    s * 1000
    for s in (
        1, 2, 5, 10, 15, 30,
        60, 120, 300, 600, 900, 1800,
        3600, 7200, 10800, 21600, 43200,
        86400, 172800, 604800, 2592000,
    )
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Change:
    """From ``t`` on, ``key`` has ``value`` (None: unknown)."""

    t: int
    key: str
    value: object


@dataclass(frozen=True, slots=True)
class Segment:
    """``[t0, t1)`` during which the state was ``state`` (a snapshot: do not mutate)."""

    t0: int
    t1: int
    state: Mapping[str, object]


def segments(
    initial: Mapping[str, object], changes: Iterable[Change], start: int, end: int
) -> Iterator[Segment]:
    """Replay ``changes`` (any order; equal times keep their given order) over ``initial``
    and yield the state's segments covering ``[start, end)`` exactly. Changes before
    ``start`` only set the state the period begins with; those at or after ``end`` are
    ignored."""
    state = dict(initial)
    t = start
    for change in sorted(changes, key=lambda c: c.t):
        if change.t >= end:
            break
        if change.t > t:
            yield Segment(t, change.t, dict(state))
            t = change.t
        state[change.key] = change.value
    if t < end:
        yield Segment(t, end, state)


def day_offset_ms(tz: str, at_ms: int) -> int:
    """The UTC offset of zone ``tz`` at ``at_ms``, in ms."""
    when = dt.datetime.fromtimestamp(at_ms / 1000, ZoneInfo(tz))
    offset = when.utcoffset()
    assert offset is not None
    return int(offset.total_seconds() * 1000)


def days(start: int, end: int, offset_ms: int) -> list[tuple[str, int, int]]:
    """The local days that ``[start, end)`` touches: ``(YYYY-MM-DD, day_start, day_end)``,
    clipped to the range."""
    out = []
    day0 = (start + offset_ms) // DAY_MS * DAY_MS - offset_ms
    while day0 < end:
        label = dt.datetime.fromtimestamp((day0 + offset_ms) / 1000, dt.UTC).date().isoformat()
        out.append((label, max(day0, start), min(day0 + DAY_MS, end)))
        day0 += DAY_MS
    return out


def per_day(
    segs: Iterable[Segment],
    day_list: Sequence[tuple[str, int, int]],
    classify: Callable[[Mapping[str, object]], str],
) -> dict[str, dict[str, int]]:
    """Milliseconds spent in each category (``classify(state)``) per day of ``day_list``."""
    out: dict[str, dict[str, int]] = {label: {} for label, _, _ in day_list}
    for seg in segs:
        category = classify(seg.state)
        for label, d0, d1 in day_list:
            overlap = min(seg.t1, d1) - max(seg.t0, d0)
            if overlap > 0:
                out[label][category] = out[label].get(category, 0) + overlap
    return out


def nice_interval_ms(start: int, end: int, max_points: int) -> int:
    """The smallest 'round' bucket width that splits ``[start, end)`` into at most
    ``max_points`` buckets (whole days beyond the table)."""
    need = -(-(end - start) // max_points)  # ceil
    for width in NICE_INTERVALS_MS:
        if width >= need:
            return width
    return -(-need // DAY_MS) * DAY_MS
