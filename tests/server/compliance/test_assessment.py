"""Assessments from a quarter of history made by the real alert service (its clock driven by
the test) on a small registry of the 赤壁 district: four communities, three companies, a
handover mid-quarter and a community with no company. Every measure and score below is
worked out by hand from the events in the test."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from sqlalchemy import select

from alerts.ladders import default_ladders
from alerts.rules import RuleSettings, SettingsTable
from collectors.wire import Event
from collectors.yamlconf import ConfigError
from server.alerting.service import AlertService
from server.compliance.citytable import (
    TABLES_DIR,
    CityTable,
    Deduction,
    load_table,
    load_tables,
    rank,
    score,
)
from server.compliance.measures import Measure
from server.compliance.store import (
    SHANGHAI,
    AssessmentError,
    compute_assessment,
    parse_period,
    sign_assessment,
)
from server.store import models
from server.store.db import Database, open_database
from server.store.registry import import_registry, load_registry

MIN = 60_000


def at(month: int, day: int, hour: int = 0, minute: int = 0, year: int = 2026) -> int:
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=SHANGHAI).timestamp() * 1000)


def _org(id_: str, kind: str) -> dict[str, Any]:
    return {"id": id_, "kind": kind, "name": f"{id_} 名称", "district": "chibi"}


def _community(id_: str, devices: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": id_, "name": f"{id_} 小区", "committee": f"cc-{id_[1]}",
            "street_office": "so-c", "district": "chibi", "gateways": [{"id": "gw-1"}],
            "devices": [{**d, "name": d["id"], "gateway": "gw-1"} for d in devices]}  # fmt: skip


def _lift(last: str, **more: str) -> dict[str, Any]:
    return {"id": "el-1", "kind": "elevator", "maintenance_unit": "mu-1", "last_maintained": last,
            **more}  # fmt: skip


REGISTRY = {
    "version": 1,
    "organisations": [
        _org("so-c", "street_office"), *(_org(f"cc-{i}", "community_committee") for i in "1234"),
        _org("pc-a", "property_company"), _org("pc-b", "property_company"),
        _org("pc-c", "property_company"), _org("mu-1", "maintenance_unit"),
        _org("ms-c", "market_supervision"), _org("fr-c", "fire_rescue"),
        _org("hb-c", "housing_bureau"),
    ],
    "communities": [
        _community("c1", [_lift("2026-09-25"), {"id": "gt-1", "kind": "gate"}]),
        _community("c2", [_lift("2026-09-28")]),
        _community("c3", [{"id": "gt-1", "kind": "gate"}]),
        _community("c4", [_lift("2026-09-30", next_inspection="2026-12-01")]),
    ],
    "contracts": [
        {"community": "c1", "company": "pc-a", "start": "2020-01-01"},
        {"community": "c2", "company": "pc-a", "start": "2020-01-01", "end": "2026-11-15"},
        {"community": "c2", "company": "pc-b", "start": "2026-11-16"},
        {"community": "c4", "company": "pc-c", "start": "2021-01-01"},
    ],
}  # fmt: skip

#: Maintenance visits in the quarter: c1 and c4 every 14 days; c2 every 14 days except a
#: 21-day gap 11-09 → 11-30, in pc-b's days (after the handover on 11-16).
VISITS = {
    "c1": ["10-09", "10-23", "11-06", "11-20", "12-04", "12-18"],
    "c2": ["10-12", "10-26", "11-09", "11-30", "12-14", "12-28"],
    "c4": ["10-14", "10-28", "11-11", "11-25", "12-09", "12-23"],
}


class Clock:
    now = at(10, 1)

    def __call__(self) -> int:
        return self.now


async def history(db: Database, tmp_path: Path) -> Clock:
    """The quarter, driven through the alert service (times in the comments are local)."""
    clock = Clock()
    svc = AlertService(db, default_ladders(), settings=SettingsTable(RuleSettings(flap_s=60)),
                       clock=clock)  # fmt: skip

    async def event(t: int, community: str, dev: str, kind: str, name: str, state: str) -> None:
        clock.now = t
        await svc.fire_due()
        await svc.on_items(community, [Event(t, dev, kind, name, state, {})])  # type: ignore[arg-type]

    async def step(t: int, community: str, rule: str, to: str, by: str) -> None:
        clock.now = t
        await svc.fire_due()
        async with db.session() as s:
            alert_id = (await s.scalars(select(models.Alert.id).where(
                models.Alert.community_id == community, models.Alert.rule == rule
            ).order_by(models.Alert.id.desc()))).first()  # fmt: skip
        assert alert_id is not None
        await svc.transition(alert_id, to, by)  # type: ignore[arg-type]

    async def until(t: int) -> None:
        clock.now = t
        await svc.fire_due()

    # A6, c3 (no company: its committee), 10-05 12:00: a gate forced, a false alarm at +4 min.
    await event(at(10, 5, 12), "c3", "gt-1", "gate", "forced_open", "start")
    await step(at(10, 5, 12, 4), "c3", "gate_forced", "false_alarm", "cc-3")
    # A1, c1 (pc-a), 10-10 10:00: trapped; acknowledged +2 min, on site +20, released +40,
    # resolved by the system after the 60 s flap window: +41.
    t1 = at(10, 10, 10)
    await event(t1, "c1", "el-1", "elevator", "trapped", "start")
    await step(t1 + 2 * MIN, "c1", "trapped", "acknowledged", "pc-a")
    await step(t1 + 20 * MIN, "c1", "trapped", "on_site", "pc-a")
    await event(t1 + 40 * MIN, "c1", "el-1", "elevator", "trapped", "end")
    await until(t1 + 41 * MIN)
    # A2, c2 (pc-a's days), 11-10 09:00: acknowledged +5 min (late), nobody recorded on
    # site, released +15, resolved +16; the maintenance unit enters the rescue record the
    # next morning (arrived +12 min).
    t2 = at(11, 10, 9)
    await event(t2, "c2", "el-1", "elevator", "trapped", "start")
    await step(t2 + 5 * MIN, "c2", "trapped", "acknowledged", "pc-a")
    await event(t2 + 15 * MIN, "c2", "el-1", "elevator", "trapped", "end")
    await until(t2 + 16 * MIN)
    async with db.session(write=True) as s:
        a2 = (await s.scalars(select(models.Alert).where(models.Alert.opened_t == t2))).one()
        s.add(models.RescueRecord(alert_id=a2.id, arrival_t=t2 + 12 * MIN, released_by="维保人员",
                                  method="盘车放人", entered_by="mu-1", entered_t=at(11, 11, 9),
                                  late=False))  # fmt: skip
    # A4, c4 (pc-c), 11-20 08:00: acknowledged +1 min; at +30 the arrival deadline escalates
    # it (street office, market supervision); on site +35 (late); released +50, resolved +51.
    t4 = at(11, 20, 8)
    await event(t4, "c4", "el-1", "elevator", "trapped", "start")
    await step(t4 + 1 * MIN, "c4", "trapped", "acknowledged", "pc-c")
    await until(t4 + 30 * MIN)
    await step(t4 + 35 * MIN, "c4", "trapped", "on_site", "pc-c")
    await event(t4 + 50 * MIN, "c4", "el-1", "elevator", "trapped", "end")
    await until(t4 + 51 * MIN)
    # A3, c2 (pc-b's days), 12-05 20:00: nobody responds; released +25, resolved +26; no
    # rescue record: "arrival not recorded" against pc-b.
    t3 = at(12, 5, 20)
    await event(t3, "c2", "el-1", "elevator", "trapped", "start")
    await until(t3 + 20 * MIN)
    await event(t3 + 25 * MIN, "c2", "el-1", "elevator", "trapped", "end")
    await until(t3 + 26 * MIN)
    # A5, c1 (pc-a), 12-20 23:00: a gate forced; acknowledged +1 min, resolved +10.
    t5 = at(12, 20, 23)
    await event(t5, "c1", "gt-1", "gate", "forced_open", "start")
    await step(t5 + 1 * MIN, "c1", "gate_forced", "acknowledged", "pc-a")
    await step(t5 + 10 * MIN, "c1", "gate_forced", "resolved", "pc-a")
    async with db.session(write=True) as s:
        for community, days in VISITS.items():
            for md in days:
                day = dt.date(2026, int(md[:2]), int(md[3:]))
                s.add(models.MaintenanceRecord(community_id=community, device="el-1", day=day,
                                               org_id="mu-1", created_t=clock.now))  # fmt: skip
    clock.now = at(1, 5, 9, year=2027)
    return clock


@pytest.fixture
async def db(tmp_path: Path) -> Any:
    path = tmp_path / "reg.yaml"
    path.write_text(yaml.safe_dump(REGISTRY, allow_unicode=True))
    async with open_database(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}") as database:
        async with database.session(write=True) as s:
            await import_registry(s, load_registry(path))
        yield database


def values(measures: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: measures[k]["value"] for k in keys}


async def test_a_quarter_scored_by_the_chibi_table(db: Database, tmp_path: Path) -> None:
    clock = await history(db, tmp_path)
    table = load_tables()["chibi"]
    q4 = parse_period("2026-Q4")
    async with db.session(write=True) as s:
        row = await compute_assessment(s, table, q4, by="test", now_t=clock.now)
        body = json.loads(row.body)
    pc_a, pc_b, pc_c = (body["companies"][c] for c in ("pc-a", "pc-b", "pc-c"))
    # pc-a: c1 all quarter, c2 until 11-15: A1, A2, A5. Responses 120, 300, 60 s (A2 late);
    # arrivals 1200 s (A1 on site) and 720 s (A2's rescue record); rescues 2460 and 960 s.
    assert values(pc_a["measures"], "alerts", "alerts_critical", "alerts_major", "trapped",
                  "response_p50_s", "response_p90_s", "response_in_time", "arrival_p50_s",
                  "arrival_p90_s", "arrival_in_time", "arrival_not_recorded", "rescue_p50_s",
                  "gate_incidents", "maintenance_adherence", "inspections_overdue") == {
        "alerts": 3, "alerts_critical": 2, "alerts_major": 1, "trapped": 2,
        "response_p50_s": 120.0, "response_p90_s": 264.0, "response_in_time": 0.6667,
        "arrival_p50_s": 960.0, "arrival_p90_s": 1152.0, "arrival_in_time": 1.0,
        "arrival_not_recorded": 0, "rescue_p50_s": 1710.0, "gate_incidents": 1,
        "maintenance_adherence": 1.0, "inspections_overdue": 0}  # fmt: skip
    assert pc_a["communities"] == ["c1", "c2"]
    assert pc_a["alerts_by_rule"] == {"gate_forced": 1, "trapped": 2}
    assert pc_a["days"] == 92 + 46  # c1: the quarter; c2: 10-01 .. 11-15
    # pc-b: c2 from 11-16: A3 (no response, no arrival), and the 21-day maintenance gap.
    assert values(pc_b["measures"], "alerts", "trapped", "response_p50_s", "response_in_time",
                  "arrival_in_time", "arrival_not_recorded", "maintenance_adherence") == {
        "alerts": 1, "trapped": 1, "response_p50_s": None, "response_in_time": 0.0,
        "arrival_in_time": 0.0, "arrival_not_recorded": 1,
        "maintenance_adherence": 0.0}  # fmt: skip
    assert pc_b["measures"]["maintenance_adherence"]["evidence"] == ["d:c2/el-1"]
    # pc-c: A4 answered in 60 s, on site after 35 min (deadline 30); the inspection due
    # 12-01 is overdue.
    assert values(pc_c["measures"], "response_in_time", "arrival_p50_s", "arrival_in_time",
                  "inspections_overdue") == {
        "response_in_time": 1.0, "arrival_p50_s": 2100.0, "arrival_in_time": 0.0,
        "inspections_overdue": 1}  # fmt: skip
    # Scores (chibi.yaml): pc-a 100 − 2×2 (trapped) − 5 (response < 90 %) = 91 优秀;
    # pc-b 100 − 2 − 3 (arrival not recorded) − 5 (arrival) − 5 (response) − 5
    # (maintenance) = 80 良好; pc-c 100 − 2 − 5 (arrival) − 5 (inspection) + 2 (response
    # ≥ 98 %) = 90 优秀. Three companies: the top one is on the red list, the last on the black.
    got = {c: (v["score"], v["grade"], v["rank"], v["flags"])
           for c, v in body["companies"].items()}  # fmt: skip
    assert got == {"pc-a": (91.0, "优秀", 1, ["red"]), "pc-c": (90.0, "优秀", 2, []),
                   "pc-b": (80.0, "良好", 3, ["black"])}  # fmt: skip
    a1 = pc_a["measures"]["response_in_time"]["evidence"]
    assert len(a1) == 1  # the late one, A2: each deduction names its alerts
    [line] = [ln for ln in pc_a["lines"] if ln["measure"] == "response_in_time"]
    assert (line["points"], line["evidence"]) == (-5, a1)
    # c3 has no company: its measures are kept (the committee answered), it ranks nobody.
    c3 = body["communities"]["c3"]
    assert c3["held_by"] == [{"company": None, "from": "2026-10-01", "to": "2026-12-31"}]
    assert c3["alerts_by_rule"] == {"gate_forced": 1}
    assert values(c3["measures"], "alerts", "false_alarms", "response_in_time") == {
        "alerts": 1, "false_alarms": 1, "response_in_time": 0.0}  # fmt: skip
    assert body["communities"]["c2"]["held_by"] == [
        {"company": "pc-a", "from": "2026-10-01", "to": "2026-11-15"},
        {"company": "pc-b", "from": "2026-11-16", "to": "2026-12-31"}]  # fmt: skip

    # Only the housing bureau signs chibi periods.
    async with db.session(write=True) as s:
        with pytest.raises(AssessmentError, match="so-c may not sign chibi"):
            await sign_assessment(s, table, q4, org="so-c", now_t=clock.now)
        signed = await sign_assessment(s, table, q4, org="hb-c", now_t=clock.now)
        signed_body = signed.body
    # Signed is frozen: a late alert in the quarter and a rule change change nothing ...
    async with db.session(write=True) as s:
        s.add(models.Alert(rule="gate_forced", community_id="c1", device="gt-1",
                           severity="major", state="open", opened_t=at(12, 1),
                           updated_t=at(12, 1)))  # fmt: skip
    stricter = msgspec.structs.replace(
        table, deductions=[*table.deductions, Deduction(measure="alerts", per=1, points=1)]
    )
    async with db.session(write=True) as s:
        again = await compute_assessment(s, stricter, q4, by="test", now_t=clock.now + 1)
        assert (again.version, again.state, again.body) == (1, "signed", signed_body)
    # ... until a correction, which is a new version with its reason; the old one is kept.
    async with db.session(write=True) as s:
        fixed = await compute_assessment(s, stricter, q4, by="hb-c", now_t=clock.now + 2,
                                         correction="补录告警")  # fmt: skip
        assert (fixed.version, fixed.state, fixed.reason) == (2, "computed", "补录告警")
        assert json.loads(fixed.body)["companies"]["pc-a"]["measures"]["alerts"]["value"] == 4
        states = (await s.scalars(select(models.Assessment.state).order_by(
            models.Assessment.version))).all()  # fmt: skip
    assert states == ["superseded", "computed"]


def test_three_consecutive_periods_flag_exactly_when_they_should() -> None:
    """Four quarters of six companies (top and bottom two): a streak flag appears in the
    third quarter in a row in the same list, not before, and not after the run is broken."""
    table = load_tables()["chibi"]
    assert table.ranking is not None
    table = msgspec.structs.replace(table, ranking=msgspec.structs.replace(table.ranking, size=2))
    quarters = [  # scores per company, by quarter
        {"a": 95, "b": 90, "c": 80, "d": 70, "e": 60, "f": 50},
        {"a": 96, "b": 70, "c": 91, "d": 80, "e": 55, "f": 50},
        {"a": 97, "b": 60, "c": 92, "d": 80, "e": 59, "f": 50},
        {"a": 70, "b": 60, "c": 93, "d": 94, "e": 50, "f": 49},
    ]
    history: list[dict[str, int]] = []
    flags = []
    for q in quarters:
        empty = {k: Measure(0) for k in ("trapped",)}
        scored = [score(CityTable(table=1, id="x", name="x", districts=["x"]), c, empty)
                  for c in q]  # fmt: skip
        for s in scored:
            s.score = q[s.company]
        ranked = rank(table, scored, history)
        flags.append({s.company: s.flags for s in ranked if s.flags})
        history.insert(0, {**{s.company: s.rank for s in ranked}, "": len(ranked)})
    assert flags == [
        {"a": ["red"], "b": ["red"], "e": ["black"], "f": ["black"]},
        {"a": ["red"], "c": ["red"], "e": ["black"], "f": ["black"]},
        # a: third quarter on top; e and f: third at the bottom (b's 60 beats e's 59)
        {
            "a": ["red", "red_streak"],
            "c": ["red"],
            "e": ["black", "black_streak"],
            "f": ["black", "black_streak"],
        },
        # a falls out; c's third quarter on top; d's first
        {
            "d": ["red"],
            "c": ["red", "red_streak"],
            "e": ["black", "black_streak"],
            "f": ["black", "black_streak"],
        },
    ]


async def test_streaks_come_from_the_signed_periods_before(db: Database) -> None:
    """Four quarters computed and signed in turn through SQL: pc-c's on-site findings put it
    below pc-a in Q1-Q3 and above it in Q4 (pc-b only serves from 11-16). With two or three
    companies the red and black lists are the top and bottom one; the streak flags appear in
    Q3, the third signed quarter in a row, and not in Q4 when the run is broken."""
    table = msgspec.structs.replace(load_tables()["chibi"], deductions=[])
    now = at(1, 5, year=2027)
    findings = {"2026-Q1": ("pc-c", 3), "2026-Q2": ("pc-c", 2), "2026-Q3": ("pc-c", 4),
                "2026-Q4": ("pc-a", 5)}  # fmt: skip
    flags = {}
    for label, (company, points) in findings.items():
        period = parse_period(label)
        async with db.session(write=True) as s:
            s.add(models.Finding(community_id="c1" if company == "pc-a" else "c4",
                                 company_id=company, table_id="chibi", item="ledger_missing",
                                 points=points, day=period.start, by="so-c", t=now))  # fmt: skip
        async with db.session(write=True) as s:
            row = await compute_assessment(s, table, period, by="test", now_t=now)
            body = json.loads(row.body)
            await sign_assessment(s, table, period, org="hb-c", now_t=now)
        flags[label] = {c: v["flags"] for c, v in body["companies"].items() if v["flags"]}
    assert flags == {
        "2026-Q1": {"pc-a": ["red"], "pc-c": ["black"]},
        "2026-Q2": {"pc-a": ["red"], "pc-c": ["black"]},
        "2026-Q3": {"pc-a": ["red", "red_streak"], "pc-c": ["black", "black_streak"]},
        # pc-a 95, pc-b 100 (no finding), pc-c 100: a tie on top shares rank 1.
        "2026-Q4": {"pc-b": ["red"], "pc-c": ["red"], "pc-a": ["black"]},
    }


def test_a_city_table_names_each_problem_with_its_line(tmp_path: Path) -> None:
    text = (TABLES_DIR / "chibi.yaml").read_text()
    for old, new in (("id: chibi", "id: Chi Bi!"),
                     ("{measure: trapped, per: 1, points: 2, cap: 10}",
                      "{measure: trapped, per: 1, points: .nan, cap: 10, weight: 2}"),
                     ("{measure: response_in_time, below: 0.9, points: 5}",
                      "{measure: response_in_time, above: 60, points: 5}")):  # fmt: skip
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_table(path)
    got = [f"{p.line}: {p.path}: {p.reason}" for p in info.value.problems]
    assert got == [
        "14: deductions[0].weight: 'weight' is not a key here",
        "7: id: 'Chi Bi!' is not a slug like 'chibi'",
        "14: deductions[0].points: nan is not a finite number",
        "18: deductions[4].above: response_in_time is a share: a bound in 0..1",
    ]
