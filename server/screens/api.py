"""Screens (issue 16): the page, its data behind the screen's own token, and their management.

    GET  /screen/{id}#token=…              the big screen (static page; docs/screens.md)
    GET  /screen-data/{id}/snapshot        everything the screen shows now   } the screen's
    GET  /screen-data/{id}/stream          its changes, as server-sent events } token only
    GET  /api/screens                      the caller's screens (the operator: all)
    POST /api/screens                      {"id", "name"?, "communities"?, "lang"?, "density"?,
                                           "rotate_s"?, "org"? (operator)}: a screen and its
                                           token (shown once)
    POST /api/screens/{id}/token           a new token; the old ones stop at once
    POST /api/screens/{id}/revoke          stop every token of the screen

A screen's token opens that screen's snapshot and stream and nothing else: not another
screen's, not the ``/api/`` routes (it is not an API token). The operator's admin token opens
every screen (to look at one). Refused tokens are limited per client address.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
from aiohttp import web
from sqlalchemy import select, update

from collectors.wire import ID_PATTERN
from server.keys import ALERTS, DATABASE, SCREENS, SETTINGS, STREAMS
from server.screens.hub import RESYNC, ScreenSub, communities_of_screen, make_screen_token
from server.store import audit, models
from server.store.registry import SCREEN_ORGS
from server.web.auth import RateLimiter, caller_of, is_operator, scoped, token_digest
from server.web.http_json import json_error

__all__ = ["add_screen_routes"]

STATIC_DIR: Final = Path(__file__).parent / "static"
_TOKEN_SHAPE: Final = re.compile(r"scr_[A-Za-z0-9_-]{32}")
SCREEN_REFUSED: Final = web.AppKey("screen_refused", RateLimiter)
KEEPALIVE_S: Final = 15.0
MAX_COMMUNITIES: Final = 500
#: The stream re-checks its token this often (a revoked token ends it).
RECHECK_S: Final = 30.0


async def screen_page(_request: web.Request) -> web.FileResponse:
    """The big screen; the token arrives in the address's fragment (never sent to us)."""
    return web.FileResponse(STATIC_DIR / "screen.html")


def _refuse(request: web.Request, message: str) -> web.HTTPError:
    limiter = request.app[SCREEN_REFUSED]
    wait = limiter.take(request.remote or "unknown")
    if wait > 0:
        return json_error(web.HTTPTooManyRequests, "too many refused tokens; wait a while")
    return json_error(web.HTTPUnauthorized, message)


async def _screen_for(request: web.Request) -> tuple[models.Screen, str | None]:
    """The screen of the path, if the request's token opens it: (screen, its token's digest;
    None for the operator). 401 names what is wrong; a screen that does not exist is worded
    as a token that does not open it."""
    screen_id = request.match_info["id"]
    limiter = request.app[SCREEN_REFUSED]
    if limiter.wait(request.remote or "unknown") > 0:  # too many refused: paused, valid too
        raise json_error(web.HTTPTooManyRequests, "too many refused tokens; wait a while")
    headers = request.headers.getall("Authorization", [])
    if len(headers) > 1:
        raise json_error(web.HTTPBadRequest, "one Authorization header, not several")
    header = headers[0] if headers else ""
    if not header.startswith("Bearer ") or not header[7:].strip():
        raise _refuse(request, "missing Authorization: Bearer <the screen's token>")
    token = header[7:].strip()
    is_admin = is_operator(request, request.app[SETTINGS].admin_token)
    if not is_admin and not _TOKEN_SHAPE.fullmatch(token):
        raise _refuse(request, "the token is malformed: a screen's token is scr_ and 32 "
                      "letters, digits, - or _")  # fmt: skip
    async with request.app[DATABASE].session() as session:
        screen = await session.get(models.Screen, screen_id)
        if is_admin and screen is not None:
            return screen, None
        digest = token_digest(token)
        row = await session.get(models.ScreenToken, digest)
    if screen is None or row is None or row.screen_id != screen_id:
        raise _refuse(request, "the token is not valid for this screen")
    if row.revoked_t is not None:
        raise _refuse(request, "the token was revoked")
    return screen, digest


async def _communities(request: web.Request, screen: models.Screen) -> list[str]:
    alerts = request.app[ALERTS]
    today = dt.datetime.fromtimestamp(alerts.clock() / 1000, alerts.tz).date()
    async with request.app[DATABASE].session() as session:
        return await communities_of_screen(session, screen, today)


