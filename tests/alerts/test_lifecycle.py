"""The alert lifecycle: allowed and refused steps, repeats, flapping, auto-resolve."""

from __future__ import annotations

import re

import pytest

from alerts.lifecycle import ALLOWED, SYSTEM, Alert, TransitionError
from alerts.rules import Signal

T = 1_795_300_000_000
S = 1000
C = "meihuayuan"


def signal(rule: str, active: bool = True, t: int = T, **detail: object) -> Signal:
    dev = {"trapped": "el-1-1", "elevator_fault": "el-1-1"}.get(rule, "fl-1")
    return Signal(rule, C, dev, t, active, detail)  # type: ignore[arg-type]


def test_the_full_path_records_who_and_when() -> None:
    alert = Alert.from_signal(signal("trapped", event="trapped"))
    assert (alert.state, alert.severity, alert.opened_t) == ("open", "critical", T)
    alert.move("acknowledged", "wanke-wuye", T + 60 * S)
    alert.move("on_site", "xinda-dianti", T + 900 * S, note="到达现场")
    alert.move("resolved", "xinda-dianti", T + 1200 * S, note="乘客已救出", evidence="snap-1")
    alert.move("closed", "wanke-wuye", T + 1300 * S)
    steps = [(tr.to, tr.by, tr.t - T) for tr in alert.timeline]
    assert steps == [
        ("open", SYSTEM, 0),
        ("acknowledged", "wanke-wuye", 60 * S),
        ("on_site", "xinda-dianti", 900 * S),
        ("resolved", "xinda-dianti", 1200 * S),
        ("closed", "wanke-wuye", 1300 * S),
    ]
    assert alert.timeline[3].evidence == "snap-1"
    assert alert.reached("on_site") == T + 900 * S
    assert not alert.running


@pytest.mark.parametrize(
    ("path", "refused", "message"),
    [
        (["acknowledged"], "open", "cannot go from acknowledged to open"),
        (["resolved"], "on_site", "cannot go from resolved to on_site; from resolved: closed"),
        (["resolved", "closed"], "open", "from closed: nothing (it is final)"),
        (["false_alarm"], "resolved", "cannot go from false_alarm to resolved"),
        (["on_site"], "acknowledged", "cannot go from on_site to acknowledged"),
    ],
)
def test_steps_back_or_out_of_a_final_state_are_refused(
    path: list[str], refused: str, message: str
) -> None:
    alert = Alert.from_signal(signal("fire_lane_blocked"))
    for i, to in enumerate(path):
        alert.move(to, "wanke-wuye", T + i)  # type: ignore[arg-type]
    before = (alert.state, len(alert.timeline))
    with pytest.raises(TransitionError, match=re.escape(message)):
        alert.move(refused, "wanke-wuye", T + 99)  # type: ignore[arg-type]
    assert (alert.state, len(alert.timeline)) == before  # nothing changed


def test_every_state_can_reach_closed() -> None:
    for state, targets in ALLOWED.items():
        assert state == "closed" or targets, state


def test_a_person_cannot_resolve_trapped_before_anyone_is_on_site() -> None:
    alert = Alert.from_signal(signal("trapped"))
    alert.move("acknowledged", "wanke-wuye", T + S)
    with pytest.raises(TransitionError, match="before someone is recorded on site"):
        alert.move("resolved", "wanke-wuye", T + 2 * S)
    # The car moving (the condition ending) still resolves it.
    alert.apply(signal("trapped", active=False, t=T + 3 * S))
    step = alert.settle(T + 63 * S, flap_s=60)
    assert step is not None
    assert (step.to, step.by) == ("resolved", SYSTEM)
    assert alert.reached("acknowledged") == T + S  # kept


def test_flapping_stays_one_alert_and_resolves_only_after_the_end_holds() -> None:
    alert = Alert.from_signal(signal("fire_lane_blocked", object="vehicle"))
    assert alert.apply(signal("fire_lane_blocked", active=False, t=T + 100 * S))
    assert alert.settle(T + 110 * S, flap_s=60) is None  # cleared for 10 s ...
    assert alert.apply(signal("fire_lane_blocked", t=T + 110 * S))  # ... and blocked again
    assert (alert.state, alert.repeats, alert.ended_t) == ("open", 1, None)
    assert alert.settle(T + 1000 * S, flap_s=60) is None  # blocked: stays open
    alert.apply(signal("fire_lane_blocked", active=False, t=T + 1100 * S))
    assert alert.settle(T + 1159 * S, flap_s=60) is None
    step = alert.settle(T + 1160 * S, flap_s=60)
    assert step is not None
    assert (alert.state, step.note) == ("resolved", "condition ended")
    assert alert.apply(signal("fire_lane_blocked", t=T + 1200 * S)) is False  # a new alert's


def test_faults_do_not_resolve_themselves() -> None:
    alert = Alert.from_signal(signal("elevator_fault"))
    assert alert.apply(signal("elevator_fault", active=False, t=T + S)) is False
    assert alert.settle(T + 3600 * S, flap_s=60) is None
    assert alert.state == "open"


def test_signals_of_another_device_or_rule_are_refused() -> None:
    alert = Alert.from_signal(signal("fire_lane_blocked"))
    with pytest.raises(ValueError, match="another device or rule"):
        alert.apply(signal("trapped"))
    with pytest.raises(ValueError, match="opens on an active signal"):
        Alert.from_signal(signal("trapped", active=False))
