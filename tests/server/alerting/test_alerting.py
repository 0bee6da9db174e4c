"""The server's alert service on a real SQLite file, its clock driven by the test: alerts,
timelines, recipients, timers and the outbox, with two services on the same database
standing for two server workers."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from alerts.ladders import default_ladders, parse_ladders
from alerts.rules import RuleSettings, SettingsTable
from collectors.wire import Event, Reading
from server.alerting.service import AlertService
from server.store import models
from server.store.db import Database, open_database
from server.store.registry import import_registry, load_registry
from tests.conftest import DEMO_REGISTRY

T = 1_795_300_000_000
S = 1000
MIN = 60 * S
C = "meihuayuan"


class Clock:
    def __init__(self) -> None:
        self.now = T

    def __call__(self) -> int:
        return self.now


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with open_database(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}") as database:
        async with database.session() as s:
            await import_registry(s, load_registry(DEMO_REGISTRY))
            for org in ("pc-anju", "mu-tengda", "ms-shanting", "so-shancheng", "fr-shanting"):
                s.add(models.OrgChannel(org_id=org, kind="webhook", target="http://x/" + org,
                                        secret="s" * 16))  # fmt: skip
        yield database


def service(db: Database, clock: Clock, **settings: float) -> AlertService:
    table = SettingsTable(RuleSettings(**settings))  # type: ignore[arg-type]
    return AlertService(db, default_ladders(), settings=table, clock=clock)


def ev(dev: str, kind: str, event: str, state: str = "start", **data: object) -> Event:
    return Event(T, dev, kind, event, state, dict(data))  # type: ignore[arg-type]


async def rows(db: Database, model: type[models.Base]) -> int:
    async with db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


async def deliveries(db: Database) -> list[tuple[str, str]]:
    async with db.session() as s:
        found = (await s.scalars(select(models.Delivery).order_by(models.Delivery.id))).all()
    return [(d.org_id, json.loads(d.body)["change"]) for d in found]


async def test_trapped_opens_once_routes_and_becomes_an_accident_at_2_h(db: Database) -> None:
    clock = Clock()
    svc = service(db, clock)
    await svc.on_items(C, [ev("el-1-1", "elevator", "trapped")])
    await svc.on_items(C, [ev("el-1-1", "elevator", "trapped")])  # a repeat, same alert
    async with db.session() as s:
        alert = (await s.scalars(select(models.Alert))).one()
        told = (await s.scalars(select(models.AlertRecipient))).all()
    assert (alert.rule, alert.state, alert.repeats) == ("trapped", "open", 1)
    assert {(r.org_id, r.role) for r in told} == {
        ("pc-anju", "company"), ("mu-tengda", "maintenance_unit"),
        ("ms-shanting", "market_supervision")}  # fmt: skip
    assert await deliveries(db) == [("pc-anju", "opened"), ("mu-tengda", "opened"),
                                    ("ms-shanting", "opened")]  # fmt: skip
    # Nobody arrives: at the arrival deadline (30 min in the demo registry) the street office
    # and market supervision; at 2 h, an accident record.
    clock.now = T + 29 * MIN
    assert await svc.fire_due() == 0
    clock.now = T + 30 * MIN
    assert await svc.fire_due() == 1
    assert (await deliveries(db))[3:] == [("so-shancheng", "escalated")]
    clock.now = T + 120 * MIN
    assert await svc.fire_due() == 1
    async with db.session() as s:
        accident = (await s.scalars(select(models.AccidentRecord))).one()
    assert accident.to_org == "ms-shanting"
    body = json.loads(accident.body)
    assert [x["to"] for x in body["timeline"]] == ["open", "escalated", "escalated"]
    assert await svc.fire_due() == 0
    assert await rows(db, models.AlertTimer) == 0


async def test_two_workers_fire_each_timer_once_and_open_one_alert(db: Database) -> None:
    """Two services on one database (two server workers): the same signal arriving at both
    opens one alert; the escalation timer fires once, whichever worker takes it."""
    clock = Clock()
    async with open_database(str(db.engine.url)) as other_db:
        a = service(db, clock, fire_lane_alert_s=60)
        b = service(other_db, clock, fire_lane_alert_s=60)
        lane = ev("fl-1", "fire_lane", "obstruction", object="vehicle")
        await a.on_items(C, [lane])
        await b.on_items(C, [lane])
        assert await rows(db, models.AlertTimer) == 1  # one condition timer, not two
        clock.now = T + 60 * S
        fired = await a.fire_due() + await b.fire_due()
        assert fired == 1
        assert await rows(db, models.Alert) == 1
        clock.now = T + 60 * S + 15 * MIN
        fired = await b.fire_due() + await a.fire_due()
        assert fired == 2  # the two steps: not cleared, vehicle
        assert await b.fire_due() + await a.fire_due() == 0
    told = await deliveries(db)
    assert told == [
        ("pc-anju", "opened"),
        ("so-shancheng", "escalated"),
        ("fr-shanting", "escalated"),
    ]  # fmt: skip (no law_enforcement channel)


async def test_a_lane_that_flaps_stays_one_alert_and_resolves_after_the_window(
    db: Database,
) -> None:
    clock = Clock()
    svc = service(db, clock, fire_lane_alert_s=60, flap_s=30)
    await svc.on_items(C, [ev("fl-1", "fire_lane", "obstruction")])
    clock.now = T + 60 * S
    await svc.fire_due()
    clock.now = T + 100 * S
    await svc.on_items(C, [ev("fl-1", "fire_lane", "obstruction", "end")])
    clock.now = T + 110 * S  # clear for 10 s, then blocked again
    await svc.on_items(C, [ev("fl-1", "fire_lane", "obstruction")])
    clock.now = T + 200 * S
    await svc.fire_due()
    async with db.session() as s:
        alert = (await s.scalars(select(models.Alert))).one()
    assert (alert.state, alert.repeats) == ("open", 1)
    await svc.on_items(C, [ev("fl-1", "fire_lane", "obstruction", "end")])
    clock.now = T + 229 * S
    await svc.fire_due()
    clock.now = T + 231 * S
    await svc.fire_due()
    async with db.session() as s:
        alert = (await s.scalars(select(models.Alert))).one()
        steps = (await s.scalars(select(models.AlertTransition.to_state))).all()
    assert (alert.state, alert.running_key) == ("resolved", None)
    assert steps == ["open", "resolved"]
    assert await rows(db, models.Alert) == 1
    assert [c for _, c in await deliveries(db)] == ["opened", "resolved"]


async def test_a_community_without_company_falls_to_its_committee(db: Database) -> None:
    clock = Clock()
    svc = service(db, clock)
    await svc.on_items("sishizhong-sushe", [ev("fl-1", "fire_lane", "sensor_fault")])  # nothing
    await svc.on_status("sishizhong-sushe", "gw-1", online=False)
    clock.now = T + 300 * S
    assert await svc.fire_due() == 1
    async with db.session() as s:
        told = (await s.scalars(select(models.AlertRecipient))).all()
    assert {(r.org_id, r.role, r.standing_in) for r in told} == {
        ("cc-meiyuan", "community_committee", True),
        ("so-shancheng", "street_office", True),
    }


async def test_contract_of_the_day_and_a_ladder_override(db: Database, tmp_path: Path) -> None:
    """The alert's local day decides the company; a community's ladder replaces the rule's."""
    async with db.session() as s:
        contract = (await s.scalars(select(models.Contract).where(
            models.Contract.community_id == C))).one()  # fmt: skip
        contract.end = dt.date(2026, 11, 22)
        s.add(models.Organisation(id="pc-xin", kind="property_company", name="新", district=""))
        await s.flush()
        s.add(models.Contract(community_id=C, company_id="pc-xin", start=dt.date(2026, 11, 23)))
    text = (Path(__file__).parents[3] / "alerts" / "ladders.yaml").read_text()
    override = "communities:\n  meihuayuan:\n    gate_forced: {first: [company, street_office]}"
    ladders = parse_ladders(text.replace("communities: {}", override))
    clock = Clock()
    svc = AlertService(db, ladders, clock=clock)
    # 2026-11-22 23:59:59 in Shanghai is still the old company's day; 00:00:01 the new one's.
    last = int(dt.datetime(2026, 11, 22, 23, 59, 59, tzinfo=svc.tz).timestamp() * 1000)
    clock.now = last
    await svc.on_items(C, [ev("gt-north", "gate", "forced_open", "instant")])
    clock.now = last + 2000
    await svc.on_items(C, [ev("gt-south", "gate", "forced_open", "instant")])
    async with db.session() as s:
        pairs = (await s.execute(
            select(models.Alert.device, models.AlertRecipient.org_id)
            .join(models.AlertRecipient, models.AlertRecipient.alert_id == models.Alert.id)
            .order_by(models.Alert.id, models.AlertRecipient.org_id))).all()  # fmt: skip
    assert [tuple(p) for p in pairs] == [
        ("gt-north", "pc-anju"),
        ("gt-north", "so-shancheng"),
        ("gt-south", "pc-xin"),
        ("gt-south", "so-shancheng"),
    ]


