"""The compliance API (issue 15), per organisation (``Authorization: Bearer <token>``).

    GET  /api/compliance/tables                          the city tables (public rules)
    GET  /api/compliance/measures?period=P&community=C   a community's measures, or
         /api/compliance/measures?period=P&company=X     a company's (its days only)
    GET  /api/compliance/assessments/{table}/{period}    the current version
    POST /api/compliance/assessments/{table}/{period}    compute; {"correction": reason}
                                                         makes a new version of a signed one
    POST /api/compliance/assessments/{table}/{period}/sign   sign off (table's signed_by)
    GET  /api/compliance/reports/{report}?period=P&table=T|org=O&format=F&lang=L
                                                         assessment, ranking, ledger, progress
    POST /api/compliance/rescue/{id}                  a trapped alert's rescue record
    POST /api/compliance/inspections                     inspection results: one (JSON) or a
                                                         CSV/XLSX file, all rows or none
    POST /api/compliance/meetings                        {"community", "day"}: a meeting held
    POST /api/compliance/findings                        an on-site finding (multipart, photo)
    GET  /api/compliance/dossier/{community}             the spot-check dossier's data
    GET  /dossier/{community}#token=…                    the dossier page (phone-sized)

Who may do what is in docs/compliance.md. Something the caller may not see answers 404
worded as a missing one; something it sees but may not do answers 403 saying who may.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import hashlib
import io
import json
import math
import re
import zipfile
from pathlib import Path
from typing import Any, Final, Literal, cast

import msgspec
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from openpyxl import load_workbook
from openpyxl.utils.exceptions import InvalidFileException
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from alerts.lifecycle import OPEN_STATES
from alerts.routing import CommunityFacts, ContractTerm, company_on
from server.compliance import measures as m
from server.compliance.build import REPORTS, NotComputedError, Report, build_report
from server.compliance.citytable import CityTable
from server.compliance.reports import (
    CONTENT_TYPES,
    FORMATS,
    Format,
    Lang,
    ReportError,
    render,
    render_pdf,
    to_html,
)
from server.compliance.store import (
    AssessmentError,
    Period,
    assessment_json,
    communities_of,
    community_body,
    compute_assessment,
    load_facts,
    parse_period,
    sign_assessment,
)
from server.keys import ALERTS, COMPLIANCE_TABLES, DATABASE, LIVE, SETTINGS
from server.store import audit, models
from server.web.auth import Caller, caller_of, scoped
from server.web.http_json import json_error, path_id

__all__ = ["add_compliance_routes"]

RESULTS: Final = {
    "passed": "passed",
    "合格": "passed",
    "failed": "failed",
    "不合格": "failed",
    "conditional": "conditional",
    "复检合格": "conditional",
}
MAX_ROWS: Final = 5000
#: An inspection result may be entered this many days after the inspection at most.
INSPECTION_BACKDATE_DAYS: Final = 800
MAX_TEXT: Final = 2000
PHOTO_TYPES: Final = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}
GOVERNMENT: Final = frozenset({"housing_bureau", "street_office"})
#: A finding or meeting may be recorded this many days late at most.
RECORD_BACKDATE_DAYS: Final = 400
_ISO_DAY: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _bad(message: str) -> web.HTTPError:
    return json_error(web.HTTPBadRequest, message)


def _now(request: web.Request) -> int:
    return request.app[ALERTS].clock()


def _today(request: web.Request) -> dt.date:
    alerts = request.app[ALERTS]
    return dt.datetime.fromtimestamp(alerts.clock() / 1000, alerts.tz).date()


def _period(request: web.Request, value: str | None = None) -> Period:
    text = value if value is not None else request.query.get("period")
    if not text:
        raise _bad("query parameter period is required (2026-Q4, 2026-11, 2026-W48, …)")
    try:
        return parse_period(text)
    except AssessmentError as exc:
        raise _bad(str(exc)) from None


def _table(request: web.Request, name: str | None) -> CityTable:
    tables = request.app[COMPLIANCE_TABLES]
    if not name:
        raise _bad(f"table is required: one of {', '.join(sorted(tables))}")
    if name not in tables:
        raise json_error(web.HTTPNotFound, f"no city table {name!r}")
    return tables[name]


async def _org(session: AsyncSession, caller: Caller) -> models.Organisation | None:
    return None if caller.org is None else await session.get(models.Organisation, caller.org)


async def _in_districts(
    session: AsyncSession, org: models.Organisation, districts: list[str]
) -> bool:
    """A bureau of one of ``districts``, or a street office with a community in one."""
    if org.kind == "housing_bureau":
        return org.district in districts
    if org.kind == "street_office":
        n = await session.scalar(
            select(func.count())
            .select_from(models.Community)
            .where(
                models.Community.street_office_id == org.id,
                models.Community.district.in_(districts),
            )
        )
        return bool(n)
    return False


async def _company_of(session: AsyncSession, community: str, day: dt.date) -> str | None:
    rows = (
        await session.scalars(
            select(models.Contract).where(models.Contract.community_id == community)
        )
    ).all()
    facts = CommunityFacts(
        community, "", "", "", tuple(ContractTerm(c.company_id, c.start, c.end) for c in rows)
    )
    return company_on(facts, day)


# --- tables and measures ------------------------------------------------------------------


@scoped
async def list_tables(request: web.Request) -> web.Response:
    """The city tables: who they apply to, their rules (they are public)."""
    tables = request.app[COMPLIANCE_TABLES]
    return web.json_response([msgspec.to_builtins(t) for t in tables.values()])


@scoped
async def get_measures(request: web.Request) -> web.Response:
    """A community's or a company's measures for a period, with their evidence."""
    caller = caller_of(request)
    period = _period(request)
    community, company = request.query.get("community"), request.query.get("company")
    if (community is None) == (company is None):
        raise _bad("give exactly one of community or company")
    alerts = request.app[ALERTS]
    async with request.app[DATABASE].session() as session:
        if community is not None:
            row = await session.get(models.Community, community)
            if row is None or not caller.scope.whole(community):
                raise json_error(web.HTTPNotFound, f"no community {community!r}")
            facts = await load_facts(session, [row.district], period, tz=alerts.tz)
            facts.holders = {community: facts.holders[community]}
            body = community_body(period, facts, now_t=_now(request), tz=alerts.tz)
            return web.json_response(body["communities"][community] | {"period": period.label})
        assert company is not None
        org = await session.get(models.Organisation, company)
        if org is None or org.kind != "property_company":
            raise json_error(web.HTTPNotFound, f"no company {company!r}")
        held = await communities_of(session, org, period)
        if caller.org != company:
            held = [c for c in held if caller.scope.whole(c)]
        if not held:
            raise json_error(web.HTTPNotFound, f"no company {company!r}")
        districts = sorted(
            set(
                (
                    await session.scalars(
                        select(models.Community.district).where(models.Community.id.in_(held))
                    )
                ).all()
            )
        )
        facts = await load_facts(session, districts, period, tz=alerts.tz)
    windows = [w for cid in held for who, w in facts.holders.get(cid, []) if who == company]
    today = _today(request)
    got = m.compute(
        [a for a in facts.alerts if a.community in held],
        facts.communities,
        windows,
        today=today,
        now_t=_now(request),
    )
    return web.json_response(
        {
            "company": company,
            "period": period.label,
            "communities": held,
            "measures": {k: v.as_json() for k, v in got.items()},
        }
    )


# --- assessments --------------------------------------------------------------------------


async def _assessment_row(
    session: AsyncSession, table: CityTable, period: Period
) -> models.Assessment | None:
    return await session.scalar(
        select(models.Assessment).where(
            models.Assessment.table_id == table.id,
            models.Assessment.period == period.label,
            models.Assessment.state != "superseded",
        )
    )


def _view(row: models.Assessment, caller: Caller, full: bool) -> dict[str, Any]:
    body = assessment_json(row)
    if not full:
        mine = body["companies"].get(caller.org or "")
        body["companies"] = {caller.org: mine} if mine else {}
        body["communities"] = {}
    return body


async def _reader(session: AsyncSession, caller: Caller, table: CityTable) -> bool:
    """True: the whole assessment; False: the company's own entry; 403 otherwise."""
    org = await _org(session, caller)
    if org is None or (
        org.kind in GOVERNMENT and await _in_districts(session, org, table.districts)
    ):
        return True
    if org.kind == "property_company":
        return False
    raise json_error(
        web.HTTPForbidden,
        f"{org.id} ({org.kind}) does not read {table.id} "
        "assessments: housing bureaux and street offices do, a company its own",
    )


