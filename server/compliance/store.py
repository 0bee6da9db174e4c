"""Assessments from SQL (issue 15): load the facts of a period, compute the measures of every
community and company, score them by the city table, and keep the result as a versioned
assessment that is frozen once signed.

Periods: ``2026-Q4``, ``2026-11`` (a month), ``2026-W48`` (an ISO week), ``2026`` (a year),
or ``2026-10-01..2026-12-31`` (from–to, inclusive), in local days (Asia/Shanghai unless
configured). Attribution follows the contract of each day (alerts/routing.py
``company_on``): a company answers for the days it held each community; days without a
company belong to the community committee standing in (reported, not ranked).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from alerts.lifecycle import SYSTEM
from alerts.routing import CommunityFacts as RoutingFacts
from alerts.routing import ContractTerm, company_on
from server.compliance import measures as m
from server.compliance.citytable import CityTable, rank, score, table_digest
from server.store import models

__all__ = [
    "SHANGHAI",
    "AssessmentError",
    "Period",
    "assess",
    "assessment_json",
    "compute_assessment",
    "ensure_started",
    "load_facts",
    "parse_period",
    "sign_assessment",
]

SHANGHAI: Final = ZoneInfo("Asia/Shanghai")
#: Periods are between these years (a typo such as 1026-Q4 is refused, not computed empty).
MIN_YEAR: Final = 2000
MAX_YEAR: Final = 2100
_PERSON_STEPS: Final = frozenset({"acknowledged", "on_site", "resolved", "false_alarm"})
_END_STATES: Final = frozenset({"resolved", "false_alarm", "closed"})


#: Called with (done, total) while a long computation runs (the CLI's progress bar).
Progress = Callable[[int, int], None]


class AssessmentError(ValueError):
    """A request the assessment rules refuse; the message says why (API: 4xx, CLI: exit 2)."""


@dataclass(frozen=True, slots=True)
class Period:
    label: str
    start: dt.date
    end: dt.date  # inclusive

    def ms(self, tz: ZoneInfo) -> tuple[int, int]:
        return _day_ms(self.start, tz), _day_ms(self.end + dt.timedelta(days=1), tz)


def _day_ms(day: dt.date, tz: ZoneInfo) -> int:
    return int(dt.datetime.combine(day, dt.time(0), tz).timestamp() * 1000)


def parse_period(text: str) -> Period:
    """A period from its label (see the module docstring); AssessmentError names the forms."""
    text = text.strip()
    try:
        if mt := re.fullmatch(r"(\d{4})-Q([1-4])", text, re.ASCII):
            year, q = int(mt[1]), int(mt[2])
            start = dt.date(year, 3 * q - 2, 1)
            end = (dt.date(year + (q == 4), (3 * q) % 12 + 1, 1)) - dt.timedelta(days=1)
        elif mt := re.fullmatch(r"(\d{4})-(\d{2})", text, re.ASCII):
            start = dt.date(int(mt[1]), int(mt[2]), 1)
            end = (start + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
        elif mt := re.fullmatch(r"(\d{4})-W(\d{2})", text, re.ASCII):
            start = dt.date.fromisocalendar(int(mt[1]), int(mt[2]), 1)
            end = start + dt.timedelta(days=6)
        elif mt := re.fullmatch(r"(\d{4})", text, re.ASCII):
            start, end = dt.date(int(mt[1]), 1, 1), dt.date(int(mt[1]), 12, 31)
        elif mt := re.fullmatch(r"(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})", text, re.ASCII):
            start, end = dt.date.fromisoformat(mt[1]), dt.date.fromisoformat(mt[2])
            if end < start:
                raise AssessmentError(f"period {text!r} ends before it starts")
            if (end - start).days > 366:
                raise AssessmentError(f"period {text!r} is longer than a year")
        else:
            raise AssessmentError(
                f"period {text!r}: write 2026-Q4, 2026-11, 2026-W48, 2026 or 2026-10-01..2026-12-31"
            )
    except ValueError as exc:
        if isinstance(exc, AssessmentError):
            raise
        raise AssessmentError(f"period {text!r}: {exc}") from None
    if not (start.year >= MIN_YEAR and end.year <= MAX_YEAR):
        raise AssessmentError(f"period {text!r}: years {MIN_YEAR}..{MAX_YEAR}")
    return Period(_canonical(start, end) or text, start, end)


def _canonical(start: dt.date, end: dt.date) -> str | None:
    """The short label of a span that is a whole quarter, month, ISO week or year (so that
    ``2026-10-01..2026-12-31`` is the same period as ``2026-Q4``, never a second one)."""
    one = dt.timedelta(days=1)
    if start == dt.date(start.year, 1, 1) and end == dt.date(start.year, 12, 31):
        return f"{start.year}"
    if start.day == 1 and start.month % 3 == 1:
        q_end = dt.date(start.year + (start.month == 10), (start.month + 2) % 12 + 1, 1) - one
        if end == q_end:
            return f"{start.year}-Q{(start.month - 1) // 3 + 1}"
    if start.day == 1 and end == (start + dt.timedelta(days=32)).replace(day=1) - one:
        return f"{start.year}-{start.month:02d}"
    if start.isoweekday() == 1 and end == start + dt.timedelta(days=6):
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    return None


@dataclass(slots=True)
class Facts:
    """Everything a period's measures are computed from."""

    alerts: list[m.AlertFacts]
    communities: dict[str, m.CommunityFacts]
    #: Per community, its windows by who held it ("" = no company: the committee).
    holders: dict[str, list[tuple[str, m.Window]]]
    names: dict[str, str]
    #: English names where the registry gives them (reports in English).
    names_en: dict[str, str] = field(default_factory=dict)