async def test_date_rules_raise_from_records_and_resolve_with_a_new_visit(db: Database) -> None:
    clock = Clock()
    svc = service(db, clock, flap_s=0)
    today = dt.datetime.fromtimestamp(T / 1000, svc.tz).date()
    async with db.session() as s:
        s.add(models.MaintenanceRecord(community_id=C, device="el-1-1",
                                       day=today - dt.timedelta(days=20), org_id="mu-tengda",
                                       created_t=T))  # fmt: skip
        s.add(models.Inspection(community_id=C, device="el-1-1",
                                next_date=today + dt.timedelta(days=10)))  # fmt: skip
    assert await svc.check_dates() == 2
    assert await svc.check_dates() == 0  # nothing changed: no repeats every hour
    async with db.session() as s:
        running = sorted((await s.scalars(select(models.Alert.rule))).all())
    assert running == ["inspection_due", "maintenance_overdue"]
    async with db.session() as s:
        s.add(models.MaintenanceRecord(community_id=C, device="el-1-1", day=today,
                                       org_id="mu-tengda", created_t=T))  # fmt: skip
    assert await svc.check_dates(only=(C, "el-1-1")) == 1
    await svc.fire_due()  # the flapping window (0 here) has passed: resolved
    async with db.session() as s:
        states = dict((await s.execute(select(models.Alert.rule, models.Alert.state))).all())
    assert states == {"inspection_due": "open", "maintenance_overdue": "resolved"}


