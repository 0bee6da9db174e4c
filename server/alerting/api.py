"""The alert API, per organisation (``Authorization: Bearer <token>``, tokens made with
``linli tokens create ORG``).

    GET  /api/alerts                      alerts routed to the caller, newest first; filters
                                          community, rule, severity, state, since, until (ms),
                                          limit
    GET  /api/alerts/{id}                 one alert: timeline, recipients, deliveries
    POST /api/alerts/{id}/transitions     {"to", "note"?, "evidence"?}
    POST /api/maintenance                 {"community", "device", "day"?, "note"?}: a
                                          maintenance visit (the maintenance unit or the
                                          company under contract)

An organisation sees the alerts it was routed to and acts on those it answers for; market
supervision sees special-equipment alerts and never acts (read only); another
organisation's alert is "not found" (its existence is not disclosed). The operator's
``admin_token`` reads every alert and acts on none. Tokens are checked, and refused with
401, by server/web/auth.py before any of these handlers runs.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Final, get_args

import msgspec
from aiohttp import web
from sqlalchemy import select

from alerts.lifecycle import AlertState, TransitionError
from alerts.routing import CommunityFacts, ContractTerm, company_on
from server.alerting.service import alert_json, timeline
from server.ingest.pipeline import evidence_id
from server.keys import ALERTS, DATABASE, EVIDENCE_KEY
from server.store import audit, models
from server.web.auth import Caller, caller_of, scoped
from server.web.http_json import int_param, json_error, path_id

__all__ = ["add_alert_routes"]

_STATES: Final = frozenset(get_args(AlertState))
MAX_T: Final = 4_102_444_800_000
#: A maintenance visit may be recorded this many days late at most (older paper records
#: go in through the registry's last_maintained).
MAINTENANCE_BACKDATE_DAYS: Final = 400


def _evidence(request: web.Request, caller: Caller, text: str) -> str:
    """A transition's evidence as the caller may see it: the operator reads what was
    written; organisations get an opaque id (free text may name a person or a plate)."""
    if caller.operator or not text:
        return text
    return evidence_id(request.app[EVIDENCE_KEY], text)


def _choice(request: web.Request, name: str, allowed: frozenset[str]) -> str | None:
    value = request.query.get(name)
    if value is not None and value not in allowed:
        message = f"query parameter {name}={value!r} is not one of {', '.join(sorted(allowed))}"
        raise json_error(web.HTTPBadRequest, message)
    return value


@scoped
async def list_alerts(request: web.Request) -> web.Response:
    """Alerts routed to the caller, newest first."""
    caller = caller_of(request)
    from alerts.rules import RULES  # noqa: PLC0415 (the rule table only here)

    query = select(models.Alert)
    if caller.org is not None:
        query = query.join(
            models.AlertRecipient, models.AlertRecipient.alert_id == models.Alert.id
        ).where(models.AlertRecipient.org_id == caller.org)
    community = request.query.get("community")
    if community:
        query = query.where(models.Alert.community_id == community)
    rule = _choice(request, "rule", frozenset(RULES))
    if rule:
        query = query.where(models.Alert.rule == rule)
    severity = _choice(request, "severity", frozenset({"info", "minor", "major", "critical"}))
    if severity:
        query = query.where(models.Alert.severity == severity)
    state = _choice(request, "state", _STATES)
    if state:
        query = query.where(models.Alert.state == state)
    since = int_param(request, "since", 0, 0, MAX_T)
    until = int_param(request, "until", MAX_T, 0, MAX_T)
    if since >= until:
        raise json_error(web.HTTPBadRequest, "query parameter since must be before until")
    limit = int_param(request, "limit", 100, 1, 1000)
    query = (
        query.where(models.Alert.opened_t >= since, models.Alert.opened_t < until)
        .order_by(models.Alert.opened_t.desc(), models.Alert.id.desc())
        .limit(limit)
    )
    async with request.app[DATABASE].session() as session:
        rows = (await session.scalars(query)).all()
    return web.json_response({"alerts": [alert_json(r) for r in rows]})


async def _visible(request: web.Request, caller: Caller) -> tuple[models.Alert, dict[str, Any]]:
    """The alert of the path, if the caller may see it; 404 otherwise; and its record."""
    alert_id = path_id(request, "alert")
    async with request.app[DATABASE].session() as session:
        row = await session.get(models.Alert, alert_id)
        told = (
            await session.scalars(
                select(models.AlertRecipient).where(models.AlertRecipient.alert_id == alert_id)
            )
        ).all()
        if row is None or (caller.org is not None and caller.org not in {r.org_id for r in told}):
            raise json_error(web.HTTPNotFound, f"no alert {alert_id} for you")
        steps = await timeline(session, alert_id)
        deliveries = (
            await session.execute(
                select(models.Delivery, models.OrgChannel.kind)
                .join(models.OrgChannel, models.OrgChannel.id == models.Delivery.channel_id)
                .where(models.Delivery.alert_id == alert_id)
                .order_by(models.Delivery.id)
            )
        ).all()
    record = {
        **alert_json(row),
        "timeline": [{"t": s.t, "to": s.to_state, "by": s.by, "note": s.note,
                      "evidence": _evidence(request, caller, s.evidence)} for s in steps],
        "recipients": [{"org": r.org_id, "role": r.role, "step": r.step,
                        "read_only": r.read_only,
                        "standing_in": r.standing_in, "t": r.added_t} for r in told],
        "deliveries": [{"id": d.id, "org": d.org_id, "channel": kind, "status": d.status,
                        "attempts": d.attempts, "created_t": d.created_t,
                        "delivered_t": d.delivered_t, "last_error": d.last_error}
                       for d, kind in deliveries],
    }  # fmt: skip
    return row, record


@scoped
async def get_alert(request: web.Request) -> web.Response:
    """One alert with its timeline, recipients and deliveries."""
    caller = caller_of(request)
    _row, record = await _visible(request, caller)
    return web.json_response(record)


class _TransitionRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    to: AlertState
    note: str = ""
    evidence: str = ""


@scoped
async def post_transition(request: web.Request) -> web.Response:
    """A step of the lifecycle by the caller's organisation."""
    caller = caller_of(request)
    row, record = await _visible(request, caller)
    if caller.org is None:
        raise json_error(web.HTTPForbidden, "the operator token reads alerts; it does not act")
    mine = next(r for r in record["recipients"] if r["org"] == caller.org)
    if mine["read_only"]:
        raise json_error(web.HTTPForbidden, f"{caller.org} is informed of alert {row.id}, "
                                            "read only")  # fmt: skip
    raw = await request.read()
    try:
        req = msgspec.json.decode(raw, type=_TransitionRequest)
    except msgspec.ValidationError as exc:
        raise json_error(web.HTTPBadRequest, f"transition: {exc}") from None
    except msgspec.DecodeError as exc:
        raise json_error(web.HTTPBadRequest, f"body is not JSON: {exc}") from None
    if req.to in ("resolved", "false_alarm") and not req.note.strip():
        raise json_error(web.HTTPBadRequest, f"note: {req.to} needs a note (what was done)")
    if len(req.note) > 4000 or len(req.evidence) > 1000:
        raise json_error(web.HTTPBadRequest, "note or evidence too long (4000 / 1000)")
    try:
        updated = await request.app[ALERTS].transition(
            row.id, req.to, caller.org, note=req.note, evidence=req.evidence
        )
    except TransitionError as exc:
        raise json_error(web.HTTPConflict, str(exc)) from None
    # Its own transaction, after the transition's (which the alert service owns).
    async with request.app[DATABASE].session(write=True) as session:
        audit.record(session, actor=caller.org, address=request.remote or "unknown",
                     action="alert_transition", target=f"alert/{row.id}",
                     detail={"to": req.to, "note": req.note, "evidence": req.evidence})  # fmt: skip
    return web.json_response(alert_json(updated))