async def load_facts(
    session: AsyncSession,
    districts: Sequence[str],
    period: Period,
    *,
    tz: ZoneInfo = SHANGHAI,
    maintenance_days: int = 15,
) -> Facts:
    """The alerts, devices, dates and contract windows of ``districts`` for ``period``."""
    start_t, end_t = period.ms(tz)
    coms = (
        await session.scalars(
            select(models.Community).where(models.Community.district.in_(districts))
        )
    ).all()
    ids = [c.id for c in coms]
    orgs = (await session.scalars(select(models.Organisation))).all()
    names = {o.id: o.name for o in orgs} | {c.id: c.name for c in coms}
    names_en = {o.id: o.name_en for o in orgs if o.name_en} | {
        c.id: c.name_en for c in coms if c.name_en}  # fmt: skip
    by_com: dict[str, list[tuple[str, str]]] = {}
    for cid, dev, kind in await session.execute(
        select(models.Device.community_id, models.Device.id, models.Device.kind).where(
            models.Device.community_id.in_(ids)
        )
    ):
        by_com.setdefault(cid, []).append((dev, kind))
    gws: dict[str, list[str]] = {}
    for cid, gw in await session.execute(
        select(models.Gateway.community_id, models.Gateway.id).where(
            models.Gateway.community_id.in_(ids)
        )
    ):
        gws.setdefault(cid, []).append(gw)
    visits: dict[tuple[str, str], list[dt.date]] = {}
    for cid, dev, day in await session.execute(
        select(
            models.MaintenanceRecord.community_id,
            models.MaintenanceRecord.device,
            models.MaintenanceRecord.day,
        ).where(
            models.MaintenanceRecord.community_id.in_(ids),
            models.MaintenanceRecord.day <= period.end,
        )
    ):
        visits.setdefault((cid, dev), []).append(day)
    due = select(models.Inspection).where(models.Inspection.community_id.in_(ids))
    nexts = {(i.community_id, i.device): i.next_date for i in (await session.scalars(due)).all()}
    communities: dict[str, m.CommunityFacts] = {}
    for c in coms:
        mine = by_com.get(c.id, [])
        els = tuple(d for d, kind in mine if kind == "elevator")
        communities[c.id] = m.CommunityFacts(
            id=c.id,
            arrival_deadline_min=c.arrival_deadline_min,
            maintenance_days=maintenance_days,
            elevators=els,
            devices=tuple(d for d, _ in mine),
            gateways=tuple(gws.get(c.id, ())),
            maintenance={e: visits.get((c.id, e), []) for e in els},
            next_inspection={e: nexts[(c.id, e)] for e in els if (c.id, e) in nexts},
        )
    terms: dict[str, list[ContractTerm]] = {}
    for k in (
        await session.scalars(select(models.Contract).where(models.Contract.community_id.in_(ids)))
    ).all():
        terms.setdefault(k.community_id, []).append(ContractTerm(k.company_id, k.start, k.end))
    holders: dict[str, list[tuple[str, m.Window]]] = {}
    for c in coms:
        facts = RoutingFacts(
            c.id,
            committee=c.committee_id,
            street_office=c.street_office_id,
            district=c.district,
            contracts=tuple(terms.get(c.id, ())),
        )
        holders[c.id] = _windows(c.id, facts, period, tz)
    # Alerts that could touch the period: opened before its end and still running or
    # changed after its start (a device offline since before the period counts for its
    # availability).
    where = (
        models.Alert.community_id.in_(ids),
        models.Alert.opened_t < end_t,
        (models.Alert.updated_t >= start_t)
        | models.Alert.state.in_(("open", "acknowledged", "on_site")),
    )
    return Facts(await _alert_facts(session, where), communities, holders, names, names_en)