async def test_silence_is_judged_from_what_any_worker_heard(db: Database) -> None:
    clock = Clock()
    async with open_database(str(db.engine.url)) as other_db:
        a, b = service(db, clock, flap_s=0), service(other_db, clock, flap_s=0)
        await a.watch([(C, "el-1-1"), (C, "el-2-1")])
        await b.watch([(C, "el-1-1"), (C, "el-2-1")])  # a second start changes nothing
        clock.now = T + 500 * S  # only worker a hears el-1-1
        await a.on_items(C, [Reading(T, "el-1-1", "elevator", {"floor": 2})])
        await a.sync_seen()
        clock.now = T + 700 * S
        assert await b.check_silence() == 1  # el-2-1: nobody heard it for 10 min
        assert await a.check_silence() == 0  # already running: not twice
        clock.now = T + 800 * S  # worker b hears el-2-1 again
        await b.on_items(C, [Reading(T, "el-2-1", "elevator", {"floor": 5})])
        await b.sync_seen()
        assert await a.check_silence() == 1  # its offline alert ends
        await a.fire_due()
    async with db.session() as s:
        alerts = (await s.execute(select(models.Alert.device, models.Alert.rule,
                                         models.Alert.state))).all()  # fmt: skip
    assert [tuple(a) for a in alerts] == [("el-2-1", "device_offline", "resolved")]


