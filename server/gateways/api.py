"""Gateway management: publish versioned configs and commands, record the gateways' answers.

HTTP API, every route behind the operator's bearer token (setting ``admin_token``; an
organisation's token, or any token when it is not set, gets 403; server/web/auth.py)::

    PUT  /api/gateways/{community}/{gateway}/config          publish a config (JSON object)
    GET  /api/gateways/{community}/{gateway}/config          versions published, their answers
    POST /api/gateways/{community}/{gateway}/commands        send a command
    GET  /api/gateways/{community}/{gateway}/commands        recent commands and their results
    GET  /api/gateways/{community}/{gateway}/commands/{id}   one command

A config is stored, then published retained with QoS 1; the response comes after the broker's
PUBACK, so a 202 means the broker holds it for the gateway, now or when it next connects. The
gateway checks it against its own devices and profiles and answers on ``cmd/ack``
(docs/gateway.md, "Remote management"); :class:`server.gateways.link.GatewayLink` records
the answer on the row.
The server checks what it can without the gateway's files: the shape, the sections a remote
config may carry, the version (newer than every one published), and for commands the
operation and that the device is registered on that gateway.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any, Final

import msgspec
from aiohttp import web
from sqlalchemy import select

from collectors.wire import (
    DEVICE_COMMAND_OPS,
    REMOTE_SECTIONS,
    Command,
    CommandOp,
    encode_command,
    topic_for,
)
from server.gateways.link import BrokerUnavailableError
from server.keys import DATABASE, GATEWAY_LINK, LIVE, SETTINGS
from server.settings import Settings
from server.store import audit, models
from server.store.db import Database
from server.web.auth import operator_only
from server.web.http_json import int_param, json_error, json_too_large

__all__ = ["add_gateway_admin_routes"]

log = logging.getLogger(__name__)

#: Commands not acted on within this many seconds are refused by the gateway (``expires``).
DEFAULT_COMMAND_TTL_S: Final = 60
MAX_COMMAND_TTL_S: Final = 3600
MAX_CONFIG_BYTES: Final = 256 * 1024


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- HTTP -------------------------------------------------------------------------------


async def _json_body(request: web.Request, limit: int) -> Any:
    raw = await request.read()
    if len(raw) > limit:
        raise json_too_large(limit, len(raw))
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise json_error(web.HTTPBadRequest, f"body is not JSON: {exc}") from None


async def _gateway_of(request: web.Request) -> tuple[Settings, Database, str, str]:
    settings = request.app[SETTINGS]
    db = request.app[DATABASE]
    community = request.match_info["community"]
    gateway = request.match_info["gateway"]
    async with db.session() as session:
        row = await session.get(models.Gateway, (community, gateway))
    if row is None:
        raise json_error(web.HTTPNotFound, f"no gateway {gateway!r} in community {community!r}")
    if row.retired and request.method != "GET":
        message = f"gateway {community}/{gateway} is retired: it takes no configs or commands"
        raise json_error(web.HTTPConflict, message)
    return settings, db, community, gateway


def _config_json(row: models.GatewayConfig) -> dict[str, Any]:
    ack = None
    if row.ack_t is not None:
        ack = {"ok": row.ack_ok, "t": row.ack_t, "running": row.ack_running,
               "message": row.ack_message}  # fmt: skip
    return {"version": row.version, "published_t": row.published_t,
            "config": json.loads(row.body), "ack": ack}  # fmt: skip


def _command_json(row: models.GatewayCommand) -> dict[str, Any]:
    ack = None
    if row.ack_t is not None:
        ack = {"ok": row.ack_ok, "t": row.ack_t, "message": row.ack_message}
    return {"id": row.id, "community": row.community_id, "gateway": row.gateway_id,
            "op": row.op, "device": row.device, "sent_t": row.sent_t,
            "expires_t": row.expires_t, "ack": ack}  # fmt: skip


def _check_config(body: Any) -> int:
    """The version of a config to publish; 400 naming what is wrong."""
    if not isinstance(body, dict):
        raise json_error(web.HTTPBadRequest, "the config must be a JSON object")
    version = body.get("config_version")
    if type(version) is not int or version < 1:
        message = f"config_version: must be an integer >= 1, got {version!r}"
        raise json_error(web.HTTPBadRequest, message)
    unknown = sorted(set(body) - {"config_version", *REMOTE_SECTIONS})
    if unknown:
        message = (
            f"{', '.join(unknown)}: not a section a remote config may carry "
            f"(only {', '.join(REMOTE_SECTIONS)})"
        )
        raise json_error(web.HTTPBadRequest, message)
    return version


@operator_only
async def put_config(request: web.Request) -> web.Response:
    """Publish a new config version to a gateway (retained)."""
    settings, db, community, gateway = await _gateway_of(request)
    body = await _json_body(request, MAX_CONFIG_BYTES)
    version = _check_config(body)
    link = request.app[GATEWAY_LINK]
    async with db.session(write=True) as session:
        latest = await session.scalar(
            select(models.GatewayConfig.version)
            .where(
                models.GatewayConfig.community_id == community,
                models.GatewayConfig.gateway_id == gateway,
            )
            .order_by(models.GatewayConfig.version.desc())
            .limit(1)
        )
        if latest is not None and version <= latest:
            message = f"config_version {version} is not newer than {latest}, the last published"
            raise json_error(web.HTTPConflict, message)
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        row = models.GatewayConfig(
            community_id=community,
            gateway_id=gateway,
            version=version,
            body=payload,
            published_t=_now_ms(),
        )
        session.add(row)
        await session.flush()  # a second publisher of the same version fails here, not later
        audit.record(session, actor="operator", address=request.remote or "unknown",
                     action="gateway_config", target=f"{community}/{gateway}",
                     detail={"version": version, "config": body})  # fmt: skip
        topic = topic_for(settings.mqtt_prefix, community, gateway, "config")
        try:
            # Retained for the gateway's next start: no expiry; its version orders it.
            await link.publish_signed(topic, payload.encode(), retain=True, expires=None)
        except BrokerUnavailableError as exc:
            raise json_error(web.HTTPServiceUnavailable, str(exc)) from None
    log.info("config version %d published to %s/%s", version, community, gateway)
    return web.json_response(_config_json(row), status=202)


@operator_only
async def get_config(request: web.Request) -> web.Response:
    """Config versions published to a gateway, newest first, with the gateway's answers."""
    _settings, db, community, gateway = await _gateway_of(request)
    limit = int_param(request, "limit", 20, 1, 500)
    async with db.session() as session:
        rows = (
            await session.scalars(
                select(models.GatewayConfig)
                .where(
                    models.GatewayConfig.community_id == community,
                    models.GatewayConfig.gateway_id == gateway,
                )
                .order_by(models.GatewayConfig.version.desc())
                .limit(limit)
            )
        ).all()
    entry = request.app[LIVE].gateways.get((community, gateway), {})
    running = (entry.get("health") or {}).get("config_version")
    return web.json_response(
        {
            "community": community,
            "gateway": gateway,
            "running": running,
            "versions": [_config_json(r) for r in rows],
        }
    )