def _windows(
    community: str, facts: RoutingFacts, period: Period, tz: ZoneInfo
) -> list[tuple[str, m.Window]]:
    """Runs of consecutive days held by one company (``""``: none)."""
    out: list[tuple[str, m.Window]] = []
    one = dt.timedelta(days=1)
    run_start, holder = period.start, company_on(facts, period.start) or ""
    day = period.start + one
    while True:
        who = (company_on(facts, day) or "") if day <= period.end else None
        if who != holder:
            window = m.Window(
                community, _day_ms(run_start, tz), _day_ms(day, tz), run_start, day - one
            )
            out.append((holder, window))
            if who is None:
                return out
            run_start, holder = day, who
        day += one


async def _alert_facts(session: AsyncSession, where: Sequence[Any]) -> list[m.AlertFacts]:
    """The facts of the alerts matching ``where``, each with its timeline, escalations,
    accident and rescue records (one query per table, as tuples: tens of thousands of
    alerts load in a second or two)."""
    chosen = select(models.Alert.id).where(*where)
    A, T, R = models.Alert, models.AlertTransition, models.AlertRecipient  # noqa: N806
    steps: dict[int, list[tuple[int, str, str]]] = {}
    for aid, t, to, by in await session.execute(
        select(T.alert_id, T.t, T.to_state, T.by).where(T.alert_id.in_(chosen)).order_by(T.t, T.id)
    ):
        steps.setdefault(aid, []).append((t, to, by))
    escalated: dict[int, set[str]] = {}
    for aid, role in await session.execute(
        select(R.alert_id, R.role).where(R.alert_id.in_(chosen), R.step != "first")
    ):
        escalated.setdefault(aid, set()).add(role)
    accidents = set(
        (
            await session.scalars(
                select(models.AccidentRecord.alert_id).where(
                    models.AccidentRecord.alert_id.in_(chosen)
                )
            )
        ).all()
    )
    rescues = {
        rr.alert_id: rr
        for rr in (
            await session.scalars(
                select(models.RescueRecord).where(models.RescueRecord.alert_id.in_(chosen))
            )
        ).all()
    }
    out: list[m.AlertFacts] = []
    rows = (
        await session.execute(
            select(A.id, A.rule, A.severity, A.community_id, A.device, A.opened_t)
            .where(*where)
            .order_by(A.id)
        )
    ).all()
    for aid, rule, severity, community, device, opened_t in rows:
        timeline = steps.get(aid, [])
        responded = next(
            (t for t, to, by in timeline if by != SYSTEM and to in _PERSON_STEPS), None
        )
        on_site = next((t for t, to, _ in timeline if to == "on_site"), None)
        ended = next((t for t, to, _ in timeline if to in _END_STATES), None)
        record = rescues.get(aid)
        out.append(
            m.AlertFacts(
                id=aid,
                rule=rule,
                severity=severity,
                community=community,
                device=device,
                opened_t=opened_t,
                responded_t=responded,
                on_site_t=on_site,
                ended_t=ended,
                false_alarm=any(to == "false_alarm" for _, to, _ in timeline),
                escalated_to=frozenset(escalated.get(aid, ())),
                accident=aid in accidents,
                rescue=None
                if record is None
                else m.RescueFacts(
                    record.arrival_t,
                    record.released_by,
                    record.method,
                    record.entered_t,
                    record.late,
                    record.released_t,
                ),
            )
        )
    return out


def ensure_started(period: Period, now_t: int, tz: ZoneInfo = SHANGHAI) -> None:
    """AssessmentError for a period that has not started (there is no data to report)."""
    if _today(now_t, tz) < period.start:
        raise AssessmentError(f"period {period.label} has not started: there is no data")


def _today(now_t: int, tz: ZoneInfo) -> dt.date:
    return dt.datetime.fromtimestamp(now_t / 1000, tz).date()