@scoped
async def get_assessment(request: web.Request) -> web.Response:
    caller = caller_of(request)
    table = _table(request, request.match_info["table"])
    period = _period(request, request.match_info["period"])
    async with request.app[DATABASE].session() as session:
        full = await _reader(session, caller, table)
        row = await _assessment_row(session, table, period)
    if row is None:
        raise json_error(web.HTTPNotFound, f"{table.id} {period.label} has not been computed")
    return web.json_response(_view(row, caller, full))


class _ComputeRequest(msgspec.Struct, forbid_unknown_fields=True):
    correction: str | None = None


@scoped
async def post_assessment(request: web.Request) -> web.Response:
    """Compute the period (housing bureau or street office of the table's districts, or the
    operator); a signed period comes back unchanged unless a correction reason is given."""
    caller = caller_of(request)
    table = _table(request, request.match_info["table"])
    period = _period(request, request.match_info["period"])
    raw = await request.read()
    try:
        req = msgspec.json.decode(raw or b"{}", type=_ComputeRequest)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _bad(f"assessment: {exc}") from None
    if req.correction is not None and not 0 < len(req.correction.strip()) <= MAX_TEXT:
        raise _bad(f"correction: a reason of 1..{MAX_TEXT} characters")
    alerts = request.app[ALERTS]
    async with request.app[DATABASE].session(write=True) as session:
        org = await _org(session, caller)
        if org is not None and not (
            org.kind in GOVERNMENT and await _in_districts(session, org, table.districts)
        ):
            raise json_error(
                web.HTTPForbidden,
                f"{org.id} may not compute {table.id} "
                "assessments: its housing bureau or street offices do",
            )
        try:
            row = await compute_assessment(
                session,
                table,
                period,
                by=caller.actor,
                now_t=_now(request),
                tz=alerts.tz,
                correction=req.correction,
            )
        except AssessmentError as exc:
            raise json_error(web.HTTPConflict, str(exc)) from None
        if req.correction is not None:
            audit.record(
                session,
                actor=caller.actor,
                address=request.remote or "unknown",
                action="assessment_correct",
                target=f"{table.id}/{period.label}/v{row.version}",
                detail={"reason": req.correction},
            )
        await session.flush()
        body = _view(row, caller, True)
    return web.json_response(body)