class _CommandRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    op: CommandOp
    device: str | None = None
    ttl_s: int = DEFAULT_COMMAND_TTL_S


@operator_only
async def post_command(request: web.Request) -> web.Response:
    """Send a command to a gateway; its result arrives later on the command."""
    settings, db, community, gateway = await _gateway_of(request)
    body = await _json_body(request, 16 * 1024)
    try:
        req = msgspec.convert(body, _CommandRequest)
    except msgspec.ValidationError as exc:
        raise json_error(web.HTTPBadRequest, f"command: {exc}") from None
    if req.op in DEVICE_COMMAND_OPS and req.device is None:
        raise json_error(web.HTTPBadRequest, f"device: {req.op} needs a device")
    if req.op not in DEVICE_COMMAND_OPS and req.device is not None:
        raise json_error(web.HTTPBadRequest, f"device: {req.op} takes no device")
    if not 1 <= req.ttl_s <= MAX_COMMAND_TTL_S:
        message = f"ttl_s: {req.ttl_s} is outside 1..{MAX_COMMAND_TTL_S}"
        raise json_error(web.HTTPBadRequest, message)
    link = request.app[GATEWAY_LINK]
    now = _now_ms()
    async with db.session(write=True) as session:
        if req.device is not None:
            device = await session.get(models.Device, (community, req.device))
            if device is None or device.gateway_id != gateway:
                message = f"device: no device {req.device!r} on gateway {community}/{gateway}"
                raise json_error(web.HTTPNotFound, message)
        row = models.GatewayCommand(
            id=f"cmd-{secrets.token_hex(8)}",
            community_id=community,
            gateway_id=gateway,
            op=req.op,
            device=req.device,
            sent_t=now,
            expires_t=now + req.ttl_s * 1000,
        )
        session.add(row)
        await session.flush()
        audit.record(session, actor="operator", address=request.remote or "unknown",
                     action="gateway_command", target=f"{community}/{gateway}",
                     detail={"id": row.id, "op": req.op, "device": req.device})  # fmt: skip
        command = Command(id=row.id, op=req.op, device=req.device, expires=row.expires_t, sent=now)
        topic = topic_for(settings.mqtt_prefix, community, gateway, "cmd")
        try:
            await link.publish_signed(topic, encode_command(command), retain=False,
                                      expires=row.expires_t)  # fmt: skip
        except BrokerUnavailableError as exc:
            raise json_error(web.HTTPServiceUnavailable, str(exc)) from None
    log.info("command %s %s sent to %s/%s", row.id, req.op, community, gateway)
    return web.json_response(_command_json(row), status=202)


@operator_only
async def list_commands(request: web.Request) -> web.Response:
    """Recent commands sent to a gateway, newest first."""
    _settings, db, community, gateway = await _gateway_of(request)
    limit = int_param(request, "limit", 50, 1, 1000)
    async with db.session() as session:
        rows = (
            await session.scalars(
                select(models.GatewayCommand)
                .where(
                    models.GatewayCommand.community_id == community,
                    models.GatewayCommand.gateway_id == gateway,
                )
                .order_by(models.GatewayCommand.sent_t.desc())
                .limit(limit)
            )
        ).all()
    return web.json_response({"commands": [_command_json(r) for r in rows]})


@operator_only
async def get_command(request: web.Request) -> web.Response:
    """One command and its result."""
    _settings, db, community, gateway = await _gateway_of(request)
    cmd_id = request.match_info["id"]
    async with db.session() as session:
        row = await session.get(models.GatewayCommand, cmd_id)
    if row is None or (row.community_id, row.gateway_id) != (community, gateway):
        raise json_error(web.HTTPNotFound, f"no command {cmd_id!r} sent to {community}/{gateway}")
    return web.json_response(_command_json(row))


def add_gateway_admin_routes(app: web.Application) -> None:
    """Register the management routes."""
    base = "/api/gateways/{community}/{gateway}"
    app.router.add_put(f"{base}/config", put_config)
    app.router.add_get(f"{base}/config", get_config)
    app.router.add_post(f"{base}/commands", post_command)
    app.router.add_get(f"{base}/commands", list_commands)
    app.router.add_get(f"{base}/commands/{{id}}", get_command)