def assess(
    table: CityTable,
    period: Period,
    facts: Facts,
    *,
    now_t: int,
    tz: ZoneInfo = SHANGHAI,
    findings: Mapping[str, Sequence[tuple[str, float, str]]] | None = None,
    history: Sequence[Mapping[str, int]] = (),
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The assessment body: measures per community and per company, each company's score,
    grade, rank and flags (``history``: ranks of the earlier signed periods, newest first)."""
    today = _today(now_t, tz)
    by_com: dict[str, list[m.AlertFacts]] = {}
    for a in facts.alerts:
        by_com.setdefault(a.community, []).append(a)
    communities = community_body(period, facts, now_t=now_t, tz=tz)["communities"]
    company_windows: dict[str, list[m.Window]] = {}
    for held in facts.holders.values():
        for who, w in held:
            if who:
                company_windows.setdefault(who, []).append(w)
    scores = []
    company_measures: dict[str, dict[str, m.Measure]] = {}
    for i, (company, windows) in enumerate(sorted(company_windows.items()), 1):
        if progress is not None:
            progress(i, len(company_windows))
        alerts = [a for cid in {w.community for w in windows} for a in by_com.get(cid, [])]
        got = m.compute(alerts, facts.communities, windows, today=today, now_t=now_t)
        company_measures[company] = got
        scores.append(score(table, company, got, (findings or {}).get(company, ())))
    ranked = rank(table, scores, history)
    companies = {}
    for s in ranked:
        windows = company_windows[s.company]
        companies[s.company] = {
            "name": facts.names.get(s.company, s.company),
            "name_en": facts.names_en.get(s.company, s.company),
            "score": s.score,
            "grade": s.grade,
            "rank": s.rank,
            "flags": s.flags,
            "communities": sorted({w.community for w in windows}),
            "days": sum(max(0, (min(w.last_day, today) - w.first_day).days + 1) for w in windows),
            "lines": [
                {
                    "kind": ln.kind,
                    "item": ln.item,
                    "measure": ln.measure,
                    "value": ln.value,
                    "points": ln.points,
                    "evidence": list(ln.evidence),
                }
                for ln in s.lines
            ],
            "measures": {k: v.as_json() for k, v in company_measures[s.company].items()},
            "alerts_by_rule": m.alerts_by_rule(
                [a for cid in {w.community for w in windows} for a in by_com.get(cid, [])],
                windows,
            ),
        }
    return {
        "table": table.id,
        "table_name": table.name,
        "table_name_en": table.name_en or table.name,
        "period": period.label,
        "start": period.start.isoformat(),
        "end": period.end.isoformat(),
        "ranked": len(ranked),
        "companies": companies,
        "communities": communities,
    }


def assessment_json(row: models.Assessment) -> dict[str, Any]:
    """A stored assessment with its version, state and signature, as the API, the CLI and
    the reports show it."""
    body: dict[str, Any] = json.loads(row.body)
    return body | {
        "version": row.version,
        "state": row.state,
        "signed_by": row.signed_by,
        "signed_t": row.signed_t,
        "computed_by": row.computed_by,
        "computed_t": row.computed_t,
        "reason": row.reason,
        "rules_digest": row.rules_digest,
    }


async def _history(
    session: AsyncSession, table: CityTable, before: dt.date, n: int
) -> list[dict[str, int]]:
    """Ranks of the ``n`` signed periods of ``table`` ending before ``before``, newest first."""
    rows = (
        await session.scalars(
            select(models.Assessment)
            .where(
                models.Assessment.table_id == table.id,
                models.Assessment.state == "signed",
                models.Assessment.end < before,
            )
            .order_by(models.Assessment.end.desc())
        )
    ).all()
    out: list[dict[str, int]] = []
    seen: set[str] = set()
    for row in rows:
        if row.period in seen:
            continue
        seen.add(row.period)
        body = json.loads(row.body)
        ranks = {c: v["rank"] for c, v in body["companies"].items()}
        ranks[""] = body["ranked"]
        out.append(ranks)
        if len(out) == n:
            break
    return out


async def _findings(
    session: AsyncSession, table: CityTable, period: Period
) -> dict[str, list[tuple[str, float, str]]]:
    out: dict[str, list[tuple[str, float, str]]] = {}
    for f in (
        await session.scalars(
            select(models.Finding)
            .where(
                models.Finding.table_id == table.id,
                models.Finding.day >= period.start,
                models.Finding.day <= period.end,
            )
            .order_by(models.Finding.id)
        )
    ).all():
        if f.company_id:
            out.setdefault(f.company_id, []).append((f.item, f.points, f"f:{f.id}"))
    return out


async def compute_assessment(
    session: AsyncSession,
    table: CityTable,
    period: Period,
    *,
    by: str,
    now_t: int,
    tz: ZoneInfo = SHANGHAI,
    maintenance_days: int = 15,
    correction: str | None = None,
    progress: Progress | None = None,
) -> models.Assessment:
    """The period's current assessment. A signed one is returned as it was signed (frozen)
    unless ``correction`` (a reason) asks for a new version; an unsigned one is recomputed
    in place. AssessmentError for a period that has not started or a correction of nothing."""
    ensure_started(period, now_t, tz)
    rows = (
        await session.scalars(
            select(models.Assessment)
            .where(models.Assessment.table_id == table.id, models.Assessment.period == period.label)
            .order_by(models.Assessment.version.desc())
        )
    ).all()
    latest = rows[0] if rows else None
    if latest is not None and latest.state == "signed" and correction is None:
        return latest
    if correction is not None and (latest is None or latest.state != "signed"):
        raise AssessmentError(f"{table.id} {period.label} has no signed version to correct")
    need = table.ranking.consecutive - 1 if table.ranking else 0
    facts = await load_facts(
        session, table.districts, period, tz=tz, maintenance_days=maintenance_days
    )
    body = assess(
        table,
        period,
        facts,
        now_t=now_t,
        tz=tz,
        findings=await _findings(session, table, period),
        history=await _history(session, table, period.start, need),
        progress=progress,
    )
    text = json.dumps(body, ensure_ascii=False, sort_keys=True)
    if latest is not None and latest.state == "computed":
        latest.body, latest.computed_t, latest.computed_by = text, now_t, by
        latest.rules_digest = table_digest(table)
        return latest
    version = (latest.version + 1) if latest is not None else 1
    if latest is not None:
        latest.state = "superseded"
    row = models.Assessment(
        table_id=table.id,
        period=period.label,
        start=period.start,
        end=period.end,
        version=version,
        state="computed",
        rules_digest=table_digest(table),
        body=text,
        computed_t=now_t,
        computed_by=by,
        reason=correction or "",
    )
    session.add(row)
    await session.flush()
    return row


async def sign_assessment(
    session: AsyncSession, table: CityTable, period: Period, *, org: str, now_t: int
) -> models.Assessment:
    """Sign the period's computed version off as organisation ``org`` (its kind must be in
    the table's ``signed_by`` and its district one of the table's)."""
    who = await session.get(models.Organisation, org)
    if who is None or who.kind not in table.signed_by:
        kinds = ", ".join(table.signed_by)
        raise AssessmentError(f"{org} may not sign {table.id} assessments: signed by {kinds}")
    if who.district not in table.districts and who.kind == "housing_bureau":
        raise AssessmentError(f"{org} is not a housing bureau of {', '.join(table.districts)}")
    if who.kind == "street_office":
        count = await session.scalar(
            select(func.count())
            .select_from(models.Community)
            .where(
                models.Community.street_office_id == org,
                models.Community.district.in_(table.districts),
            )
        )
        if not count:
            raise AssessmentError(f"{org} has no community under {table.id}")
    row = await session.scalar(
        select(models.Assessment).where(
            models.Assessment.table_id == table.id,
            models.Assessment.period == period.label,
            models.Assessment.state == "computed",
        )
    )
    if row is None:
        signed = await session.scalar(select(models.Assessment).where(
            models.Assessment.table_id == table.id, models.Assessment.period == period.label,
            models.Assessment.state == "signed"))  # fmt: skip
        if signed is not None:
            raise AssessmentError(
                f"{table.id} {period.label} version {signed.version} is already signed by "
                f"{signed.signed_by}; a change is a correction"
            )
        raise AssessmentError(f"{table.id} {period.label}: nothing computed to sign")
    row.state, row.signed_t, row.signed_by = "signed", now_t, org
    return row


async def communities_of(
    session: AsyncSession, org: models.Organisation | None, period: Period
) -> list[str]:
    """The communities an organisation's reports cover: a street office's street, a housing
    bureau's district, a committee's community, the communities a company held on any day
    of ``period``; every community for the operator (``org`` None)."""
    query = select(models.Community.id).order_by(models.Community.id)
    if org is None:
        return list((await session.scalars(query)).all())
    if org.kind == "street_office":
        query = query.where(models.Community.street_office_id == org.id)
    elif org.kind == "housing_bureau":
        query = query.where(models.Community.district == org.district)
    elif org.kind == "community_committee":
        query = query.where(models.Community.committee_id == org.id)
    elif org.kind == "property_company":
        held = select(models.Contract.community_id).where(
            models.Contract.company_id == org.id,
            models.Contract.start <= period.end,
            (models.Contract.end.is_(None)) | (models.Contract.end >= period.start),
        )
        query = query.where(models.Community.id.in_(held))
    else:
        raise AssessmentError(f"{org.id} ({org.kind}) has no reports of communities")
    return list((await session.scalars(query)).all())


async def ledger_rows(
    session: AsyncSession, communities: Sequence[str], period: Period, *, tz: ZoneInfo = SHANGHAI
) -> list[dict[str, Any]]:
    """Every alert raised in ``period`` in ``communities``, oldest first, with its timeline
    (each step: time, state, who, and for an escalation whom it reached), the organisation
    that answered first, and a trapped passenger's rescue record."""
    start_t, end_t = period.ms(tz)
    where = (
        models.Alert.community_id.in_(communities),
        models.Alert.opened_t >= start_t,
        models.Alert.opened_t < end_t,
    )
    chosen = select(models.Alert.id).where(*where)
    query = select(models.Alert).where(*where)
    rows = (await session.scalars(query.order_by(models.Alert.opened_t, models.Alert.id))).all()
    facts = {f.id: f for f in await _alert_facts(session, where)}
    first = select(models.AlertRecipient.alert_id, models.AlertRecipient.org_id).where(
        models.AlertRecipient.alert_id.in_(chosen),
        models.AlertRecipient.step == "first",
        models.AlertRecipient.role.in_(("company", "community_committee")),
    )
    holders: dict[int, str] = dict((await session.execute(first)).all())
    steps: dict[int, list[dict[str, Any]]] = {}
    T = models.AlertTransition  # noqa: N806
    for aid, t, to, by, note in await session.execute(
        select(T.alert_id, T.t, T.to_state, T.by, T.note)
        .where(T.alert_id.in_(chosen))
        .order_by(T.t, T.id)
    ):
        steps.setdefault(aid, []).append({"t": t, "to": to, "by": by, "note": note})
    out = []
    for r in rows:
        f = facts[r.id]
        rescue = f.rescue
        out.append({
            "id": r.id, "community": r.community_id, "device": r.device, "rule": r.rule,
            "severity": r.severity, "opened_t": r.opened_t, "responded_t": f.responded_t,
            "on_site_t": f.on_site_t, "ended_t": f.ended_t, "state": r.state,
            "holder": holders.get(r.id), "timeline": steps.get(r.id, []),
            "rescue_arrival_t": rescue.arrival_t if rescue else None,
            "released_by": rescue.released_by if rescue else None,
            "method": rescue.method if rescue else None,
        })  # fmt: skip
    return out


