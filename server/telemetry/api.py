"""The telemetry query API: charts, elevator availability and trips, fire-lane occupancy,
gateway uptime. Served from whichever store holds telemetry (InfluxDB or the embedded one).

Every endpoint takes ``since`` and ``until`` in epoch ms (``[since, until)``). Figures by day
use local days of the server's ``timezone`` setting. Errors are JSON ``{"error": ...}``: 400
for a bad parameter, 404 for an unknown community or device, 502 when InfluxDB fails.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from aiohttp import web

from collectors.wire import BUS_PREFIX, DEV_PREFIX, EVENTS_BY_KIND, POLL_OK_PREFIX
from server.keys import INGEST, LIVE, SETTINGS, TELEMETRY_READER
from server.store.registry import DeviceInfo
from server.telemetry.queries import (
    TelemetryQueryError,
    elevator_availability,
    fire_lane_occupancy,
    gateway_uptime,
    trips_per_day,
)
from server.telemetry.timeline import DAY_MS, day_offset_ms, nice_interval_ms
from server.web.auth import caller_of, scoped
from server.web.http_json import int_param, json_error

__all__ = ["add_telemetry_routes"]

T = TypeVar("T")

DEFAULT_POINTS: Final = 500
MAX_POINTS: Final = 5_000
MAX_EVENTS: Final = 1_000
MAX_ITEMS: Final = 10_000
#: The longest range a figure may cover (a year and a bit, for annual assessments).
MAX_RANGE_MS: Final = 400 * DAY_MS
DEFAULT_FIGURE_DAYS: Final = 30


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _range(
    request: web.Request, default_ms: int, *, align_days: bool, bounded: bool = True
) -> tuple[int, int]:
    """``since``/``until`` from the query; by default the ``default_ms`` before now (from a
    local midnight when ``align_days``)."""
    until = int_param(request, "until", _now_ms(), 0, 2**62)
    default_since = until - default_ms
    if align_days:
        offset = day_offset_ms(request.app[SETTINGS].timezone, default_since)
        default_since = (default_since + offset) // DAY_MS * DAY_MS - offset
    since = int_param(request, "since", default_since, 0, 2**62)
    if since >= until:
        raise json_error(web.HTTPBadRequest, f"since={since} must be before until={until}")
    if bounded and until - since > MAX_RANGE_MS:
        raise json_error(
            web.HTTPBadRequest,
            f"since..until spans {(until - since) / DAY_MS:.1f} days; at most "
            f"{MAX_RANGE_MS // DAY_MS} days per request",
        )
    return since, until


def _community(request: web.Request) -> str:
    """The community of the path; 404 if it is unknown or not the caller's (alike)."""
    community = request.match_info["community"]
    scope = caller_of(request).scope
    if community not in request.app[INGEST].registry.communities or not scope.community(community):
        raise json_error(web.HTTPNotFound, f"no community {community!r} in the registry")
    return community


def _devices(request: web.Request, community: str, kind: str) -> list[str]:
    """The community's devices of ``kind`` the caller sees."""
    scope = caller_of(request).scope
    devices = request.app[INGEST].registry.devices
    return sorted(
        dev
        for (c, dev), info in devices.items()
        if c == community and info.kind == kind and scope.device(c, dev)
    )


def _gateways(request: web.Request, community: str) -> list[str]:
    """The community's gateways, for a caller that sees it whole (none otherwise)."""
    if not caller_of(request).scope.whole(community):
        return []
    return sorted(g for c, g in request.app[INGEST].registry.gateways if c == community)


def _device(request: web.Request) -> tuple[str, str, DeviceInfo]:
    """The device of the path; 404 if it is unknown or not the caller's (alike)."""
    community = request.match_info["community"]
    dev = request.match_info["dev"]
    info = request.app[INGEST].registry.devices.get((community, dev))
    if info is None or not caller_of(request).scope.device(community, dev):
        raise json_error(web.HTTPNotFound, f"no device {dev!r} in community {community!r}")
    return community, dev, info


async def _ask(call: Awaitable[T]) -> T:
    try:
        return await call
    except TelemetryQueryError as exc:
        raise json_error(web.HTTPBadGateway, str(exc)) from exc


def _retention_note(request: web.Request, since: int) -> dict[str, str]:
    raw_days = request.app[SETTINGS].influx_raw_days
    if request.app[SETTINGS].influx_url and since < _now_ms() - raw_days * DAY_MS:
        return {
            "note": f"the range starts before the raw retention ({raw_days} days): "
            "points and events older than that are no longer stored"
        }
    return {}


@scoped
async def device_items(request: web.Request) -> web.Response:
    """A device's raw readings and events (``limit``, default 1000)."""
    community, dev, info = _device(request)
    since, until = _range(request, 3_600_000, align_days=False, bounded=False)
    limit = int_param(request, "limit", 1000, 1, MAX_ITEMS)
    rows = await _ask(
        request.app[TELEMETRY_READER].items(
            community, dev, info.kind, since=since, until=until, limit=limit
        )
    )
    return web.json_response({"community": community, "dev": dev, "items": rows})