class _MaintenanceRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    community: str
    device: str
    day: dt.date | None = None  # default: today (local)
    note: str = ""


@scoped
async def post_maintenance(request: web.Request) -> web.Response:
    """A maintenance visit, recorded by the elevator's maintenance unit or the company under
    contract today; a maintenance-overdue alert resolves with it."""
    caller = caller_of(request)
    if caller.org is None:
        raise json_error(web.HTTPForbidden, "maintenance is recorded by an organisation")
    try:
        req = msgspec.json.decode(await request.read(), type=_MaintenanceRequest)
    except msgspec.ValidationError as exc:
        raise json_error(web.HTTPBadRequest, f"maintenance: {exc}") from None
    except msgspec.DecodeError as exc:
        raise json_error(web.HTTPBadRequest, f"body is not JSON: {exc}") from None
    alerts = request.app[ALERTS]
    today = dt.datetime.fromtimestamp(alerts.clock() / 1000, alerts.tz).date()
    day = req.day or today
    if day > today:
        raise json_error(web.HTTPBadRequest, f"day: {day} is in the future")
    if day < today - dt.timedelta(days=MAINTENANCE_BACKDATE_DAYS):
        message = f"day: {day} is more than {MAINTENANCE_BACKDATE_DAYS} days ago"
        raise json_error(web.HTTPBadRequest, message)
    if len(req.note) > 4000:
        raise json_error(web.HTTPBadRequest, "note: longer than 4000 characters")
    async with request.app[DATABASE].session(write=True) as session:
        device = await session.get(models.Device, (req.community, req.device))
        seen = caller.scope.device(req.community, req.device)
        if device is None or device.kind != "elevator" or not seen:
            message = f"no elevator {req.device!r} in community {req.community!r}"
            raise json_error(web.HTTPNotFound, message)
        contracts = (
            await session.scalars(
                select(models.Contract).where(models.Contract.community_id == req.community)
            )
        ).all()
        company = company_on(
            CommunityFacts(req.community, "", "", "",
                           tuple(ContractTerm(c.company_id, c.start, c.end) for c in contracts)),
            today,
        )  # fmt: skip
        if caller.org not in (device.maintenance_unit_id, company):
            message = f"{caller.org} neither maintains {req.device} nor serves {req.community}"
            raise json_error(web.HTTPForbidden, message)
        row = models.MaintenanceRecord(community_id=req.community, device=req.device, day=day,
                                       org_id=caller.org, note=req.note,
                                       created_t=alerts.clock())  # fmt: skip
        session.add(row)
        audit.record(session, actor=caller.org, address=request.remote or "unknown",
                     action="maintenance", target=f"{req.community}/{req.device}",
                     detail={"day": day.isoformat(), "note": req.note})  # fmt: skip
    await alerts.check_dates(only=(req.community, req.device), resolve_only=True)
    body = {"id": row.id, "community": req.community, "device": req.device,
            "day": day.isoformat(), "org": caller.org, "note": req.note}  # fmt: skip
    return web.json_response(body, status=201)


