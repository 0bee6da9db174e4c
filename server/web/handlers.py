"""HTTP handlers: the live status page, its SSE stream, and the read-only JSON API.

Every API error is JSON ``{"error": "..."}`` with a 4xx status that names what was wrong.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy import select

from server.keys import (
    DATABASE,
    GATEWAY_LINK,
    INFLUX,
    INGEST,
    LIVE,
    MQTT_CONNECTED,
    SETTINGS,
    STREAMS,
    TELEMETRY,
)
from server.store import models
from server.web.auth import Scope, caller_of, operator_only, recheck_token, scoped
from server.web.http_json import json_error

__all__ = ["add_routes"]

STATIC_DIR: Final = Path(__file__).parent / "static"
#: The status page is sent at most this often per screen; updates in between coalesce.
SSE_MIN_INTERVAL_S: Final = 0.25
SSE_KEEPALIVE_S: Final = 15.0
#: How often an open stream checks its token again (revoked, expired, scope changed).
SSE_RECHECK_S: Final = 60.0


def _not_found(message: str) -> web.HTTPError:
    return json_error(web.HTTPNotFound, message)


async def index(_request: web.Request) -> web.FileResponse:
    """The live status page (zh-CN by default, ?lang=en for English)."""
    return web.FileResponse(STATIC_DIR / "status.html")


def _gateways_seen(
    scope: Scope, gateways: dict[tuple[str, str], dict[str, Any]]
) -> list[dict[str, Any]]:
    """Gateway entries the caller sees: those of the communities it sees whole. (A gateway's
    health names every device it polls: a caller that sees single devices gets none.)"""
    return [g for key, g in gateways.items() if scope.whole(key[0])]


@scoped
async def overview(request: web.Request) -> web.Response:
    """The caller's communities with their devices (only those it sees), names and current
    state, and the statuses of the gateways that serve them."""
    scope = caller_of(request).scope
    db = request.app[DATABASE]
    live = request.app[LIVE]
    async with db.session() as session:
        communities = (
            await session.scalars(
                select(models.Community).order_by(
                    models.Community.committee_id, models.Community.id
                )
            )
        ).all()
        devices = (
            await session.scalars(
                select(models.Device).order_by(models.Device.community_id, models.Device.id)
            )
        ).all()
        orgs = {o.id: o for o in (await session.scalars(select(models.Organisation))).all()}
    by_community: dict[str, list[dict[str, Any]]] = {}
    for d in devices:
        if not scope.device(d.community_id, d.id):
            continue
        state = live.devices.get((d.community_id, d.id))
        by_community.setdefault(d.community_id, []).append(
            {
                "id": d.id,
                "kind": d.kind,
                "name": d.name,
                "name_en": d.name_en,
                "building": d.building,
                "floors": d.floors,
                "state": state.as_json() if state else None,
            }
        )
    body = {
        "communities": [
            {
                "id": c.id,
                "name": c.name,
                "name_en": c.name_en,
                "committee": orgs[c.committee_id].name if c.committee_id in orgs else "",
                "committee_en": orgs[c.committee_id].name_en if c.committee_id in orgs else "",
                "devices": by_community.get(c.id, []),
            }
            for c in communities
            if scope.whole(c.id) or c.id in by_community
        ],
        "gateways": _gateways_seen(scope, live.gateways),
        "server_time": time.time_ns() // 1_000_000,
    }
    return web.json_response(body, dumps=lambda o: json.dumps(o, ensure_ascii=False))


def _visible_update(scope: Scope, u: dict[str, Any]) -> bool:
    if u.get("type") == "gateway":
        return scope.whole(u["community"])
    return scope.device(u["community"], u["dev"])


@scoped
async def stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: a JSON list of device/gateway updates per message, only those the
    caller sees. The token is checked again every minute: a revoked or expired one ends the
    stream, and a company's scope follows its contracts across midnight."""
    caller = caller_of(request)
    scope = caller.scope
    live = request.app[LIVE]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    # Subscribed before the response starts: a page that loads the overview once its stream
    # is open cannot miss an update made in between.
    sub = live.subscribe()
    try:
        await response.prepare(request)
    except BaseException:
        live.unsubscribe(sub)
        raise
    task = asyncio.current_task()
    assert task is not None
    streams = request.app[STREAMS]
    streams.add(task)
    try:
        await response.write(b"retry: 2000\n\n")
        recheck = time.monotonic() + SSE_RECHECK_S
        while True:
            if time.monotonic() >= recheck and caller.digest is not None:
                recheck = time.monotonic() + SSE_RECHECK_S
                settings = request.app[SETTINGS]
                async with request.app[DATABASE].session() as session:
                    renewed = await recheck_token(session, caller, ZoneInfo(settings.timezone))
                if renewed is None:
                    await response.write(b"event: revoked\ndata: {}\n\n")
                    break
                scope = renewed.scope
            try:
                batch = await asyncio.wait_for(sub.next_batch(), SSE_KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if not scope.everything:
                batch = [u for u in batch if _visible_update(scope, u)]
                if not batch:
                    continue
            data = json.dumps(batch, ensure_ascii=False, separators=(",", ":"))
            await response.write(f"data: {data}\n\n".encode())
            await asyncio.sleep(SSE_MIN_INTERVAL_S)
    except (ConnectionResetError, asyncio.CancelledError):
        # The screen went away, or the server is shutting down (_close_streams): either way
        # the stream is over and the response is complete.
        pass
    finally:
        live.unsubscribe(sub)
        streams.discard(task)
    return response


async def _close_streams(app: web.Application) -> None:
    streams = app[STREAMS]
    for task in tuple(streams):
        task.cancel()


@operator_only
async def ingest_stats(request: web.Request) -> web.Response:
    """Ingest counters: envelopes, items, duplicates, gaps, rejects by reason and gateway,
    with excerpts of rejected payloads (which may hold what a device should never have
    sent, a plate or a phone number): the operator's only."""
    return web.json_response(request.app[INGEST].stats_json())


@operator_only
async def telemetry_counts(request: web.Request) -> web.Response:
    """Stored readings and events per device; ``?community=`` narrows it."""
    community = request.query.get("community")
    store = request.app.get(TELEMETRY)
    if store is None:
        raise _not_found(
            "counts come from the embedded store; this server keeps telemetry in InfluxDB"
        )
    if request.query.get("flush") == "1":
        await store.flush()
    return web.json_response(await store.counts(community))


async def health(request: web.Request) -> web.Response:
    """Liveness and the state of the server's links."""
    body: dict[str, object] = {"mqtt_connected": request.app[MQTT_CONNECTED].is_set()}
    link = request.app.get(GATEWAY_LINK)
    if link is not None:
        body["gateway_link"] = {"connected": link.connected.is_set(), "acks": link.acks,
                                "bad_acks": link.bad_acks,
                                "unmatched_acks": link.unmatched_acks}  # fmt: skip
    store = request.app.get(TELEMETRY)
    if store is not None:
        body["telemetry_buffered"] = store.buffered
    influx = request.app.get(INFLUX)
    if influx is not None:
        body["influx"] = await influx.stats()
    return web.json_response(body)


_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})


@web.middleware
async def json_api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Under /api, errors aiohttp raises itself (unknown path, wrong method) are JSON too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if (
            exc.status < 400
            or not request.path.startswith("/api/")
            or exc.content_type == "application/json"
        ):
            raise
        # Same status and headers (Allow, ...), our body. A new response, not type(exc)(...):
        # some error classes take required arguments (413 its sizes, 405 its methods).
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in _BODY_HEADERS}
        return web.json_response(
            {"error": f"{exc.reason}: {request.method} {request.path}"},
            status=exc.status,
            headers=headers,
        )


def add_routes(app: web.Application) -> None:
    """Register the status page, its stream and the read-only JSON routes, and the shutdown
    hook that ends open streams; each room registers its own API routes (server/app.py)."""
    app.middlewares.append(json_api_errors)
    app[STREAMS] = set()
    app.on_shutdown.append(_close_streams)
    app.router.add_get("/", index)
    app.router.add_get("/api/overview", overview)
    app.router.add_get("/api/stream", stream)
    app.router.add_get("/api/ingest", ingest_stats)
    app.router.add_get("/api/telemetry/counts", telemetry_counts)
    app.router.add_get("/healthz", health)
    app.router.add_static("/static", STATIC_DIR)