@scoped
async def post_sign(request: web.Request) -> web.Response:
    caller = caller_of(request)
    table = _table(request, request.match_info["table"])
    period = _period(request, request.match_info["period"])
    if caller.org is None:
        raise json_error(
            web.HTTPForbidden,
            "a period is signed off by an organisation "
            f"({', '.join(table.signed_by)}), not the operator",
        )
    async with request.app[DATABASE].session(write=True) as session:
        try:
            row = await sign_assessment(session, table, period, org=caller.org, now_t=_now(request))
        except AssessmentError as exc:
            conflict = "nothing computed" in str(exc) or "already" in str(exc)
            status = web.HTTPConflict if conflict else web.HTTPForbidden
            raise json_error(status, str(exc)) from None
        audit.record(
            session,
            actor=caller.actor,
            address=request.remote or "unknown",
            action="assessment_sign",
            target=f"{table.id}/{period.label}/v{row.version}",
        )
        body = _view(row, caller, True)
    return web.json_response(body)


# --- reports ------------------------------------------------------------------------------


@scoped
async def get_report(request: web.Request) -> web.Response:
    caller = caller_of(request)
    kind = request.match_info["report"]
    if kind not in REPORTS:
        raise json_error(
            web.HTTPNotFound, f"no report {kind!r}: assessment, ranking, ledger, progress"
        )
    fmt = request.query.get("format", "xlsx")
    lang = request.query.get("lang", "zh")
    if fmt not in FORMATS:
        raise _bad(f"format: one of {', '.join(FORMATS)}")
    if lang not in ("zh", "en"):
        raise _bad("lang: zh or en")
    period = _period(request)
    alerts = request.app[ALERTS]
    table, org = None, None
    async with request.app[DATABASE].session() as session:
        if kind in ("assessment", "ranking"):
            table = _table(request, request.query.get("table"))
            if not await _reader(session, caller, table):
                raise json_error(
                    web.HTTPForbidden,
                    "a company reads its own assessment at "
                    f"/api/compliance/assessments/{table.id}/{period.label}",
                )
        else:
            org = await _org(session, caller)
            wanted = request.query.get("org")
            if org is None and wanted:
                org = await session.get(models.Organisation, wanted)
                if org is None:
                    raise json_error(web.HTTPNotFound, f"no organisation {wanted!r}")
        try:
            built = await build_report(session, cast(Report, kind), period,
                                       lang=cast(Lang, lang), tz=alerts.tz,
                                       now_t=_now(request), table=table, org=org)  # fmt: skip
        except NotComputedError as exc:
            raise json_error(web.HTTPNotFound, str(exc)) from None
        except AssessmentError as exc:
            status = web.HTTPConflict if "not started" in str(exc) else web.HTTPForbidden
            raise json_error(status, str(exc)) from None
    title, sheets, body = built.title, built.sheets, built.body
    if fmt == "json":
        return web.json_response(body)
    try:
        data = (
            await render_pdf(to_html(title, sheets, cast(Lang, lang)))
            if fmt == "pdf"
            else render(cast(Format, fmt), title, sheets, cast(Lang, lang))
        )
    except ReportError as exc:
        raise json_error(web.HTTPServiceUnavailable, str(exc)) from None
    name = f"{kind}-{period.label}.{fmt}"
    return web.Response(
        body=data,
        headers={
            "Content-Type": CONTENT_TYPES[fmt],
            "Content-Disposition": f'attachment; filename="{name}"',
        },
    )


# --- records entered by organisations ------------------------------------------------------


class _Rescue(msgspec.Struct, forbid_unknown_fields=True):
    arrival_t: int
    released_by: str
    method: str
    released_t: int | None = None


