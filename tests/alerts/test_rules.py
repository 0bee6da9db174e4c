"""Every rule of DOMAIN.md's table on an explicit clock: what raises it, what ends it, and
the thresholds from settings (defaults, community and device overrides)."""

from __future__ import annotations

import datetime as dt

import pytest

from alerts.rules import RuleEngine, RuleSettings, SettingsTable, Signal, maintenance_signals
from collectors.wire import Event, Reading

T = 1_795_300_000_000
S = 1000
C = "meihuayuan"


def ev(dev: str, kind: str, event: str, state: str = "start", **data: object) -> Event:
    return Event(T, dev, kind, event, state, dict(data))  # type: ignore[arg-type]


def brief(signals: list[Signal]) -> list[tuple[str, str, bool]]:
    return [(s.rule, s.device, s.active) for s in signals]


def test_trapped_reported_or_inferred_raises_at_once_and_ends_with_the_car() -> None:
    engine = RuleEngine()
    raised = engine.observe(C, ev("el-1-1", "elevator", "trapped", inferred=True), T)
    assert brief(raised) == [("trapped", "el-1-1", True)]
    assert raised[0].severity == "critical"
    assert raised[0].detail["inferred"] is True
    ended = engine.observe(C, ev("el-1-1", "elevator", "trapped", "end"), T + 60 * S)
    assert brief(ended) == [("trapped", "el-1-1", False)]


def test_faults_raise_and_the_third_in_24_h_is_frequent() -> None:
    engine = RuleEngine()
    hour = 3600 * S
    first = engine.observe(C, ev("el-1-1", "elevator", "door_close_fault"), T)
    assert brief(first) == [("elevator_fault", "el-1-1", True)]
    assert engine.observe(C, ev("el-1-1", "elevator", "door_close_fault", "end"), T + S) == []
    engine.observe(C, ev("el-1-1", "elevator", "overspeed", "instant"), T + 10 * hour)
    # 25 h after the first, it has left the window: two in 24 h, not frequent.
    third = engine.observe(C, ev("el-1-1", "elevator", "safety_circuit_open"), T + 25 * hour)
    assert brief(third) == [("elevator_fault", "el-1-1", True)]
    fourth = engine.observe(C, ev("el-1-1", "elevator", "position_lost"), T + 26 * hour)
    assert brief(fourth) == [("elevator_fault", "el-1-1", True),
                             ("frequent_faults", "el-1-1", True)]  # fmt: skip
    assert fourth[1].detail == {"faults": 3, "window_h": 24}


def test_fire_lane_becomes_an_alert_at_five_minutes_and_ends_when_clear() -> None:
    engine = RuleEngine()
    engine.observe(C, ev("fl-1", "fire_lane", "obstruction", object="vehicle"), T)
    assert engine.tick(T + 299 * S) == []
    raised = engine.tick(T + 300 * S)
    assert brief(raised) == [("fire_lane_blocked", "fl-1", True)]
    assert raised[0].detail["object"] == "vehicle"
    assert raised[0].detail["since_t"] == T
    assert engine.tick(T + 400 * S) == []  # once
    ended = engine.observe(C, ev("fl-1", "fire_lane", "obstruction", "end"), T + 500 * S)
    assert brief(ended) == [("fire_lane_blocked", "fl-1", False)]


def test_a_lane_cleared_before_the_threshold_raises_nothing() -> None:
    engine = RuleEngine()
    engine.observe(C, ev("fl-1", "fire_lane", "obstruction"), T)
    assert engine.observe(C, ev("fl-1", "fire_lane", "obstruction", "end"), T + 100 * S) == []
    assert engine.tick(T + 500 * S) == []  # (at 700 s the silent lane would go offline)


def test_lane_readings_count_the_sensors_own_dwell() -> None:
    engine = RuleEngine()
    busy = Reading(T, "fl-2", "fire_lane", {"occupied": True, "dwell_s": 200, "object": "goods"})
    assert engine.observe(C, busy, T) == []
    assert brief(engine.tick(T + 100 * S)) == [("fire_lane_blocked", "fl-2", True)]
    free = Reading(T, "fl-2", "fire_lane", {"occupied": False})
    assert brief(engine.observe(C, free, T + 110 * S)) == [("fire_lane_blocked", "fl-2", False)]


def test_dwell_reported_after_the_edges_obstruction_moves_the_start_back() -> None:
    """Issue 14: heard first from the edge's obstruction event, then a reading saying the
    vehicle has stood 312 s: the wait counts from its arrival, not from when we heard."""
    engine = RuleEngine()
    engine.observe(C, ev("fl-1", "fire_lane", "obstruction", object="vehicle"), T)
    busy = Reading(T, "fl-1", "fire_lane", {"occupied": True, "dwell_s": 312, "object": "vehicle"})
    assert engine.observe(C, busy, T + S) == []
    raised = engine.tick(T + 2 * S)  # 313 s after it arrived: past the 300 s threshold
    assert brief(raised) == [("fire_lane_blocked", "fl-1", True)]
    assert raised[0].detail["since_t"] == T + S - 312 * S
    starts = [c for c in engine.take_conditions() if c.active]
    assert [c.due_t for c in starts][-1] == T + S - 12 * S  # the timer moved earlier


