"""The server side of alerts: drives :mod:`alerts` with what ingest accepts, keeps alerts,
their timelines, recipients and timers in SQL, and writes the outbox the notifier sends.

* **Signals** from :class:`alerts.rules.RuleEngine` open an alert or update the running one
  for (community, device, rule); ``alerts.running_key`` is unique while an alert runs, so
  two workers cannot open two.
* **Routing** is read from SQL in the transaction that opens the alert: the contract of the
  event's local day, the device's maintenance unit, the district's offices
  (:func:`alerts.routing.recipients`), with the ladder's ``first`` roles.
* **Timers** (``alert_timers``): a timed condition becoming an alert (a lane occupied 5 min,
  a gate held open, a gateway not back), each escalation step, the end of a flapping window.
  A worker takes a due timer by deleting it, and does its work, in one transaction: it
  happens once, and a crash before the commit leaves it due for the next worker or start.
* **Outbox**: every change of an alert (opened, escalated, a transition) writes one
  ``deliveries`` row per channel of every organisation the alert has been routed to, in the
  same transaction (:mod:`server.alerting.notifier` sends them).

* **Device silence** (no item for ``device_offline_s``): each worker notes when it last
  heard from each device and merges that into ``device_seen`` every few seconds (keeping
  the larger time), and the silence check reads that table, so with several workers
  sharing a subscription a device is silent only if no worker heard from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import Table, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from alerts.ladders import Ladders, Step
from alerts.lifecycle import OPEN_STATES, SYSTEM, Alert, AlertState, Transition
from alerts.routing import CommunityFacts, ContractTerm, Recipient, recipients
from alerts.rules import (
    RULES,
    Condition,
    RuleEngine,
    SettingsTable,
    Signal,
    maintenance_signals,
)
from collectors.wire import Item
from server.store import models
from server.store.db import Database

__all__ = ["AlertService", "alert_json", "timeline"]

log = logging.getLogger(__name__)

TIMER_POLL_S: Final = 0.2
#: How often a worker merges what it heard into ``device_seen``, and checks for silence.
SEEN_SYNC_S: Final = 5.0
TIMER_BATCH: Final = 50
#: At start, how long timers wait for ingest to subscribe, then for retained statuses.
READY_WAIT_S: Final = 30.0
RETAINED_GRACE_S: Final = 1.0
#: How often the date rules (maintenance, inspection) are evaluated.
DATE_CHECK_S: Final = 3600.0
_DATE_RULES: Final = ("maintenance_overdue", "inspection_due", "inspection_overdue")
#: Rules timed from a device's reading (a ``cond:`` timer), dropped when its gateway goes offline.
_TIMED: Final = ("fire_lane_blocked", "gate_held_open")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _running_key(community: str, device: str, rule: str) -> str:
    return f"{community}/{device}/{rule}"


async def timeline(session: AsyncSession, alert_id: int) -> Sequence[models.AlertTransition]:
    """An alert's timeline, oldest first."""
    return (
        await session.scalars(
            select(models.AlertTransition)
            .where(models.AlertTransition.alert_id == alert_id)
            .order_by(models.AlertTransition.id)
        )
    ).all()


def alert_json(row: models.Alert) -> dict[str, Any]:
    """An alert as the API and the webhooks show it."""
    return {
        "id": row.id,
        "rule": row.rule,
        "severity": row.severity,
        "community": row.community_id,
        "device": row.device,
        "state": row.state,
        "opened_t": row.opened_t,
        "updated_t": row.updated_t,
        "repeats": row.repeats,
        "level": row.level,
        "detail": json.loads(row.detail),
    }