@scoped
async def post_rescue(request: web.Request) -> web.Response:
    """The rescue record of a trapped alert, by the company or maintenance unit it was
    routed to; late when entered more than the table's ``rescue_record_hours`` after the
    alert ended."""
    caller = caller_of(request)
    alert_id = path_id(request, "alert")
    try:
        req = msgspec.json.decode(await request.read(), type=_Rescue)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _bad(f"rescue record: {exc}") from None
    for key in ("released_by", "method"):
        if not 0 < len(getattr(req, key).strip()) <= MAX_TEXT:
            raise _bad(f"{key}: 1..{MAX_TEXT} characters")
    now = _now(request)
    async with request.app[DATABASE].session(write=True) as session:
        alert = await session.get(models.Alert, alert_id)
        roles = (
            set()
            if alert is None or caller.org is None
            else set(
                (
                    await session.scalars(
                        select(models.AlertRecipient.role).where(
                            models.AlertRecipient.alert_id == alert_id,
                            models.AlertRecipient.org_id == caller.org,
                        )
                    )
                ).all()
            )
        )
        if alert is None or not (caller.operator or roles) or alert.rule != "trapped":
            raise json_error(web.HTTPNotFound, f"no trapped-passenger alert {alert_id}")
        if not roles & {"company", "maintenance_unit"}:
            raise json_error(
                web.HTTPForbidden,
                "the rescue record is entered by the company or "
                "the maintenance unit the alert went to",
            )
        if not alert.opened_t <= req.arrival_t <= now:
            raise _bad(
                f"arrival_t: {req.arrival_t} is not between the alert's opening "
                f"({alert.opened_t}) and now ({now}), in epoch ms"
            )
        if req.released_t is not None and not req.arrival_t <= req.released_t <= now:
            raise _bad("released_t: between arrival_t and now (epoch ms)")
        if await session.get(models.RescueRecord, alert_id) is not None:
            raise json_error(web.HTTPConflict, f"alert {alert_id} already has a rescue record")
        ended = await session.scalar(
            select(func.min(models.AlertTransition.t)).where(
                models.AlertTransition.alert_id == alert_id,
                models.AlertTransition.to_state.in_(("resolved", "false_alarm", "closed")),
            )
        )
        community = await session.get(models.Community, alert.community_id)
        hours = 24.0
        for table in request.app[COMPLIANCE_TABLES].values():
            if community is not None and community.district in table.districts:
                hours = table.rescue_record_hours
        late = ended is not None and now - ended > hours * 3_600_000
        session.add(
            models.RescueRecord(
                alert_id=alert_id,
                arrival_t=req.arrival_t,
                released_t=req.released_t,
                released_by=req.released_by.strip(),
                method=req.method.strip(),
                entered_by=caller.actor,
                entered_t=now,
                late=late,
            )
        )
        audit.record(
            session,
            actor=caller.actor,
            address=request.remote or "unknown",
            action="rescue_record",
            target=f"alert/{alert_id}",
            detail={"arrival_t": req.arrival_t, "late": late},
        )
    return web.json_response(
        {
            "alert": alert_id,
            "arrival_t": req.arrival_t,
            "late": late,
            "entered_t": now,
            "entered_by": caller.actor,
        },
        status=201,
    )


_INSPECTION_KEYS: Final = ("community", "device", "day", "result", "certificate_no", "next_date")


def _rows_of(raw: bytes, content_type: str) -> list[tuple[str, dict[str, Any]]]:
    """Rows from a JSON object or list (``item N``), a CSV (UTF-8, header row) or an XLSX
    (first sheet, header row), each with where it is (``row N`` as the spreadsheet counts,
    the header being row 1); ValueError says what is wrong."""
    if content_type in ("application/json", ""):
        try:
            data = json.loads(raw or b"null")
        except ValueError as exc:
            raise ValueError(f"the body is not JSON ({exc})") from None
        data = [data] if isinstance(data, dict) else data
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError("a JSON object or a list of objects")
        return [(f"item {n}", r) for n, r in enumerate(data, 1)]
    if content_type == "text/csv":
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValueError("the CSV is not UTF-8 text (save it as CSV UTF-8)") from None
        reader = csv.DictReader(io.StringIO(text))
        return [(f"row {reader.line_num}", dict(r)) for r in reader]
    if content_type == CONTENT_TYPES["xlsx"]:
        book = load_workbook(io.BytesIO(raw), read_only=True, data_only=True)
        sheet = book.worksheets[0]
        values = [list(r) for r in sheet.iter_rows(values_only=True)]
        if not values:
            return []
        head = [str(h or "").strip() for h in values[0]]
        return [
            (f"row {n}", {h: v for h, v in zip(head, r, strict=False) if h})
            for n, r in enumerate(values[1:], 2)
            if any(v not in (None, "") for v in r)
        ]
    raise ValueError(f"Content-Type {content_type!r}: send application/json, text/csv or XLSX")


