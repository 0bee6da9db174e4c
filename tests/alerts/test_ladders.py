"""Escalation ladders as data: the shipped file, overrides, due steps, and bad files."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from alerts.ladders import LadderError, default_ladders, parse_ladders
from alerts.lifecycle import Alert
from alerts.rules import RULES, Signal

T = 1_795_300_000_000
MIN = 60_000


def alert(rule: str, **detail: object) -> Alert:
    return Alert.from_signal(Signal(rule, "meihuayuan", "d", T, True, detail))  # type: ignore[arg-type]


def test_the_shipped_ladders_cover_every_rule() -> None:
    ladders = default_ladders()
    assert set(ladders.rules) == set(RULES)
    trapped = ladders.for_alert("trapped", "meihuayuan", "shanting")
    assert trapped.first == ["company", "maintenance_unit", "market_supervision"]
    assert [s.tag for s in trapped.steps] == ["rescue_overdue", "accident_record"]


def test_trapped_escalates_at_the_arrival_deadline_then_becomes_an_accident_at_2_h() -> None:
    ladder = default_ladders().for_alert("trapped", "meihuayuan", "shanting")
    a = alert("trapped")
    assert ladder.due(a, T + 29 * MIN, set(), arrival_deadline_min=30) == []
    assert ladder.next_at(a, set(), 30) == T + 30 * MIN
    due = ladder.due(a, T + 30 * MIN, set(), arrival_deadline_min=30)
    assert [(i, s.to) for i, s in due] == [(0, ["street_office", "market_supervision"])]
    assert ladder.due(a, T + 60 * MIN, {0}, 30) == []  # taken once
    assert ladder.next_at(a, {0}, 30) == T + 120 * MIN
    a.move("acknowledged", "wanke", T + MIN)
    a.move("on_site", "xinda", T + 50 * MIN)  # on site is not resolved: still escalates
    assert [s.tag for _, s in ladder.due(a, T + 120 * MIN, {0}, 30)] == ["accident_record"]
    a.move("resolved", "xinda", T + 119 * MIN)
    assert ladder.due(a, T + 120 * MIN, {0}, 30) == []
    assert ladder.next_at(a, {0}, 30) is None


def test_vehicles_in_the_fire_lane_also_go_to_law_enforcement() -> None:
    ladder = default_ladders().for_alert("fire_lane_blocked", "meihuayuan", "shanting")
    car, goods = alert("fire_lane_blocked", object="vehicle"), alert("fire_lane_blocked")
    assert [s.tag for _, s in ladder.due(car, T + 15 * MIN, set(), 30)] == [
        "not_cleared", "vehicle_not_moved"]  # fmt: skip
    assert [s.tag for _, s in ladder.due(goods, T + 15 * MIN, set(), 30)] == ["not_cleared"]


OVERRIDE = """
rules: &rules
{rules}
cities:
  zaozhuang:
    districts: [shanting, shizhong]
    rules:
      fire_lane_blocked: {{first: [company], steps: [{{after: 20m, to: [street_office]}}]}}
districts:
  shanting:
    fire_lane_blocked: {{first: [company], steps: [{{after: 10m, to: [fire_rescue]}}]}}
communities:
  meihuayuan:
    fire_lane_blocked: {{first: [company, street_office]}}
"""


def shipped_rules() -> str:
    text = resources.files("alerts").joinpath("ladders.yaml").read_text(encoding="utf-8")
    return text.split("rules:\n", 1)[1].split("\ndistricts:", 1)[0]


def test_overrides_replace_a_rules_ladder_per_city_district_and_community() -> None:
    ladders = parse_ladders(OVERRIDE.format(rules=shipped_rules()))
    assert ladders.for_alert("fire_lane_blocked", "meihuayuan", "shanting").first == [
        "company", "street_office"]  # fmt: skip
    district = ladders.for_alert("fire_lane_blocked", "guihuayuan", "shanting")
    assert [s.after for s in district.steps] == ["10m"]
    city = ladders.for_alert("fire_lane_blocked", "x", "shizhong")
    assert [s.after for s in city.steps] == ["20m"]
    other = ladders.for_alert("fire_lane_blocked", "x", "tengzhou")
    assert [s.after for s in other.steps] == ["15m", "15m"]


def test_a_district_in_two_cities_is_named() -> None:
    text = OVERRIDE.format(rules=shipped_rules()).replace(
        "cities:\n", "cities:\n  other: {districts: [shanting], rules: {}}\n"
    )
    with pytest.raises(
        LadderError, match=r"\$\.cities\.zaozhuang\.districts\[0\]: 'shanting' is in two"
    ):
        parse_ladders(text, "my.yaml")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t + "\n  - {", "not valid YAML"),
        (
            lambda t: t.replace("after: 15m,", "after: soon,", 1),
            "$.rules.fire_lane_blocked.steps[0].after: 'soon' is not a duration",
        ),
        (
            lambda t: t.replace("first: [company]\n", "first: [mayor]\n", 1),
            "Invalid enum value 'mayor'",
        ),
        (
            lambda t: t.replace("  gate_forced:", "  gate_smashed:", 1),
            "$.rules.gate_smashed: not a rule (rules: ",
        ),
        (
            lambda t: t.replace(
                "unless: resolved, to: [street_office], tag: unwatched}",
                "unless: closed, to: [street_office], tag: unwatched}",
                1,
            ),
            "unless: closed would never or always skip",
        ),
        (
            lambda t: t.replace("first: [company, fire_rescue]", "first: []", 1),
            "$.rules.fire_release.first: tell somebody first",
        ),
    ],
)
def test_bad_ladder_files_are_named(edit: object, message: str) -> None:
    text = "rules:\n" + shipped_rules()
    with pytest.raises(LadderError, match="^my.yaml: .*" + re.escape(message)):
        parse_ladders(edit(text), "my.yaml")  # type: ignore[operator]


def test_a_missing_rule_is_named() -> None:
    text = "rules:\n  trapped: {first: [company]}\n"
    with pytest.raises(LadderError, match=r"\$\.rules: no ladder for .*gateway_offline"):
        parse_ladders(text, "my.yaml")