@scoped
async def list_audit(request: web.Request) -> web.Response:
    """The audit log, newest first: everything for the operator's token, an organisation's
    own actions for its token."""
    caller = caller_of(request)
    since = int_param(request, "since", 0, 0, MAX_T)
    until = int_param(request, "until", MAX_T, 0, MAX_T)
    limit = int_param(request, "limit", 100, 1, 1000)
    query = select(models.AuditEntry).where(
        models.AuditEntry.t >= since, models.AuditEntry.t < until
    )
    if caller.org is not None:
        query = query.where(models.AuditEntry.actor == caller.org)
    query = query.order_by(models.AuditEntry.id.desc()).limit(limit)
    async with request.app[DATABASE].session() as session:
        rows = (await session.scalars(query)).all()
    return web.json_response({"entries": [
        {"id": r.id, "t": r.t, "actor": r.actor, "address": r.address, "action": r.action,
         "target": r.target, "detail": json.loads(r.detail)} for r in rows]})  # fmt: skip


def add_alert_routes(app: web.Application) -> None:
    """Register the alert routes."""
    app.router.add_get("/api/audit", list_audit)
    app.router.add_post("/api/maintenance", post_maintenance)
    app.router.add_get("/api/alerts", list_alerts)
    app.router.add_get("/api/alerts/{id}", get_alert)
    app.router.add_post("/api/alerts/{id}/transitions", post_transition)