def _date(value: Any, key: str) -> dt.date:
    """A date cell: an XLSX date, or text written YYYY-MM-DD (nothing else)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = value.strip() if isinstance(value, str) else None
    if text is None or not _ISO_DAY.fullmatch(text):
        raise ValueError(f"{key}: {value!r} is not a date (YYYY-MM-DD)")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{key}: {value!r} is not a date (YYYY-MM-DD)") from None


def _inspection(
    row: dict[str, Any], today: dt.date
) -> tuple[str, str, dt.date, str, str, dt.date | None]:
    """One row's values; ValueError names the bad one."""
    community, device = str(row.get("community") or ""), str(row.get("device") or "")
    day = _date(row.get("day"), "day")
    result = RESULTS.get(str(row.get("result") or "").strip())
    if result is None:
        raise ValueError(f"result: {row.get('result')!r} is not one of {', '.join(RESULTS)}")
    nxt = _date(row["next_date"], "next_date") if row.get("next_date") else None
    if day > today:
        raise ValueError(f"day: {day} is in the future")
    if day < today - dt.timedelta(days=INSPECTION_BACKDATE_DAYS):
        raise ValueError(f"day: {day} is more than {INSPECTION_BACKDATE_DAYS} days ago")
    if nxt is not None and nxt <= day:
        raise ValueError(f"next_date: {nxt} is not after day {day}")
    cert = str(row.get("certificate_no") or "").strip()
    if len(cert) > 64:
        raise ValueError("certificate_no: longer than 64 characters")
    return community, device, day, result, cert, nxt


@scoped
async def post_inspections(request: web.Request) -> web.Response:
    """Periodic inspection results (定期检验). Every row is checked first; one bad row and
    nothing is stored (each bad row is named). Entered by the operator, market supervision
    of the district, the company serving the community or the elevator's maintenance unit.
    A row for a day already on record replaces it."""
    caller = caller_of(request)
    try:
        rows = _rows_of(await request.read(), request.content_type)
    except (ValueError, OSError) as exc:
        raise _bad(f"inspections: {exc}") from None
    except (zipfile.BadZipFile, InvalidFileException, KeyError, TypeError, IndexError) as exc:
        raise _bad(f"inspections: not a readable XLSX file ({type(exc).__name__})") from None
    if not rows:
        raise _bad("inspections: no rows")
    if len(rows) > MAX_ROWS:
        raise _bad(f"inspections: at most {MAX_ROWS} rows")
    today, now = _today(request), _now(request)
    problems: list[str] = []
    parsed: list[tuple[str, tuple[str, str, dt.date, str, str, dt.date | None]]] = []
    for where, row in rows:
        unknown = sorted(set(row) - set(_INSPECTION_KEYS))
        if unknown:
            problems.append(
                f"{where}: unknown column(s) {', '.join(map(str, unknown))}; "
                f"columns: {', '.join(_INSPECTION_KEYS)}"
            )
            continue
        try:
            parsed.append((where, _inspection(row, today)))
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    coms = sorted({p[0] for _, p in parsed})
    # Checked in a read transaction with one query per table; written in one short one.
    async with request.app[DATABASE].session() as session:
        org = await _org(session, caller)
        devices = {
            (d.community_id, d.id): d
            for d in (
                await session.scalars(
                    select(models.Device).where(models.Device.community_id.in_(coms))
                )
            ).all()
        }
        companies = {c: await _company_of(session, c, today) for c in coms}
    good: dict[tuple[str, str, dt.date], models.InspectionResult] = {}
    for where, (community, device, day, result, cert, nxt) in parsed:
        dev = devices.get((community, device))
        if dev is None or dev.kind != "elevator" or not caller.scope.device(community, device):
            problems.append(f"{where}: no elevator {device!r} in community {community!r}")
            continue
        allowed = (dev.maintenance_unit_id, companies[community])
        if org is not None and org.kind != "market_supervision" and org.id not in allowed:
            problems.append(
                f"{where}: {org.id} neither serves {community} nor maintains or supervises {device}"
            )
            continue
        good[community, device, day] = models.InspectionResult(
            community_id=community,
            device=device,
            day=day,
            result=result,
            certificate_no=cert,
            next_date=nxt,
            entered_by=caller.actor,
            entered_t=now,
        )
    if problems:
        problems.sort(key=lambda text: int(re.match(r"\w+ (\d+)", text)[1]))  # type: ignore[index]
        raise _bad(
            "inspections: nothing stored; "
            + "; ".join(problems[:50])
            + (f"; and {len(problems) - 50} more" if len(problems) > 50 else "")
        )
    replaced = 0
    async with request.app[DATABASE].session(write=True) as session:
        R = models.InspectionResult  # noqa: N806
        for old in (await session.scalars(select(R).where(R.community_id.in_(coms)))).all():
            if (old.community_id, old.device, old.day) in good:
                await session.delete(old)
                replaced += 1
        await session.flush()
        session.add_all(good.values())
        dues = {
            (i.community_id, i.device): i
            for i in (
                await session.scalars(
                    select(models.Inspection).where(models.Inspection.community_id.in_(coms))
                )
            ).all()
        }
        for rec in good.values():
            if rec.next_date is None:
                continue
            due = dues.get((rec.community_id, rec.device))
            if due is None:
                dues[rec.community_id, rec.device] = due = models.Inspection(
                    community_id=rec.community_id, device=rec.device, next_date=rec.next_date
                )
                session.add(due)
            elif due.next_date < rec.next_date:
                due.next_date = rec.next_date
        audit.record(
            session,
            actor=caller.actor,
            address=request.remote or "unknown",
            action="inspections",
            target=f"{len(good)} rows",
            detail={"replaced": replaced, "devices": sorted({f"{c}/{d}" for c, d, _ in good})},
        )
    pairs = sorted({(c, d) for c, d, _ in good})
    if len(pairs) > 20:
        await request.app[ALERTS].check_dates()  # every elevator at once
    else:
        for pair in pairs:
            await request.app[ALERTS].check_dates(only=pair)
    return web.json_response({"stored": len(good), "replaced": replaced}, status=201)