def community_body(
    period: Period,
    facts: Facts,
    *,
    now_t: int,
    tz: ZoneInfo = SHANGHAI,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Measures of each community alone (the progress table), without scoring."""
    today = _today(now_t, tz)
    out: dict[str, Any] = {}
    by_com: dict[str, list[m.AlertFacts]] = {}
    for a in facts.alerts:
        by_com.setdefault(a.community, []).append(a)
    for i, (cid, held) in enumerate(facts.holders.items(), 1):
        if progress is not None:
            progress(i, len(facts.holders))
        whole = m.Window(cid, *period.ms(tz), period.start, period.end)
        mine = by_com.get(cid, [])
        got = m.compute(mine, facts.communities, [whole], today=today, now_t=now_t)
        out[cid] = {
            "name": facts.names.get(cid, cid),
            "name_en": facts.names_en.get(cid, cid),
            "held_by": [
                {
                    "company": who or None,
                    "from": w.first_day.isoformat(),
                    "to": min(w.last_day, today).isoformat(),
                }
                for who, w in held
            ],
            "measures": {k: v.as_json() for k, v in got.items()},
            "alerts_by_rule": m.alerts_by_rule(mine, [whole]),
        }
    return {
        "period": period.label,
        "start": period.start.isoformat(),
        "end": period.end.isoformat(),
        "communities": out,
    }