async def screen_snapshot(request: web.Request) -> web.Response:
    screen, _ = await _screen_for(request)
    body = await request.app[SCREENS].snapshot(screen, await _communities(request, screen))
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def screen_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``event: snapshot`` (everything the screen shows, with the hub's
    epoch and the number ``seq`` of the last frame it includes), then frames
    ``{"seq": n, "updates": [...]}`` in order (built once for every screen showing the same
    communities; a frame numbered at most the snapshot's is already in it). A skipped number
    or ``event: resync`` (the screen fell behind) means: reconnect for a new snapshot."""
    screen, digest = await _screen_for(request)
    hub = request.app[SCREENS]
    sub: ScreenSub = hub.subscribe(await _communities(request, screen))
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    task = asyncio.current_task()
    assert task is not None
    streams = request.app[STREAMS]  # cancelled when the server shuts down
    streams.add(task)
    try:
        await response.prepare(request)
        # The snapshot comes first on the stream itself, after the subscription: nothing
        # that changes in between can fall between the two.
        snap = await hub.snapshot(screen, sub.group.communities_sorted, sub)
        await response.write(b"retry: 2000\nevent: snapshot\ndata: " + json.dumps(
            snap, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n")  # fmt: skip
        recheck = time.monotonic() + RECHECK_S
        while True:
            if digest is not None and time.monotonic() >= recheck:
                recheck = time.monotonic() + RECHECK_S
                async with request.app[DATABASE].session() as session:
                    row = await session.get(models.ScreenToken, digest)
                if row is None or row.revoked_t is not None:
                    await response.write(b"event: revoked\ndata: {}\n\n")
                    break
            frame = await sub.next_frame(KEEPALIVE_S)
            if frame is None:
                await response.write(b": keepalive\n\n")
            elif frame is RESYNC:  # it fell behind: the page takes a new snapshot
                await response.write(b"event: resync\ndata: {}\n\n")
            else:
                await response.write(b"data: " + frame + b"\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        hub.unsubscribe(sub)
        streams.discard(task)
    return response


# --- management (organisations' and the operator's API tokens) ------------------------------


class _NewScreen(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    name: str = ""
    communities: list[str] | None = None
    lang: Literal["zh", "en"] = "zh"
    density: Literal["normal", "compact"] = "normal"
    rotate_s: int = 15
    org: str | None = None


def _screen_json(s: models.Screen) -> dict[str, Any]:
    return {
        "id": s.id,
        "org": s.org_id,
        "name": s.name,
        "communities": json.loads(s.communities) if s.communities else None,
        "lang": s.lang,
        "density": s.density,
        "rotate_s": s.rotate_s,
        "page": f"/screen/{s.id}",
    }


@scoped
async def list_screens(request: web.Request) -> web.Response:
    caller = caller_of(request)
    query = select(models.Screen).order_by(models.Screen.id)
    if not caller.operator:
        query = query.where(models.Screen.org_id == caller.org)
    async with request.app[DATABASE].session() as session:
        rows = (await session.scalars(query)).all()
    return web.json_response({"screens": [_screen_json(s) for s in rows]})


@scoped
async def create_screen(request: web.Request) -> web.Response:
    """A new screen of the caller's organisation (the operator names the ``org``), with its
    token, shown once. Its communities must be ones the organisation sees whole."""
    caller = caller_of(request)
    try:
        req = msgspec.json.decode(await request.read(), type=_NewScreen)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise json_error(web.HTTPBadRequest, f"screen: {exc}") from None
    if not ID_PATTERN.match(req.id):
        raise json_error(web.HTTPBadRequest, f"id: {req.id!r} is not a slug like 'hall-1'")
    if not 5 <= req.rotate_s <= 600:
        raise json_error(web.HTTPBadRequest, "rotate_s: 5..600 seconds")
    if len(req.name) > 200:
        raise json_error(web.HTTPBadRequest, "name: at most 200 characters")
    if req.communities is not None:
        if not 1 <= len(set(req.communities)) <= MAX_COMMUNITIES:
            raise json_error(web.HTTPBadRequest, f"communities: 1..{MAX_COMMUNITIES} ids, or "
                             "leave it out for the organisation's own")  # fmt: skip
        req.communities = sorted(set(req.communities))
    owner_id = req.org if caller.operator else caller.org
    if owner_id is None:
        raise json_error(web.HTTPBadRequest, "org: the operator names the screen's organisation")
    if not caller.operator and req.org not in (None, caller.org):
        raise json_error(web.HTTPForbidden, "a screen is made for the caller's own organisation")
    async with request.app[DATABASE].session(write=True) as session:
        owner = await session.get(models.Organisation, owner_id)
        if owner is None or owner.kind not in SCREEN_ORGS:
            raise json_error(
                web.HTTPBadRequest,
                f"org: {owner_id!r} cannot have screens ({', '.join(SCREEN_ORGS)} can)",
            )
        alerts = request.app[ALERTS]
        today = dt.datetime.fromtimestamp(alerts.clock() / 1000, alerts.tz).date()
        own = set(await communities_of_screen(session, models.Screen(org_id=owner_id), today))
        for cid in req.communities or []:
            if cid not in own or not caller.scope.whole(cid):
                raise json_error(web.HTTPNotFound, f"no community {cid!r}")
        if await session.get(models.Screen, req.id) is not None:
            # Ids are unique across organisations: say only that this one cannot be used.
            raise json_error(web.HTTPConflict, f"id: {req.id!r} cannot be used; choose another")
        screen = models.Screen(
            id=req.id,
            org_id=owner_id,
            name=req.name or req.id,
            communities=json.dumps(req.communities) if req.communities is not None else "",
            lang=req.lang,
            density=req.density,
            rotate_s=req.rotate_s,
        )
        session.add(screen)
        await session.flush()
        token = await _new_token(session, req.id, request.app[ALERTS].clock())
        audit.record(
            session,
            actor=caller.actor,
            address=request.remote or "unknown",
            action="screen_create",
            target=req.id,
            detail=_screen_json(screen),
        )
        body = _screen_json(screen) | {"token": token}
    return web.json_response(body, status=201)


async def _new_token(session: Any, screen_id: str, now: int) -> str:
    """Revoke the screen's tokens and make a new one."""
    await session.execute(
        update(models.ScreenToken)
        .where(models.ScreenToken.screen_id == screen_id, models.ScreenToken.revoked_t.is_(None))
        .values(revoked_t=now)
    )
    token = make_screen_token()
    session.add(models.ScreenToken(sha256=token_digest(token), screen_id=screen_id, created_t=now))
    return token


async def _own_screen(request: web.Request, session: Any) -> models.Screen:
    caller = caller_of(request)
    screen: models.Screen | None = await session.get(models.Screen, request.match_info["id"])
    if screen is None or not (caller.operator or screen.org_id == caller.org):
        raise json_error(web.HTTPNotFound, f"no screen {request.match_info['id']!r}")
    return screen


@scoped
async def new_screen_token(request: web.Request) -> web.Response:
    caller = caller_of(request)
    async with request.app[DATABASE].session(write=True) as session:
        screen = await _own_screen(request, session)
        token = await _new_token(session, screen.id, request.app[ALERTS].clock())
        audit.record(
            session,
            actor=caller.actor,
            address=request.remote or "unknown",
            action="screen_token",
            target=screen.id,
        )
    return web.json_response({"id": screen.id, "token": token}, status=201)


@scoped
async def revoke_screen(request: web.Request) -> web.Response:
    caller = caller_of(request)
    async with request.app[DATABASE].session(write=True) as session:
        screen = await _own_screen(request, session)
        result = await session.execute(
            update(models.ScreenToken)
            .where(
                models.ScreenToken.screen_id == screen.id, models.ScreenToken.revoked_t.is_(None)
            )
            .values(revoked_t=request.app[ALERTS].clock())
        )
        audit.record(
            session,
            actor=caller.actor,
            address=request.remote or "unknown",
            action="screen_revoke",
            target=screen.id,
        )
    return web.json_response({"id": screen.id, "revoked": result.rowcount})  # type: ignore[attr-defined]


def add_screen_routes(app: web.Application) -> None:
    """The page, the screen-token data routes, and the management API."""
    settings = app[SETTINGS]
    app[SCREEN_REFUSED] = RateLimiter(
        settings.api_refused_per_min / 60.0, settings.api_refused_per_min
    )
    app.router.add_get("/screen/{id}", screen_page)
    app.router.add_static("/static/screens", STATIC_DIR)
    app.router.add_get("/screen-data/{id}/snapshot", screen_snapshot)
    app.router.add_get("/screen-data/{id}/stream", screen_stream)
    app.router.add_get("/api/screens", list_screens)
    app.router.add_post("/api/screens", create_screen)
    app.router.add_post("/api/screens/{id}/token", new_screen_token)
    app.router.add_post("/api/screens/{id}/revoke", revoke_screen)