class _Meeting(msgspec.Struct, forbid_unknown_fields=True):
    community: str
    day: dt.date
    kind: Literal["three_party"] = "three_party"


@scoped
async def post_meeting(request: web.Request) -> web.Response:
    """A three-party meeting held (江山): by the committee, street office or company."""
    caller = caller_of(request)
    try:
        req = msgspec.json.decode(await request.read(), type=_Meeting)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _bad(f"meeting: {exc}") from None
    _recent_day(request, req.day.isoformat())
    async with request.app[DATABASE].session(write=True) as session:
        com = await session.get(models.Community, req.community)
        if com is None or not caller.scope.whole(req.community):
            raise json_error(web.HTTPNotFound, f"no community {req.community!r}")
        holder = await _company_of(session, req.community, req.day)
        if caller.org is not None and caller.org not in (
            com.committee_id,
            com.street_office_id,
            holder,
        ):
            raise json_error(web.HTTPForbidden, "a meeting is recorded by the community's "
                             "committee, its street office or the company serving it")  # fmt: skip
        exists = await session.scalar(
            select(models.MeetingRecord.id).where(
                models.MeetingRecord.community_id == req.community,
                models.MeetingRecord.day == req.day,
                models.MeetingRecord.kind == req.kind,
            )
        )
        if exists is not None:
            raise json_error(web.HTTPConflict, f"a meeting on {req.day} is already recorded")
        session.add(
            models.MeetingRecord(
                community_id=req.community,
                day=req.day,
                kind=req.kind,
                entered_by=caller.actor,
                entered_t=_now(request),
            )
        )
        audit.record(
            session,
            actor=caller.actor,
            address=request.remote or "unknown",
            action="meeting",
            target=req.community,
            detail={"day": req.day.isoformat()},
        )
    return web.json_response({"community": req.community, "day": req.day.isoformat()}, status=201)


async def _form(request: web.Request) -> tuple[dict[str, str], tuple[bytes, str] | None]:
    """A finding's form fields and its photo (bytes, type); ValueError says what is wrong."""
    fields: dict[str, str] = {}
    photo: tuple[bytes, str] | None = None
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None:
            raise ValueError("nested multipart is not accepted")
        if part.name == "photo":
            if photo is not None:
                raise ValueError("one photo per finding")
            kind = part.headers.get("Content-Type", "")
            if kind not in PHOTO_TYPES:
                raise ValueError(f"photo: {kind or 'no type'}; send {', '.join(PHOTO_TYPES)}")
            data = bytes(await part.read())
            if not _looks_like(kind, data):
                raise ValueError(f"photo: the bytes are not a {kind} picture")
            photo = (data, kind)
        elif part.name in fields:
            raise ValueError(f"field {part.name!r} given twice")
        elif part.name in ("community", "item", "points", "note", "day", "table"):
            fields[part.name] = (await part.text())[: MAX_TEXT + 1]
        else:
            raise ValueError(f"unknown field {part.name!r}")
    return fields, photo


_MAGIC: Final = {"image/jpeg": (b"\xff\xd8\xff",), "image/png": (b"\x89PNG\r\n\x1a\n",),
                 "image/webp": (b"RIFF",)}  # fmt: skip


def _looks_like(kind: str, data: bytes) -> bool:
    """The picture's own signature matches its declared type (a PNG's chunk after the
    signature must be IHDR; a WebP's RIFF header names WEBP)."""
    if not any(data.startswith(m) for m in _MAGIC[kind]):
        return False
    if kind == "image/png":
        return data[12:16] == b"IHDR"
    if kind == "image/webp":
        return data[8:12] == b"WEBP"
    return len(data) > 4


def _recent_day(request: web.Request, text: str | None) -> dt.date:
    """A day given as YYYY-MM-DD (default today): not in the future, not more than
    RECORD_BACKDATE_DAYS ago; 400 otherwise."""
    today = _today(request)
    if not text:
        return today
    if not _ISO_DAY.fullmatch(text):
        raise _bad(f"day: {text!r} is not a date (YYYY-MM-DD)")
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise _bad(f"day: {text!r} is not a date (YYYY-MM-DD)") from None
    if day > today:
        raise _bad(f"day: {day} is in the future")
    if day < today - dt.timedelta(days=RECORD_BACKDATE_DAYS):
        raise _bad(f"day: {day} is more than {RECORD_BACKDATE_DAYS} days ago")
    return day