def test_gates_forced_held_open_and_fire_release() -> None:
    engine = RuleEngine()
    assert brief(engine.observe(C, ev("gt-north", "gate", "forced_open", "instant"), T)) == [
        ("gate_forced", "gt-north", True)
    ]
    engine.observe(C, ev("gt-south", "gate", "held_open"), T)
    assert engine.tick(T + 299 * S) == []
    assert brief(engine.tick(T + 300 * S)) == [("gate_held_open", "gt-south", True)]
    assert brief(engine.observe(C, ev("gt-south", "gate", "held_open", "end"), T + 400 * S)) == [
        ("gate_held_open", "gt-south", False)
    ]
    assert brief(engine.observe(C, ev("gt-north", "gate", "fire_release", by="edge"), T)) == [
        ("fire_release", "gt-north", True)
    ]


def test_ebike_in_and_out_of_the_car() -> None:
    engine = RuleEngine()
    assert brief(engine.observe(C, ev("el-2-1", "elevator", "ebike_detected"), T)) == [
        ("ebike_in_elevator", "el-2-1", True)
    ]
    out = engine.observe(C, ev("el-2-1", "elevator", "ebike_detected", "end"), T + S)
    assert brief(out) == [("ebike_in_elevator", "el-2-1", False)]


def test_silent_devices_go_offline_on_the_timer_and_come_back_with_a_reading() -> None:
    engine = RuleEngine()
    engine.watch(C, "el-3-1", "elevator", T)  # in the registry, never heard from
    engine.observe(C, Reading(T, "fl-1", "fire_lane", {"occupied": False}), T)
    assert engine.tick(T + 599 * S) == []
    assert sorted(brief(engine.tick(T + 600 * S))) == [
        ("device_offline", "el-3-1", True),
        ("device_offline", "fl-1", True),
    ]
    assert engine.tick(T + 700 * S) == []
    back = engine.observe(C, Reading(T, "fl-1", "fire_lane", {"occupied": False}), T + 800 * S)
    assert brief(back) == [("device_offline", "fl-1", False)]


def test_terminal_offline_events_raise_at_once_and_end() -> None:
    engine = RuleEngine()
    assert brief(engine.observe(C, ev("gt-north", "gate", "comm_lost"), T)) == [
        ("device_offline", "gt-north", True)
    ]
    assert brief(engine.observe(C, ev("gt-north", "gate", "comm_lost", "end"), T + S)) == [
        ("device_offline", "gt-north", False)
    ]


def test_a_lane_sensor_that_stops_answering_is_offline() -> None:
    """Issue 14: fire lanes have no offline event of their own; the gateway reports a
    silent one as sensor_fault {"reason": "no_response"}, which is the device offline. A
    sensor's own fault (another reason) is not."""
    engine = RuleEngine()
    silent = ev("fl-1", "fire_lane", "sensor_fault", reason="no_response")
    assert brief(engine.observe(C, silent, T)) == [("device_offline", "fl-1", True)]
    back = ev("fl-1", "fire_lane", "sensor_fault", "end", reason="no_response")
    assert brief(engine.observe(C, back, T + S)) == [("device_offline", "fl-1", False)]
    own = ev("fl-2", "fire_lane", "sensor_fault", code=3)
    assert ("device_offline", "fl-2", True) not in brief(engine.observe(C, own, T))


def test_gateway_offline_after_five_minutes_not_before() -> None:
    engine = RuleEngine()
    assert engine.gateway_status(C, "gw-1", False, T) == []
    assert engine.tick(T + 299 * S) == []
    assert engine.gateway_status(C, "gw-1", True, T + 299 * S) == []  # back in time: nothing
    engine.gateway_status(C, "gw-1", False, T + 400 * S)
    assert brief(engine.tick(T + 700 * S)) == [("gateway_offline", "gw-1", True)]
    assert brief(engine.gateway_status(C, "gw-1", True, T + 800 * S)) == [
        ("gateway_offline", "gw-1", False)
    ]