class AlertService:
    """Alerts for one server process (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        ladders: Ladders,
        *,
        settings: SettingsTable | None = None,
        timezone: str = "Asia/Shanghai",
        clock: Callable[[], int] = _now_ms,
        on_outbox: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.ladders = ladders
        self.settings = settings or SettingsTable()
        self.engine = RuleEngine(self.settings)
        self.tz = ZoneInfo(timezone)
        self.clock = clock
        #: Called after a transaction wrote deliveries (wakes the notifier).
        self.on_outbox: Callable[[], None] = on_outbox or (lambda: None)
        self._lock = asyncio.Lock()  # one alert transaction at a time per worker
        self.opened = 0
        self.timers_fired = 0
        self._seen: dict[tuple[str, str], int] = {}  # heard since the last merge
        #: Gateways whose last status was offline: their devices' conditions are not timed.
        self._gateways_offline: set[tuple[str, str]] = set()

    # --- input ---------------------------------------------------------------------------

    async def on_items(self, community: str, items: Sequence[Item]) -> None:
        """Items ingest accepted (after duplicates were dropped)."""
        now = self.clock()
        for item in items:
            if item.kind != "gateway":
                self._seen[(community, item.dev)] = now
        signals = [s for item in items for s in self.engine.observe(community, item, now)]
        conditions = self.engine.take_conditions()
        if signals or conditions:
            await self._apply(signals, conditions, now)

    async def on_status(self, community: str, gateway: str, online: bool) -> None:
        """A gateway's retained status. Offline (stopped, or its Last Will): the conditions
        its devices were being timed for are dropped, here and in ``alert_timers``, so that
        no alert is raised from the last reading of a device nobody watches any more (an
        alert already running stays as it is)."""
        now = self.clock()
        key = (community, gateway)
        if online:
            self._gateways_offline.discard(key)
        elif key not in self._gateways_offline:
            self._gateways_offline.add(key)
            await self._unwatch(community, gateway)
        signals = self.engine.gateway_status(community, gateway, online, now)
        conditions = self.engine.take_conditions()
        if signals or conditions:
            await self._apply(signals, conditions, now)

    async def _unwatch(self, community: str, gateway: str) -> None:
        async with self._lock, self.db.session(write=True) as session:
            devices = (await session.scalars(select(models.Device.id).where(
                models.Device.community_id == community,
                models.Device.gateway_id == gateway))).all()  # fmt: skip
            keys = [f"cond:{rule}:{community}:{dev}" for dev in devices for rule in _TIMED]
            gone = await session.execute(
                delete(models.AlertTimer).where(models.AlertTimer.key.in_(keys))
            )
        for dev in devices:
            self.engine.forget(community, dev)
        dropped = gone.rowcount  # type: ignore[attr-defined]
        if dropped:
            log.info("gateway %s/%s offline: %d pending condition(s) of its devices dropped",
                     community, gateway, dropped)  # fmt: skip

    async def _apply(
        self, signals: Sequence[Signal], conditions: Sequence[Condition], now: int
    ) -> None:
        async with self._lock, self.db.session(write=True) as session:
            for cond in conditions:
                await self._condition(session, cond, now)
            for sig in signals:
                await self._signal(session, sig, now)
        self.on_outbox()

    async def _condition(self, session: AsyncSession, cond: Condition, now: int) -> None:
        key = f"cond:{cond.rule}:{cond.community}:{cond.device}"
        if cond.active:
            running = await session.scalar(
                select(models.Alert.id).where(
                    models.Alert.running_key == _running_key(cond.community, cond.device, cond.rule)
                )
            )
            if running is not None:
                # Back within the flapping window of the running alert: it is a repeat of
                # that alert, not a new condition to wait out again.
                sig = Signal(cond.rule, cond.community, cond.device, now, True, cond.detail)
                await self._signal(session, sig, now)
                return
            payload = {"rule": cond.rule, "community": cond.community, "device": cond.device,
                       "detail": {**cond.detail, "since_t": cond.since_t}}  # fmt: skip
            await self._set_timer(session, key, cond.due_t, payload, keep=True)
            return
        await session.execute(delete(models.AlertTimer).where(models.AlertTimer.key == key))
        await self._signal(session, Signal(cond.rule, cond.community, cond.device, now, False), now)

    # --- alerts --------------------------------------------------------------------------

    async def _signal(self, session: AsyncSession, sig: Signal, now: int) -> None:
        key = _running_key(sig.community, sig.device, sig.rule)
        row = await session.scalar(select(models.Alert).where(models.Alert.running_key == key))
        if row is None:
            if sig.active:
                await self._open(session, sig, key, now)
            return
        alert = await self._load(session, row)
        if not alert.apply(sig):
            return
        row.repeats, row.updated_t, row.ended_t = alert.repeats, alert.updated_t, alert.ended_t
        row.detail = json.dumps(alert.detail, ensure_ascii=False)
        if alert.ended_t is not None:
            flap = self.settings.for_device(sig.community, sig.device).flap_s
            await self._set_timer(
                session, f"settle:{row.id}", alert.ended_t + int(flap * 1000), {"alert": row.id}
            )

    async def _open(self, session: AsyncSession, sig: Signal, key: str, now: int) -> None:
        alert = Alert.from_signal(sig)
        row = models.Alert(
            rule=sig.rule,
            community_id=sig.community,
            device=sig.device,
            severity=alert.severity,
            state="open",
            opened_t=alert.opened_t,
            updated_t=alert.updated_t,
            repeats=0,
            level=0,
            detail=json.dumps(alert.detail, ensure_ascii=False),
            running_key=key,
        )
        try:
            async with session.begin_nested():
                session.add(row)
                await session.flush()
        except IntegrityError:
            return  # another worker opened it a moment ago: its alert stands
        self._add_transition(session, row.id, alert.timeline[0])
        community = await session.get(models.Community, sig.community)
        if community is None:
            log.warning("alert %d: community %s is not in the registry", row.id, sig.community)
            return
        ladder = self.ladders.for_alert(sig.rule, sig.community, community.district)
        told = await self._route(session, row, community, ladder.first, step="first", now=now)
        for i, step in enumerate(ladder.steps):
            at = step.at(alert, community.arrival_deadline_min)
            await self._set_timer(session, f"step:{row.id}:{i}", at, {"alert": row.id, "i": i})
        self.opened += 1
        log.info("alert %d %s %s/%s opened, told %s", row.id, sig.rule, sig.community,
                 sig.device, ", ".join(r.org for r in told))  # fmt: skip
        await self._outbox(session, row, "opened", now)

    async def _route(
        self,
        session: AsyncSession,
        row: models.Alert,
        community: models.Community,
        roles: Sequence[str],
        *,
        step: str,
        now: int,
    ) -> list[Recipient]:
        """Add the organisations for ``roles`` as of the alert's day; the ones added."""
        contracts = (
            await session.scalars(
                select(models.Contract).where(models.Contract.community_id == community.id)
            )
        ).all()
        facts = CommunityFacts(
            community.id,
            community.committee_id,
            community.street_office_id,
            community.district,
            tuple(ContractTerm(c.company_id, c.start, c.end) for c in contracts),
        )
        device = await session.get(models.Device, (community.id, row.device))
        district_orgs = {
            (o.district, o.kind): o.id
            for o in (
                await session.scalars(
                    select(models.Organisation).where(
                        models.Organisation.district == community.district
                    )
                )
            ).all()
        }
        day = dt.datetime.fromtimestamp(row.opened_t / 1000, self.tz).date()
        found = recipients(
            roles,  # type: ignore[arg-type]
            facts,
            day,
            maintenance_unit=device.maintenance_unit_id if device else None,
            district_orgs=district_orgs,
            special_equipment=RULES[row.rule].special_equipment,
        )
        existing: dict[str, models.AlertRecipient] = {
            r.org_id: r
            for r in (
                await session.scalars(
                    select(models.AlertRecipient).where(models.AlertRecipient.alert_id == row.id)
                )
            ).all()
        }
        added: list[Recipient] = []
        for r in found:
            known = existing.get(r.org)
            if known is not None:
                if known.read_only and not r.read_only:
                    known.read_only = False  # now named by the ladder: may act
                continue
            session.add(
                models.AlertRecipient(
                    alert_id=row.id,
                    org_id=r.org,
                    role=r.role,
                    read_only=r.read_only,
                    standing_in=r.standing_in,
                    step=step,
                    added_t=now,
                )
            )
            added.append(r)
        await session.flush()
        return added

    async def _outbox(
        self,
        session: AsyncSession,
        row: models.Alert,
        change: str,
        now: int,
        *,
        only: set[str] | None = None,
    ) -> None:
        """One delivery per channel of every organisation the alert was routed to (or of
        those in ``only``: an escalation tells the organisations it adds)."""
        told = (
            await session.scalars(
                select(models.AlertRecipient).where(models.AlertRecipient.alert_id == row.id)
            )
        ).all()
        if not told:
            return
        by_org = {r.org_id: r for r in told if only is None or r.org_id in only}
        if not by_org:
            return
        channels = (
            await session.scalars(
                select(models.OrgChannel)
                .where(models.OrgChannel.org_id.in_(by_org), models.OrgChannel.enabled)
                .order_by(models.OrgChannel.id)
            )
        ).all()
        body = alert_json(row)
        for ch in channels:
            r = by_org[ch.org_id]
            message = {
                **body,
                "change": change,
                "t": now,
                "recipient": {"org": r.org_id, "role": r.role, "read_only": r.read_only,
                              "standing_in": r.standing_in},
                "responsible": [x.org_id for x in told if not x.read_only],
            }  # fmt: skip
            session.add(
                models.Delivery(
                    alert_id=row.id,
                    org_id=ch.org_id,
                    channel_id=ch.id,
                    body=json.dumps(message, ensure_ascii=False, separators=(",", ":")),
                    status="pending",
                    attempts=0,
                    created_t=now,
                    next_t=now,
                )
            )

    async def _load(self, session: AsyncSession, row: models.Alert) -> Alert:
        steps = await timeline(session, row.id)
        return Alert(
            rule=row.rule,  # type: ignore[arg-type]
            community=row.community_id,
            device=row.device,
            severity=row.severity,  # type: ignore[arg-type]
            opened_t=row.opened_t,
            state=row.state,  # type: ignore[arg-type]
            updated_t=row.updated_t,
            repeats=row.repeats,
            ended_t=row.ended_t,
            detail=json.loads(row.detail),
            timeline=[
                Transition(s.t, s.to_state, s.by, s.note, s.evidence)  # type: ignore[arg-type]
                for s in steps
                if s.to_state != "escalated"
            ],
        )

    def _add_transition(self, session: AsyncSession, alert_id: int, step: Transition) -> None:
        session.add(
            models.AlertTransition(
                alert_id=alert_id,
                t=step.t,
                to_state=step.to,
                by=step.by,
                note=step.note,
                evidence=step.evidence,
            )
        )

    async def _set_timer(
        self,
        session: AsyncSession,
        key: str,
        due_t: int,
        payload: dict[str, Any],
        *,
        keep: bool = False,
    ) -> None:
        """Create timer ``key``, or move it to ``due_t`` (with ``keep``, only earlier: a
        condition keeps the time it began, unless a device reports it began before, as a
        lane sensor's dwell does). Another worker creating the same one at the same moment
        wins the unique key; this transaction goes on without it."""
        found = await session.scalar(select(models.AlertTimer).where(models.AlertTimer.key == key))
        if found is not None:
            if not keep or due_t < found.due_t:
                found.due_t = due_t
                found.payload = json.dumps(payload)
            return
        try:
            async with session.begin_nested():
                session.add(models.AlertTimer(key=key, due_t=due_t, payload=json.dumps(payload)))
        except IntegrityError:
            log.debug("timer %s was set by another worker", key)

    async def transition(
        self, alert_id: int, to: AlertState, by: str, *, note: str = "", evidence: str = ""
    ) -> models.Alert:
        """A person's step (the API checked who may); TransitionError if not allowed."""
        now = self.clock()
        async with self._lock, self.db.session(write=True) as session:
            row = await session.get(models.Alert, alert_id)
            if row is None:
                raise LookupError(f"no alert {alert_id}")
            alert = await self._load(session, row)
            step = alert.move(to, by, now, note=note, evidence=evidence)
            self._store_state(row, alert)
            self._add_transition(session, row.id, step)
            await self._outbox(session, row, to, now)
        self.on_outbox()
        return row

    def _store_state(self, row: models.Alert, alert: Alert) -> None:
        row.state, row.updated_t, row.ended_t = alert.state, alert.updated_t, alert.ended_t
        if alert.state not in OPEN_STATES:
            row.running_key = None  # a new signal opens a new alert

    # --- timers --------------------------------------------------------------------------

    async def check_dates(
        self, only: tuple[str, str] | None = None, *, resolve_only: bool = False
    ) -> int:
        """The date rules (maintenance overdue, inspection due or past) for every elevator,
        or ``only`` one; the signals that changed something. ``resolve_only``: only end
        alerts (a maintenance visit entered late, in a series of them, must not open an
        alert that the next entry resolves; the daily check opens what is due)."""
        now = self.clock()
        today = dt.datetime.fromtimestamp(now / 1000, self.tz).date()
        async with self.db.session() as session:
            query = select(models.Device.community_id, models.Device.id).where(
                models.Device.kind == "elevator"
            )
            if only is not None:
                query = query.where(
                    models.Device.community_id == only[0], models.Device.id == only[1]
                )
            elevators = (await session.execute(query)).all()
            last = {
                (c, d): day
                for c, d, day in (
                    await session.execute(
                        select(
                            models.MaintenanceRecord.community_id,
                            models.MaintenanceRecord.device,
                            func.max(models.MaintenanceRecord.day),
                        ).group_by(
                            models.MaintenanceRecord.community_id, models.MaintenanceRecord.device
                        )
                    )
                ).all()
            }
            due = {
                (i.community_id, i.device): i.next_date
                for i in (await session.scalars(select(models.Inspection))).all()
            }
            running = set(
                (
                    await session.scalars(
                        select(models.Alert.running_key).where(
                            models.Alert.rule.in_(_DATE_RULES),
                            models.Alert.running_key.is_not(None),
                        )
                    )
                ).all()
            )
        changes = [
            sig
            for c, d in elevators
            for sig in maintenance_signals(
                c,
                d,
                last_maintained=last.get((c, d)),
                next_inspection=due.get((c, d)),
                today=today,
                settings=self.settings.for_device(c, d),
                now=now,
            )
            if sig.active != (_running_key(c, d, sig.rule) in running)
            and not (resolve_only and sig.active)
        ]
        if changes:
            await self._apply(changes, [], now)
        return len(changes)

    async def watch(self, devices: Sequence[tuple[str, str]]) -> None:
        """Devices expected to report (the registry's, at start): a row in ``device_seen``
        from now for each one that has none, so one that never reports goes silent too."""
        now = self.clock()
        async with self.db.session(write=True) as session:
            pairs = select(models.DeviceSeen.community_id, models.DeviceSeen.device)
            known = {(c, d) for c, d in (await session.execute(pairs)).all()}
            for c, d in devices:
                if (c, d) not in known:
                    session.add(models.DeviceSeen(community_id=c, device=d, last_t=now))

    async def sync_seen(self) -> None:
        """Merge what this worker heard into ``device_seen`` (the larger time wins)."""
        heard, self._seen = self._seen, {}
        if not heard:
            return
        table = models.DeviceSeen.__table__
        assert isinstance(table, Table)
        rows = [{"community_id": c, "device": d, "last_t": t} for (c, d), t in heard.items()]
        dialect = self.db.engine.dialect.name
        if dialect == "postgresql":
            stmt: Any = pg_insert(table)
            larger = func.greatest(table.c.last_t, stmt.excluded.last_t)
        else:
            stmt = sqlite_insert(table)
            larger = func.max(table.c.last_t, stmt.excluded.last_t)
        stmt = stmt.on_conflict_do_update(
            index_elements=["community_id", "device"], set_={"last_t": larger}
        )
        async with self.db.session() as session:
            await session.execute(stmt, rows)

    async def check_silence(self) -> int:
        """Devices no worker heard from within ``device_offline_s`` go offline; heard again,
        their offline alert ends. The signals that changed something."""
        now = self.clock()
        async with self.db.session() as session:
            seen = (await session.execute(
                select(models.DeviceSeen.community_id, models.DeviceSeen.device,
                       models.DeviceSeen.last_t))).all()  # fmt: skip
            running = set((await session.scalars(
                select(models.Alert.running_key).where(
                    models.Alert.rule == "device_offline",
                    models.Alert.running_key.is_not(None)))).all())  # fmt: skip
        changes: list[Signal] = []
        for c, d, last in seen:
            limit = self.settings.for_device(c, d).device_offline_s * 1000
            silent = limit > 0 and now - last >= limit  # 0: its silence is no fault
            if silent != (_running_key(c, d, "device_offline") in running):
                detail = {"last_seen_t": last} if silent else {}
                changes.append(Signal("device_offline", c, d, now, silent, detail))
        if changes:
            await self._apply(changes, [], now)
        return len(changes)

    async def run_timers(
        self, stop: asyncio.Event | None = None, *, ready: asyncio.Event | None = None
    ) -> None:
        """Fire due timers until cancelled; every few seconds merge what was heard and check
        for silence; every hour the date rules.

        ``ready`` (ingest subscribed) is awaited first, at most :data:`READY_WAIT_S`, and
        then :data:`RETAINED_GRACE_S` more: the gateways' retained statuses arrive first, so
        that a timer that fell due while the server was down is not fired for a device
        whose gateway has since gone offline."""
        if ready is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), READY_WAIT_S)
            await asyncio.sleep(RETAINED_GRACE_S)
        dates_at = seen_at = 0.0
        while stop is None or not stop.is_set():
            try:
                if time.monotonic() >= dates_at:
                    dates_at = time.monotonic() + DATE_CHECK_S
                    await self.check_dates()
                if time.monotonic() >= seen_at:
                    seen_at = time.monotonic() + SEEN_SYNC_S
                    await self.sync_seen()
                    await self.check_silence()
                await self.fire_due()
            except Exception:  # a bad row must not stop every timer
                log.exception("alert timers failed; retrying")
            await asyncio.sleep(TIMER_POLL_S)

    async def fire_due(self) -> int:
        """Fire every timer due now; how many this worker fired."""
        now = self.clock()
        async with self.db.session() as session:
            due = (
                (
                    await session.execute(
                        select(models.AlertTimer.id)
                        .where(models.AlertTimer.due_t <= now)
                        .order_by(models.AlertTimer.due_t)
                        .limit(TIMER_BATCH)
                    )
                )
                .scalars()
                .all()
            )
        fired = 0
        for timer_id in due:
            fired += await self._fire(timer_id, now)
        return fired

    async def _fire(self, timer_id: int, now: int) -> int:
        async with self._lock, self.db.session(write=True) as session:
            timer = await session.get(models.AlertTimer, timer_id)
            if timer is None:
                return 0
            taken = await session.execute(
                delete(models.AlertTimer).where(models.AlertTimer.id == timer_id)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                return 0  # another worker took it
            payload = json.loads(timer.payload)
            kind = timer.key.split(":", 1)[0]
            if kind == "cond":
                if await self._unwatched(session, payload["community"], payload["device"]):
                    log.info("%s of %s/%s not raised: its gateway is offline", payload["rule"],
                             payload["community"], payload["device"])  # fmt: skip
                    return 0
                sig = Signal(payload["rule"], payload["community"], payload["device"], now,
                             True, payload["detail"])  # fmt: skip
                await self._signal(session, sig, now)
            elif kind == "step":
                await self._escalate(session, payload["alert"], payload["i"], now)
            elif kind == "settle":
                await self._settle(session, payload["alert"], now)
            self.timers_fired += 1
        self.on_outbox()
        return 1

    async def _unwatched(self, session: AsyncSession, community: str, device: str) -> bool:
        """Whether ``device``'s gateway is offline (as this worker last heard)."""
        gateway = await session.scalar(select(models.Device.gateway_id).where(
            models.Device.community_id == community, models.Device.id == device))  # fmt: skip
        return (community, gateway) in self._gateways_offline

    async def _escalate(self, session: AsyncSession, alert_id: int, i: int, now: int) -> None:
        row = await session.get(models.Alert, alert_id)
        if row is None or row.state not in OPEN_STATES:
            return
        community = await session.get(models.Community, row.community_id)
        if community is None:
            return
        ladder = self.ladders.for_alert(row.rule, row.community_id, community.district)
        if i >= len(ladder.steps):
            return  # the ladder changed since
        step: Step = ladder.steps[i]
        alert = await self._load(session, row)
        if not step.applies(alert):
            return
        added = await self._route(
            session, row, community, step.to, step=step.tag or f"step{i}", now=now
        )
        row.level += 1
        row.updated_t = now
        names = ", ".join(f"{r.org} ({r.role})" for r in added) or "nobody new"
        session.add(
            models.AlertTransition(alert_id=row.id, t=now, to_state="escalated", by=SYSTEM,
                                   note=f"{step.tag or f'step {i}'}: {names}")
        )  # fmt: skip
        if step.tag == "accident_record":
            await self._accident(session, row, now)
        log.warning("alert %d escalated (%s) to %s", row.id, step.tag, names)
        await self._outbox(session, row, "escalated", now, only={r.org for r in added})

    async def _accident(self, session: AsyncSession, row: models.Alert, now: int) -> None:
        steps = await timeline(session, row.id)
        history = [{"t": s.t, "to": s.to_state, "by": s.by, "note": s.note} for s in steps]
        ms = await session.scalar(
            select(models.AlertRecipient.org_id).where(
                models.AlertRecipient.alert_id == row.id,
                models.AlertRecipient.role == "market_supervision",
            )
        )
        session.add(
            models.AccidentRecord(
                alert_id=row.id,
                created_t=now,
                to_org=ms or "",
                body=json.dumps({"alert": alert_json(row), "timeline": history},
                                ensure_ascii=False),
            )
        )  # fmt: skip

    async def _settle(self, session: AsyncSession, alert_id: int, now: int) -> None:
        row = await session.get(models.Alert, alert_id)
        if row is None or row.state not in OPEN_STATES:
            return
        alert = await self._load(session, row)
        flap = self.settings.for_device(row.community_id, row.device).flap_s
        step = alert.settle(now, flap)
        if step is None:
            if alert.ended_t is not None:  # not long enough yet (the clock moved back?)
                due = alert.ended_t + int(flap * 1000)
                await self._set_timer(session, f"settle:{row.id}", due, {"alert": row.id})
            return
        self._store_state(row, alert)
        self._add_transition(session, row.id, step)
        await self._outbox(session, row, "resolved", now)