def _store_photo(folder: Path, sha: str, data: bytes, suffix: str) -> None:
    """Write a photo once, named by its SHA-256 (a partial write never takes the name)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{sha}{suffix}"
    if not target.exists():
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(target)


@scoped
async def post_finding(request: web.Request) -> web.Response:
    """An on-site finding (multipart/form-data: community, item, points, note, day?, photo?)
    by a street office for a community of its street, or a housing bureau of the district;
    it feeds the score of the company serving the community that day."""
    caller = caller_of(request)
    if not request.content_type.startswith("multipart/"):
        raise _bad("findings: send multipart/form-data (community, item, points, note, photo)")
    try:
        fields, photo = await _form(request)
    except ValueError as exc:
        raise _bad(f"finding: {exc}") from None
    except HttpProcessingError:
        raise _bad("finding: the body is not valid multipart/form-data") from None
    try:
        points = float(fields.get("points", ""))
    except ValueError:
        raise _bad(f"points: {fields.get('points', '')!r} is not a number") from None
    if not math.isfinite(points):
        raise _bad("points: a finite number")
    day = _recent_day(request, fields.get("day"))
    if len(fields.get("note", "")) > MAX_TEXT:
        raise _bad(f"note: longer than {MAX_TEXT} characters")
    community, item = fields.get("community", ""), fields.get("item", "")
    async with request.app[DATABASE].session(write=True) as session:
        com = await session.get(models.Community, community)
        if com is None or not caller.scope.whole(community):
            raise json_error(web.HTTPNotFound, f"no community {community!r}")
        tables = [t for t in request.app[COMPLIANCE_TABLES].values() if com.district in t.districts]
        if not tables:
            raise json_error(web.HTTPConflict, f"no city table covers district {com.district}")
        wanted = fields.get("table")
        if wanted is not None and wanted not in {t.id for t in tables}:
            ids = ", ".join(t.id for t in tables)
            raise _bad(f"table: {wanted!r} does not cover {community}; tables: {ids}")
        table = next(t for t in tables if wanted in (None, t.id))
        org = await _org(session, caller)
        if (
            org is None
            or org.kind not in table.scored_by
            or (org.kind == "street_office" and com.street_office_id != org.id)
            or (org.kind == "housing_bureau" and org.district != com.district)
        ):
            raise json_error(
                web.HTTPForbidden,
                f"findings in {community} are recorded by "
                f"{', '.join(table.scored_by)} of its street or district",
            )
        items = {f.id: f for f in table.findings}
        if item not in items:
            raise _bad(f"item: {item!r} is not an item of {table.id}: {', '.join(items)}")
        if not 0 < points <= items[item].max:
            raise _bad(f"points: 0 < points <= {items[item].max} for {item}")
        sha = ""
        if photo is not None:
            data, kind = photo
            sha = hashlib.sha256(data).hexdigest()
            folder = Path(request.app[SETTINGS].evidence_dir)
            await asyncio.to_thread(_store_photo, folder, sha, data, PHOTO_TYPES[kind])
        row = models.Finding(
            community_id=community,
            company_id=await _company_of(session, community, day),
            table_id=table.id,
            item=item,
            points=points,
            note=fields.get("note", ""),
            photo_sha256=sha,
            day=day,
            by=caller.actor,
            t=_now(request),
        )
        session.add(row)
        await session.flush()
        audit.record(
            session,
            actor=caller.actor,
            address=request.remote or "unknown",
            action="finding",
            target=community,
            detail={"id": row.id, "item": item, "points": points, "photo": sha},
        )
        body = {
            "id": row.id,
            "community": community,
            "company": row.company_id,
            "table": table.id,
            "item": item,
            "points": points,
            "day": day.isoformat(),
            "photo_sha256": sha,
        }
    return web.json_response(body, status=201)


# --- the spot-check dossier ---------------------------------------------------------------


@scoped
async def get_dossier(request: web.Request) -> web.Response:
    """Everything an inspector needs on site for one community: devices and their live
    state, open and recent (30 days) alerts with timelines, maintenance and inspection
    status, findings, and the serving company's latest scores."""
    caller = caller_of(request)
    community = request.match_info["community"]
    now = _now(request)
    today = _today(request)
    live = request.app[LIVE]
    async with request.app[DATABASE].session() as session:
        com = await session.get(models.Community, community)
        if com is None or not caller.scope.whole(community):
            raise json_error(web.HTTPNotFound, f"no community {community!r}")
        company = await _company_of(session, community, today)
        names = {o.id: o.name for o in (await session.scalars(select(models.Organisation))).all()}
        devices = (
            await session.scalars(
                select(models.Device)
                .where(models.Device.community_id == community)
                .order_by(models.Device.id)
            )
        ).all()
        visits = (
            select(models.MaintenanceRecord.device, func.max(models.MaintenanceRecord.day))
            .where(models.MaintenanceRecord.community_id == community)
            .group_by(models.MaintenanceRecord.device)
        )
        last = dict((await session.execute(visits)).all())
        due = {
            i.device: i.next_date
            for i in (
                await session.scalars(
                    select(models.Inspection).where(models.Inspection.community_id == community)
                )
            ).all()
        }
        since = now - 30 * 86_400_000
        alerts = (
            await session.scalars(
                select(models.Alert)
                .where(
                    models.Alert.community_id == community,
                    (models.Alert.opened_t >= since) | models.Alert.state.in_(tuple(OPEN_STATES)),
                )
                .order_by(models.Alert.opened_t.desc())
                .limit(200)
            )
        ).all()
        steps: dict[int, list[dict[str, Any]]] = {}
        if alerts:
            for tr in (
                await session.scalars(
                    select(models.AlertTransition)
                    .where(models.AlertTransition.alert_id.in_([a.id for a in alerts]))
                    .order_by(models.AlertTransition.t)
                )
            ).all():
                steps.setdefault(tr.alert_id, []).append(
                    {
                        "t": tr.t,
                        "to": tr.to_state,
                        "by": names.get(tr.by, tr.by),
                        "note": tr.note,
                        "evidence": bool(tr.evidence),
                    }
                )
        findings = (
            await session.scalars(
                select(models.Finding)
                .where(models.Finding.community_id == community)
                .order_by(models.Finding.id.desc())
                .limit(50)
            )
        ).all()
        scores = []
        # Scores are for who assesses (the operator, the street office, the housing bureau:
        # computed and signed) and for the company itself (signed only); not for the
        # committee, the neighbourhood centre or anyone else who sees the community.
        reader = await _org(session, caller)
        assesses = reader is None or reader.kind in GOVERNMENT
        if company is not None and (assesses or caller.org == company):
            for a in (
                await session.scalars(
                    select(models.Assessment)
                    .where(models.Assessment.state != "superseded")
                    .order_by(models.Assessment.end.desc())
                    .limit(20)
                )
            ).all():
                entry = json.loads(a.body)["companies"].get(company)
                if entry is not None and (assesses or a.state == "signed"):
                    scores.append(
                        {
                            "table": a.table_id,
                            "period": a.period,
                            "state": a.state,
                            "score": entry["score"],
                            "grade": entry["grade"],
                            "rank": entry["rank"],
                        }
                    )
    body = {
        "community": {
            "id": com.id,
            "name": com.name,
            "district": com.district,
            "condition_class": com.condition_class,
        },
        "company": {"id": company, "name": names.get(company)} if company else None,
        "committee": names.get(com.committee_id),
        "street_office": names.get(com.street_office_id),
        "devices": [
            {
                "id": d.id,
                "kind": d.kind,
                "name": d.name,
                "building": d.building,
                "state": (s.as_json() if (s := live.devices.get((community, d.id))) else None),
                "last_maintained": last[d.id].isoformat() if d.id in last else None,
                "next_inspection": due[d.id].isoformat() if d.id in due else None,
                "inspection_overdue": d.id in due and due[d.id] <= today,
            }
            for d in devices
        ],
        "alerts": [
            {
                "id": a.id,
                "rule": a.rule,
                "device": a.device,
                "severity": a.severity,
                "state": a.state,
                "opened_t": a.opened_t,
                "timeline": steps.get(a.id, []),
            }
            for a in alerts
        ],
        "findings": [
            {
                "id": f.id,
                "item": f.item,
                "points": f.points,
                "note": f.note,
                "day": f.day.isoformat(),
                "by": names.get(f.by, f.by),
                "photo": bool(f.photo_sha256),
            }
            for f in findings
        ],
        "scores": scores,
        "items": [
            {"table": t.id, "id": f.id, "name": f.name, "max": f.max}
            for t in request.app[COMPLIANCE_TABLES].values()
            if com.district in t.districts
            for f in t.findings
        ],
    }
    return web.json_response(body)