async def test_a_gateway_gone_offline_leaves_its_lanes_unjudged_and_its_alerts_as_they_are(
    db: Database,
) -> None:
    """Issue 12, item 5: no alert from the last reading of a lane nobody watches, neither in
    the worker that saw the gateway go nor in one started after; a running alert stays."""
    clock = Clock()
    svc = service(db, clock, fire_lane_alert_s=60)
    occupied = {"occupied": True}
    await svc.on_items(C, [Reading(T, "fl-2", "fire_lane", occupied)])
    clock.now = T + 61 * S
    await svc.fire_due()  # fl-2 blocked past its limit: an alert runs
    await svc.on_items(C, [Reading(clock.now, "fl-1", "fire_lane", occupied)])
    clock.now = T + 70 * S
    await svc.on_status(C, "gw-1", online=False)  # stopped cleanly, or its Last Will
    async with db.session() as s:
        timers = (await s.scalars(select(models.AlertTimer.key))).all()
    assert not [k for k in timers if "fl-" in k and k.startswith("cond:")], timers
    clock.now = T + 10 * MIN
    await svc.fire_due()

    # A worker started later: the lane's timer was set before the gateway went, while this
    # worker was down; it hears the retained offline status first (run_timers waits for it).
    await svc.on_items(C, [Reading(clock.now, "fl-1", "fire_lane", {"occupied": False})])
    await svc.on_status(C, "gw-1", online=True)
    await svc.on_items(C, [Reading(clock.now, "fl-1", "fire_lane", occupied)])
    later = service(db, clock, fire_lane_alert_s=60)
    await later.on_status(C, "gw-1", online=False)
    clock.now += 10 * MIN
    await later.fire_due()
    async with db.session() as s:
        alerts = (await s.scalars(select(models.Alert).where(models.Alert.device != "gw-1"))).all()
    assert [(a.device, a.rule, a.state) for a in alerts] == [("fl-2", "fire_lane_blocked", "open")]
    assert alerts[0].running_key is not None

    # Back online and still blocked: the lane is timed again from what it now reports.
    await later.on_status(C, "gw-1", online=True)
    await later.on_items(C, [Reading(clock.now, "fl-1", "fire_lane", occupied)])
    clock.now += 61 * S
    await later.fire_due()
    async with db.session() as s:
        lanes = (await s.scalars(select(models.Alert.device).where(
            models.Alert.rule == "fire_lane_blocked").order_by(models.Alert.id))).all()  # fmt: skip
    assert lanes == ["fl-2", "fl-1"]


async def test_a_device_whose_silence_is_no_fault_never_goes_offline(db: Database) -> None:
    """Issue 14: a detector that only speaks on detections (``device_offline_s: 0`` for it)
    used to raise device_offline after 10 minutes anyway."""
    clock = Clock()
    table = SettingsTable(RuleSettings(flap_s=0), devices={(C, "el-2-1"): {"device_offline_s": 0}})
    svc = AlertService(db, default_ladders(), settings=table, clock=clock)
    await svc.watch([(C, "el-1-1"), (C, "el-2-1")])
    clock.now = T + 3600 * S  # an hour of silence from both
    assert await svc.check_silence() == 1
    async with db.session() as s:
        offline = (await s.scalars(select(models.Alert.device))).all()
    assert offline == ["el-1-1"]
    with pytest.raises(ValueError, match="device_offline_s: must be >= 0"):
        SettingsTable(RuleSettings(device_offline_s=-1))


async def test_a_reported_dwell_moves_the_lane_timer_earlier(db: Database) -> None:
    """Issue 14: the server's timer (SQL, shared by workers) moves back when the sensor's
    dwell says the vehicle arrived before the server heard of it; never later."""
    clock = Clock()
    svc = service(db, clock, flap_s=0)
    await svc.on_items(C, [ev("fl-1", "fire_lane", "obstruction", object="vehicle")])
    async with db.session() as s:
        [first] = (await s.scalars(select(models.AlertTimer.due_t))).all()
    assert first == T + 300 * S
    busy = Reading(T, "fl-1", "fire_lane", {"occupied": True, "dwell_s": 200})
    clock.now = T + 10 * S
    await svc.on_items(C, [busy])
    async with db.session() as s:
        [moved] = (await s.scalars(select(models.AlertTimer.due_t))).all()
    assert moved == T + 10 * S - 200 * S + 300 * S
