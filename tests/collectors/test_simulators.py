"""Simulators: deterministic under a seed, and behaving like the devices they stand for."""

from __future__ import annotations

import itertools
from collections import Counter

from collectors.simulators import HEARTBEAT_MS, TICK_MS, make_simulator
from collectors.wire import Event, Item, Reading

T0 = 1_763_800_000_000


def run(dev: str, kind: str, seed: int, seconds: int, step_s: int = 1) -> list[Item]:
    sim = make_simulator(dev, kind, seed)  # type: ignore[arg-type]
    out: list[Item] = []
    for s in [*range(0, seconds, step_s), seconds]:
        out.extend(sim.step(T0 + s * 1000))
    return out


def test_same_seed_same_items_and_other_seed_other_items() -> None:
    for kind in ("elevator", "fire_lane", "gate"):
        a = run("d-1", kind, 5, 3600)
        assert a == run("d-1", kind, 5, 3600)
        assert a != run("d-1", kind, 6, 3600)


def test_stepping_in_bigger_jumps_gives_the_same_items() -> None:
    assert run("el-1", "elevator", 2, 900, step_s=1) == run("el-1", "elevator", 2, 900, step_s=7)


def test_elevator_travels_cycles_doors_and_carries_passengers() -> None:
    items = run("el-1", "elevator", 1, 3600)
    readings = [i for i in items if isinstance(i, Reading)]
    floors = {r.fields["floor"] for r in readings}
    doors = Counter(r.fields["door"] for r in readings)
    assert len(floors) > 5
    assert {"open", "opening", "closing", "closed"} <= set(doors)
    assert {True, False} <= {r.fields["occupied"] for r in readings}
    # Never moving with the doors open.
    assert not any(r.fields["running"] and r.fields["door"] != "closed" for r in readings)
    trips = [r.fields["trips"] for r in readings]
    assert trips == sorted(trips)
    assert trips[-1] > 50


def test_elevator_faults_and_trapped_passengers_start_and_end() -> None:
    events = [
        i
        for s in range(8)
        for i in run(f"el-{s}", "elevator", s, 3 * 86400)
        if isinstance(i, Event)
    ]
    names = Counter((e.event, e.state) for e in events)
    assert names[("trapped", "start")] >= 3
    assert names[("trapped", "start")] == names[("trapped", "end")]
    faults = {e.event for e in events} - {"trapped"}
    assert len(faults) >= 3
    for fault in faults:
        assert names[(fault, "start")] == names[(fault, "end")]
    trapped = [e for e in events if e.event == "trapped"]
    for start, end in zip(trapped[::2], trapped[1::2], strict=True):
        assert (start.state, end.state) == ("start", "end")
        assert 60_000 <= end.t - start.t <= 360_000  # released after 1-6 minutes


def test_fire_lane_vehicles_come_and_go_and_some_linger_past_the_threshold() -> None:
    items = run("fl-1", "fire_lane", 3, 86400)
    events = [i for i in items if isinstance(i, Event)]
    starts = [e for e in events if e.state == "start"]
    ends = [e for e in events if e.state == "end"]
    assert len(starts) > 20
    assert len(starts) - len(ends) in (0, 1)
    dwells = [e.data["dwell_s"] for e in ends]
    assert min(dwells) >= 60
    assert max(dwells) >= 600  # lingering far past the dwell threshold
    occupied = [i for i in items if isinstance(i, Reading) and i.fields["occupied"]]
    assert {"vehicle"} <= {r.fields["object"] for r in occupied}


def test_gate_counts_passages_and_is_sometimes_forced_or_held_open() -> None:
    items = [i for s in range(4) for i in run(f"gt-{s}", "gate", s, 86400)]
    events = Counter((i.event, i.state) for i in items if isinstance(i, Event))
    assert events[("forced_open", "instant")] >= 1
    assert events[("held_open", "start")] >= 1
    assert events[("held_open", "start")] - events[("held_open", "end")] in range(5)
    passages = [i.fields["passages"] for i in items[:5000] if isinstance(i, Reading)]
    assert passages[-1] > 100


def test_heartbeat_reports_even_when_nothing_changes() -> None:
    sim = make_simulator("fl-9", "fire_lane", 0)
    times = [
        i.t
        for s in range(0, 121)
        for i in sim.step(T0 + s * TICK_MS)
        if isinstance(i, Reading) and not i.fields["occupied"]
    ]
    assert times
    assert all(b - a <= HEARTBEAT_MS for a, b in itertools.pairwise(times))
