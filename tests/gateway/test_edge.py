"""Edge rules, sans-I/O: items and time in, events and on-site actions out."""

from __future__ import annotations

from collectors.wire import Event, Item, Reading
from gateway.edge import (
    Action,
    Decision,
    EdgeConfig,
    EdgeRules,
    FireLaneRule,
    FireReleaseRule,
    TrappedRule,
)

T = 1_795_300_000_000
KINDS = {
    "fl-1": "fire_lane",
    "el-1": "elevator",
    "fp-1": "fire_panel",
    "gt-1": "gate",
    "gt-2": "gate",
}


class Rules(EdgeRules):
    """The rules with each item arriving at its own device time (clocks in step)."""

    def see(self, item: Item) -> Decision:
        return self.observe(item, item.t)


def rules(**kw: object) -> Rules:
    return Rules(EdgeConfig(**kw), KINDS)  # type: ignore[arg-type]


def test_fire_lane_warns_after_the_dwell_repeats_and_reports_once() -> None:
    r = rules()
    assert not r.see(Reading(T, "fl-1", "fire_lane", {"occupied": True, "object": "vehicle"}))
    assert not r.tick(T + 59_000)
    first = r.tick(T + 60_000)
    assert first.actions == [Action("voice_warning", "fl-1", "occupied 60 s")]
    [start] = first.items
    assert isinstance(start, Event)
    assert (start.event, start.state, start.data["object"]) == ("obstruction", "start", "vehicle")
    assert not r.tick(T + 90_000)  # within the repeat period: nothing
    second = r.tick(T + 120_000)
    assert [a.kind for a in second.actions] == ["voice_warning"]
    assert not second.items  # the blockage is reported once
    cleared = r.see(Reading(T + 130_000, "fl-1", "fire_lane", {"occupied": False}))
    [end] = cleared.items
    assert isinstance(end, Event)
    assert (end.event, end.state, end.data["warnings"], end.data["dwell_s"]) == (
        "obstruction",
        "end",
        2,
        130,
    )
    assert not r.tick(T + 200_000)


def test_a_short_stop_is_never_reported() -> None:
    r = rules()
    r.see(Reading(T, "fl-1", "fire_lane", {"occupied": True}))
    assert not r.tick(T + 30_000)
    assert not r.see(Reading(T + 40_000, "fl-1", "fire_lane", {"occupied": False}))
    assert not r.tick(T + 120_000)


def test_the_sensors_own_dwell_counts_and_thresholds_are_settings() -> None:
    r = rules(fire_lane=FireLaneRule(dwell_s=10, repeat_s=5))
    # The sensor says the object has been there 8 s already.
    r.see(Reading(T, "fl-1", "fire_lane", {"occupied": True, "dwell_s": 8}))
    assert r.tick(T + 2_000).actions
    assert r.tick(T + 7_000).actions


def test_a_lane_that_reports_obstruction_itself_gets_warnings_but_no_second_report() -> None:
    r = rules()
    r.see(Reading(T, "fl-1", "fire_lane", {"occupied": True}))
    r.see(Event(T + 1, "fl-1", "fire_lane", "obstruction", "start"))
    decision = r.tick(T + 60_000)
    assert decision.actions
    assert not decision.items


def test_a_lane_known_to_report_itself_gets_no_edge_report_even_before_its_first() -> None:
    # The camera box's own dwell may pass a moment after the edge's: no second start.
    r = Rules(EdgeConfig(), KINDS, self_reporting={"fl-1"})
    r.see(Reading(T, "fl-1", "fire_lane", {"occupied": True}))
    decision = r.tick(T + 60_000)
    assert [a.kind for a in decision.actions] == ["voice_warning"]
    assert not decision.items
    assert not r.see(Reading(T + 70_000, "fl-1", "fire_lane", {"occupied": False})).items


def test_fire_alarm_unlocks_the_listed_gates_and_locks_them_when_all_panels_clear() -> None:
    r = rules(fire_release=FireReleaseRule(gates=["gt-1", "gt-2"]))
    on = r.see(Event(T, "fp-1", "fire_panel", "fire_alarm", "start"))
    assert [(a.kind, a.device) for a in on.actions] == [("unlock", "gt-1"), ("unlock", "gt-2")]
    assert not r.see(Reading(T + 1, "fp-2", "fire_panel", {"alarm": True})).actions
    assert not r.see(Event(T + 2, "fp-1", "fire_panel", "fire_alarm", "end")).actions
    off = r.see(Reading(T + 3, "fp-2", "fire_panel", {"alarm": False}))
    assert [(a.kind, a.device) for a in off.actions] == [("lock", "gt-1"), ("lock", "gt-2")]


def car(t: int, **fields: object) -> Reading:
    return Reading(t, "el-1", "elevator", fields)  # type: ignore[arg-type]


def test_trapped_inferred_outside_the_door_zone_after_15_s_and_ended() -> None:
    r = rules()
    r.see(car(T, running=False, door_zone=False, occupied=True, floor=7))
    assert not r.tick(T + 14_000)
    [start] = r.tick(T + 15_000).items
    assert isinstance(start, Event)
    assert (start.event, start.state) == ("trapped", "start")
    assert start.data == {
        "inferred": True,
        "reason": "stopped_outside_door_zone",
        "since": T,
        "floor": 7,
    }
    assert not r.tick(T + 60_000)  # reported once
    [end] = r.see(car(T + 70_000, running=True)).items
    assert isinstance(end, Event)
    assert (end.event, end.state, end.data["inferred"]) == ("trapped", "end", True)


def test_trapped_at_a_landing_needs_doors_closed_for_90_s() -> None:
    r = rules(trapped=TrappedRule(doors_closed_at_landing_s=90))
    r.see(car(T, running=False, door_zone=True, door="closed", occupied=True))
    assert not r.tick(T + 89_000)
    r.see(car(T + 80_000, door="open"))  # the door opened: the clock restarts
    r.see(car(T + 85_000, door="closed"))
    assert not r.tick(T + 170_000)
    assert r.tick(T + 175_000).items


def test_no_inference_when_the_terminal_says_trapped_or_staff_are_inspecting() -> None:
    r = rules()
    r.see(car(T, running=False, door_zone=False, occupied=True))
    r.see(Event(T + 1_000, "el-1", "elevator", "trapped", "start"))
    assert not r.tick(T + 30_000)
    r2 = rules()
    r2.see(car(T, running=False, door_zone=False, occupied=True, service_mode="inspection"))
    assert not r2.tick(T + 30_000)


def test_an_offline_terminal_forgets_the_car() -> None:
    r = rules()
    r.see(car(T, running=False, door_zone=False, occupied=True))
    r.see(Event(T + 5_000, "el-1", "elevator", "terminal_offline", "start"))
    assert not r.tick(T + 30_000)


def test_durations_use_the_gateways_clock_not_the_devices() -> None:
    r = rules()
    # A camera box whose clock is an hour behind: its reading must not look an hour old.
    r.observe(Reading(T - 3_600_000, "fl-1", "fire_lane", {"occupied": True}), T)
    assert not r.tick(T + 30_000)
    assert r.tick(T + 60_000).actions