def test_thresholds_per_community_zone_and_device() -> None:
    table = SettingsTable(
        communities={C: {"fire_lane_alert_s": 120}},
        zones={(C, "north"): {"fire_lane_alert_s": 90}},
        devices={(C, "fl-2"): {"fire_lane_alert_s": 30}},
        zone_of=lambda _c, d: "north" if d == "fl-1" else None,
    )
    assert table.for_device("other", "fl-9").fire_lane_alert_s == 300  # DOMAIN.md default
    assert table.for_device(C, "fl-3").fire_lane_alert_s == 120
    assert table.for_device(C, "fl-1").fire_lane_alert_s == 90
    assert table.for_device(C, "fl-2").fire_lane_alert_s == 30
    engine = RuleEngine(table)
    for lane in ("fl-1", "fl-2", "fl-3"):
        engine.observe(C, ev(lane, "fire_lane", "obstruction"), T)
    assert brief(engine.tick(T + 30 * S)) == [("fire_lane_blocked", "fl-2", True)]
    assert brief(engine.tick(T + 90 * S)) == [("fire_lane_blocked", "fl-1", True)]
    assert brief(engine.tick(T + 120 * S)) == [("fire_lane_blocked", "fl-3", True)]


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ({"communities": {C: {"fire_lane_alert_s": 0}}}, f"communities.{C}.fire_lane_alert_s"),
        ({"devices": {(C, "el-1"): {"maintenance_days": 120}}}, "maintenance_days: must be 1..92"),
        ({"communities": {C: {"colour": 1}}}, "has no field 'colour'"),
    ],
)
def test_bad_thresholds_are_named(layers: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SettingsTable(**layers)  # type: ignore[arg-type]


def test_maintenance_and_inspection_dates() -> None:
    settings = RuleSettings()
    today = dt.date(2026, 11, 22)

    def active(last: dt.date | None, inspection: dt.date | None) -> list[str]:
        signals = maintenance_signals(C, "el-1-1", last_maintained=last,
                                      next_inspection=inspection, today=today,
                                      settings=settings, now=T)  # fmt: skip
        return [s.rule for s in signals if s.active]

    assert active(dt.date(2026, 11, 7), dt.date(2027, 3, 1)) == []  # 15 days: not yet
    assert active(dt.date(2026, 11, 6), None) == ["maintenance_overdue"]
    assert active(None, None) == []  # no history: nothing to judge
    assert maintenance_signals(C, "el-1-1", last_maintained=None, next_inspection=None,
                               today=today, settings=settings, now=T) == []  # fmt: skip
    assert active(dt.date(2026, 11, 20), dt.date(2026, 12, 22)) == ["inspection_due"]
    assert active(dt.date(2026, 11, 20), dt.date(2026, 11, 21)) == ["inspection_overdue"]
    pilot = RuleSettings(maintenance_days=60)  # an on-demand pilot (按需维保)
    late = maintenance_signals(C, "el-1-1", last_maintained=dt.date(2026, 10, 1),
                               next_inspection=None, today=today, settings=pilot,
                               now=T)  # fmt: skip
    assert [s.active for s in late] == [False]


def test_timed_conditions_are_offered_to_a_server_that_keeps_them() -> None:
    """A server keeps timed conditions in SQL (restarts, several workers): the engine says
    when each began, when it falls due, and when it ended."""
    engine = RuleEngine()
    engine.observe(C, ev("fl-1", "fire_lane", "obstruction", object="vehicle"), T)
    engine.observe(C, ev("fl-1", "fire_lane", "obstruction"), T + S)  # still the same one
    engine.observe(C, ev("gt-south", "gate", "held_open"), T)
    engine.gateway_status(C, "gw-1", False, T)
    begun = engine.take_conditions()
    assert [(c.rule, c.device, c.active, c.due_t - T) for c in begun] == [
        ("fire_lane_blocked", "fl-1", True, 300 * S),
        ("gate_held_open", "gt-south", True, 300 * S),
        ("gateway_offline", "gw-1", True, 300 * S),
    ]
    assert begun[0].detail == {"event": "obstruction", "device_t": T, "object": "vehicle"}
    assert engine.take_conditions() == []
    engine.observe(C, ev("fl-1", "fire_lane", "obstruction", "end"), T + 10 * S)
    engine.gateway_status(C, "gw-1", True, T + 10 * S)
    assert [(c.rule, c.active) for c in engine.take_conditions()] == [
        ("fire_lane_blocked", False),
        ("gateway_offline", False),
    ]


def test_a_clear_lane_reporting_clear_again_ends_nothing() -> None:
    """A heartbeat of a clear lane must not cost the server a transaction each time: only
    the first clear reading after a start (or after an occupation) ends the condition."""
    engine = RuleEngine()
    clear = Reading(T, "fl-1", "fire_lane", {"occupied": False})
    engine.observe(C, clear, T)
    assert [c.active for c in engine.take_conditions()] == [False]
    for i in range(5):
        engine.observe(C, clear, T + i * S)
    assert engine.take_conditions() == []
    engine.observe(C, Reading(T, "fl-1", "fire_lane", {"occupied": True}), T + 10 * S)
    engine.observe(C, clear, T + 20 * S)
    assert [c.active for c in engine.take_conditions()] == [True, False]