@scoped
async def device_series(request: web.Request) -> web.Response:
    """A device's readings for a chart: raw when there are at most ``points`` (default 500),
    else buckets of a round width with each field's last value and numeric min/max; plus
    the device's events in the range (at most 1000)."""
    community, dev, info = _device(request)
    since, until = _range(request, DAY_MS, align_days=False)
    points = int_param(request, "points", DEFAULT_POINTS, 10, MAX_POINTS)
    reader = request.app[TELEMETRY_READER]
    raw = await _ask(
        reader.items(community, dev, info.kind, since=since, until=until, limit=points + 1)
    )
    interval: int | None = None
    if len(raw) <= points:
        series = [{"t": r["t"], "fields": r["fields"]} for r in raw if "fields" in r]
    else:
        interval = nice_interval_ms(since, until, points)
        series = await _ask(
            reader.series(community, dev, info.kind, since=since, until=until, interval=interval)
        )
    events = await _ask(
        reader.events(
            community, info.kind, EVENTS_BY_KIND[info.kind], since=since, until=until, dev=dev
        )
    )
    return web.json_response(
        {
            "community": community,
            "dev": dev,
            "kind": info.kind,
            "since": since,
            "until": until,
            "interval_ms": interval,
            "points": series,
            "events": [
                {"t": e.t, "event": e.event, "state": e.state, "data": e.data}
                for e in events[:MAX_EVENTS]
            ],
            "events_truncated": len(events) > MAX_EVENTS,
            **_retention_note(request, since),
        }
    )


@scoped
async def device_diagnostics(request: web.Request) -> web.Response:
    """A device's error counters as its gateway last reported them (health item): poll
    success, misses, undecodable values, Modbus exceptions, times gone offline; and, for a
    caller that sees the whole community, the counters of every line of that gateway
    (checksum errors, stray bytes, torn frames, timeouts, CRC errors …), since its start."""
    community, dev, info = _device(request)
    entry = request.app[LIVE].gateways.get((community, info.gateway), {})
    health: dict[str, Any] = entry.get("health") or {}
    mine = f"{DEV_PREFIX}{dev}."
    body: dict[str, Any] = {
        "community": community,
        "dev": dev,
        "gateway": info.gateway,
        "reported_t": entry.get("health_t"),
        "poll_ok": health.get(f"{POLL_OK_PREFIX}{dev}"),
        "counters": {k[len(mine) :]: v for k, v in health.items() if k.startswith(mine)},
    }
    if caller_of(request).scope.whole(community):
        lines: dict[str, dict[str, int]] = {}
        for key, value in health.items():
            if key.startswith(BUS_PREFIX):
                line, _, counter = key[len(BUS_PREFIX) :].rpartition(".")
                lines.setdefault(line, {})[counter] = value
        body["lines"] = lines
    return web.json_response(body)


Figure = Callable[..., Awaitable[dict[str, Any]]]


def _figure_handler(
    figure: Figure, kind: str, key: str, *, lookback: bool = True
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        community = _community(request)
        since, until = _range(request, DEFAULT_FIGURE_DAYS * DAY_MS, align_days=True)
        settings = request.app[SETTINGS]
        if kind == "gateway":
            subjects = _gateways(request, community)
        else:
            subjects = _devices(request, community, kind)
        extra: dict[str, Any] = {"tz": settings.timezone}
        if lookback:
            extra["lookback_ms"] = settings.influx_raw_days * DAY_MS
        result = await _ask(
            figure(
                request.app[TELEMETRY_READER],
                community,
                subjects,
                since=since,
                until=until,
                **extra,
            )
        )
        return web.json_response(
            {
                "community": community,
                "since": since,
                "until": until,
                "timezone": settings.timezone,
                key: result,
                **_retention_note(request, since),
            }
        )

    handler.__doc__ = figure.__doc__
    return scoped(handler)


def add_telemetry_routes(app: web.Application) -> None:
    """Register the query API."""
    r = app.router
    r.add_get("/api/devices/{community}/{dev}/history", device_items)
    r.add_get("/api/devices/{community}/{dev}/series", device_series)
    r.add_get("/api/devices/{community}/{dev}/diagnostics", device_diagnostics)
    r.add_get(
        "/api/communities/{community}/elevators/availability",
        _figure_handler(elevator_availability, "elevator", "elevators"),
    )
    r.add_get(
        "/api/communities/{community}/elevators/trips",
        _figure_handler(trips_per_day, "elevator", "elevators", lookback=False),
    )
    r.add_get(
        "/api/communities/{community}/fire-lanes/occupancy",
        _figure_handler(fire_lane_occupancy, "fire_lane", "fire_lanes"),
    )
    r.add_get(
        "/api/communities/{community}/gateways/uptime",
        _figure_handler(gateway_uptime, "gateway", "gateways"),
    )