STATIC_DIR: Final = Path(__file__).parent / "static"


async def dossier_page(_request: web.Request) -> web.FileResponse:
    """The spot-check dossier page (phone-sized; its data come from the API with the token
    given as ``#token=…``)."""
    return web.FileResponse(STATIC_DIR / "dossier.html")


def add_compliance_routes(app: web.Application) -> None:
    """Register the compliance routes and the dossier page."""
    app.router.add_get("/dossier/{community}", dossier_page)
    app.router.add_static("/static/compliance", STATIC_DIR)
    app.router.add_get("/api/compliance/tables", list_tables)
    app.router.add_get("/api/compliance/measures", get_measures)
    app.router.add_get("/api/compliance/assessments/{table}/{period}", get_assessment)
    app.router.add_post("/api/compliance/assessments/{table}/{period}", post_assessment)
    app.router.add_post("/api/compliance/assessments/{table}/{period}/sign", post_sign)
    app.router.add_get("/api/compliance/reports/{report}", get_report)
    app.router.add_post("/api/compliance/rescue/{id}", post_rescue)
    app.router.add_post("/api/compliance/inspections", post_inspections)
    app.router.add_post("/api/compliance/meetings", post_meeting)
    app.router.add_post("/api/compliance/findings", post_finding)
    app.router.add_get("/api/compliance/dossier/{community}", get_dossier)
