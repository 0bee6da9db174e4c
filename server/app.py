"""The aiohttp application: resources opened in ``cleanup_ctx``, shared through typed AppKeys.

Opening order (closing is the reverse): database ▸ telemetry store ▸ live state and ingest ▸
MQTT subscriber ▸ the gateway-management link, alert timers and
notifier. Every background task is named and owned by the context that started it, and is
cancelled and awaited when the app shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from aiohttp import web

from alerts.ladders import LadderError, Ladders, default_ladders, parse_ladders
from alerts.rules import RuleSettings, SettingsTable
from collectors.yamlconf import ConfigError, load_yaml
from server.alerting.api import add_alert_routes
from server.alerting.notifier import Notifier, NotifyPolicy, SmtpTarget
from server.alerting.service import AlertService
from server.compliance.api import add_compliance_routes
from server.compliance.citytable import all_tables
from server.compliance.schedule import ReportScheduler, parse_schedule
from server.gateways.api import add_gateway_admin_routes
from server.gateways.link import GatewayLink
from server.gateways.signing import load_or_create_signing_key
from server.ingest.mqtt import load_seq_states, run_mqtt_ingest
from server.ingest.pipeline import Ingest
from server.keys import (
    ALERTS,
    COMPLIANCE_TABLES,
    DATABASE,
    EVIDENCE_KEY,
    GATEWAY_LINK,
    INFLUX,
    INGEST,
    LIVE,
    MQTT_CONNECTED,
    NOTIFIER,
    SCREENS,
    SETTINGS,
    TELEMETRY,
    TELEMETRY_READER,
    TELEMETRY_WRITER,
)
from server.screens.api import add_screen_routes
from server.screens.hub import ScreenHub
from server.settings import Settings, influx_target
from server.store.db import open_database
from server.store.registry import RegistryIndex, load_registry_index
from server.telemetry.api import add_telemetry_routes
from server.telemetry.influx import open_influx_writer
from server.telemetry.influxql import InfluxQLReader
from server.telemetry.sqlite_store import open_sqlite_store
from server.web import handlers as web_handlers
from server.web.auth import GuardConfig, RateLimiter, api_guard, check_routes
from server.web.livestate import LiveState

__all__ = ["create_app"]

log = logging.getLogger(__name__)


async def _database_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_database(app[SETTINGS].database_url) as db:
        app[DATABASE] = db
        yield


async def _telemetry_ctx(app: web.Application) -> AsyncIterator[None]:
    """One telemetry store: InfluxDB when ``influx_url`` is set, else the embedded SQLite
    store; it takes every item ingest accepts and answers the query API."""
    settings = app[SETTINGS]
    async with contextlib.AsyncExitStack() as stack:
        if settings.influx_url:
            target = influx_target(settings)
            influx = await stack.enter_async_context(
                open_influx_writer(
                    target,
                    Path(settings.influx_spool_path),
                    spool_max_bytes=settings.influx_spool_max_mb * 1024 * 1024,
                )
            )
            app[INFLUX] = influx
            app[TELEMETRY_WRITER] = influx
            app[TELEMETRY_READER] = InfluxQLReader(influx)
        else:
            store = await stack.enter_async_context(
                open_sqlite_store(Path(settings.telemetry_path))
            )
            app[TELEMETRY] = store
            app[TELEMETRY_WRITER] = store
            app[TELEMETRY_READER] = store
        yield


async def _ingest_ctx(app: web.Application) -> AsyncIterator[None]:
    db = app[DATABASE]

    async def load() -> RegistryIndex:
        async with db.session() as session:
            return await load_registry_index(session)

    live = LiveState()
    settings = app[SETTINGS]

    def zone_of(community: str, device: str) -> str | None:
        info = app[INGEST].registry.devices.get((community, device)) if INGEST in app else None
        return info.building if info and info.building else None

    table = app[THRESHOLDS].table(zone_of)
    app[ALERTS] = alerts = AlertService(
        db, app[LADDERS], settings=table, timezone=settings.timezone
    )
    ingest = Ingest(
        prefix=app[SETTINGS].mqtt_prefix,
        registry=await load(),
        load_registry=load,
        live=live,
        writer=app[TELEMETRY_WRITER],
        seq=await load_seq_states(app[TELEMETRY_WRITER], db),
        alerts=alerts,
        evidence_key=app[EVIDENCE_KEY],
    )
    app[LIVE] = live
    app[INGEST] = ingest
    await alerts.watch(list(ingest.registry.devices))  # the silent ones go offline too
    if INFLUX in app:

        def building_of(community: str, dev: str) -> str:
            info = ingest.registry.devices.get((community, dev))
            return info.building if info else ""

        app[INFLUX].building_of = building_of
    app[MQTT_CONNECTED] = connected = asyncio.Event()
    async with _background(
        ("mqtt-ingest", run_mqtt_ingest(app[SETTINGS], ingest, connected=connected)),
    ):
        yield


async def _management_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    link = GatewayLink(settings, app[DATABASE])
    app[GATEWAY_LINK] = link

    async def feed(topic: str, payload: bytes) -> None:
        await link.publish(topic, payload, retain=False)

    notifier = Notifier(
        app[DATABASE],
        policy=NotifyPolicy(
            max_attempts=settings.notify_max_attempts,
            backoff_max_s=settings.notify_backoff_max_s,
            timeout_s=settings.notify_timeout_s,
        ),
        mqtt_prefix=settings.mqtt_prefix,
        mqtt_publish=feed,
        smtp=SmtpTarget.parse(settings.smtp_url, settings.smtp_from) if settings.smtp_url else None,
    )
    app[NOTIFIER] = notifier
    alerts = app[ALERTS]
    alerts.on_outbox = notifier.wake.set
    reports = ReportScheduler(
        app[DATABASE],
        tz=alerts.tz,
        ledger=settings.ledger_schedule,
        progress=settings.progress_schedule,
        smtp=notifier.smtp,
        base_url=settings.public_url or f"http://{settings.http_host}:{settings.http_port}",
    )
    hub = ScreenHub(app[DATABASE], app[LIVE], reader=lambda: app.get(TELEMETRY_READER),
                    tz=settings.timezone, clock=alerts.clock)  # fmt: skip
    app[SCREENS] = hub
    async with _background(
        ("screens", hub.run()),
        ("gateway-link", link.run()),
        ("alert-timers", alerts.run_timers(ready=app.get(MQTT_CONNECTED))),
        ("notifier", notifier.run()),
        ("scheduled-reports", reports.run()),
    ):
        yield


@contextlib.asynccontextmanager
async def _background(*jobs: tuple[str, Coroutine[Any, Any, None]]) -> AsyncIterator[None]:
    """Run named background tasks for the block; cancel and await them after it."""
    tasks = [asyncio.create_task(job, name=name) for name, job in jobs]
    for task in tasks:
        task.add_done_callback(_report_crash)
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _report_crash(task: asyncio.Task[None]) -> None:
    # These tasks loop until cancelled; ending any other way is a defect to shout about,
    # not to leave the server running without ingest.
    if not task.cancelled() and task.exception() is not None:
        log.critical("background task %s crashed", task.get_name(), exc_info=task.exception())


LADDERS = web.AppKey("ladders", Ladders)
#: Requests per caller, and refused tokens per client address (server/web/auth.py).
API_RATE = web.AppKey("api_rate", RateLimiter)
API_REFUSED = web.AppKey("api_refused", RateLimiter)


def load_ladders(settings: Settings) -> Ladders:
    """The escalation ladders: ``alert_ladders`` if set, else the shipped ones;
    :class:`LadderError` names the file and what is wrong."""
    if not settings.alert_ladders:
        return default_ladders()
    path = Path(settings.alert_ladders)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LadderError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_ladders(text, str(path))


class ThresholdFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The ``alert_thresholds`` file: DOMAIN.md's defaults overridden for every community,
    per community, per building (``community/building``) and per device
    (``community/device``); keys are :class:`alerts.rules.RuleSettings` fields."""

    defaults: dict[str, Any] = {}
    communities: dict[str, dict[str, Any]] = {}
    buildings: dict[str, dict[str, Any]] = {}
    devices: dict[str, dict[str, Any]] = {}

    def table(self, building_of: Callable[[str, str], str | None]) -> SettingsTable:
        def pair(key: str) -> tuple[str, str]:
            community, _, rest = key.partition("/")
            return community, rest

        return SettingsTable(
            msgspec.structs.replace(RuleSettings(), **self.defaults),
            communities=self.communities,
            zones={pair(k): v for k, v in self.buildings.items()},
            devices={pair(k): v for k, v in self.devices.items()},
            zone_of=building_of,
        )


THRESHOLDS = web.AppKey("thresholds", ThresholdFile)


def load_thresholds(settings: Settings) -> ThresholdFile:
    """The ``alert_thresholds`` file, checked; :class:`ConfigError` names what is wrong."""
    if not settings.alert_thresholds:
        return ThresholdFile()
    path = Path(settings.alert_thresholds)
    found = load_yaml(path, ThresholdFile)
    for section, keys in (("buildings", found.buildings), ("devices", found.devices)):
        for key in keys:
            if key.count("/") != 1:
                what = "building" if section == "buildings" else "device"
                message = f"{key!r} is not 'community/{what}'"
                raise ConfigError.one(str(path), None, f"{section}.{key}", message)
    try:
        found.table(lambda _c, _d: None)
    except (TypeError, ValueError) as exc:
        raise ConfigError.one(str(path), None, "", str(exc)) from exc
    return found


def evidence_key(settings: Settings) -> bytes:
    """The key evidence ids are made with, derived from the server's signing key (so it
    survives restarts and is the same for every worker and for ``linli evidence id``)."""
    raw = load_or_create_signing_key(Path(settings.signing_key_path)).private_bytes_raw()
    return hashlib.sha256(b"linli evidence ids\0" + raw).digest()


def create_app(settings: Settings) -> web.Application:
    """Build the server application; resources open when it starts. A bad ladder file
    raises :class:`LadderError` (a bad city table :class:`ConfigError`) here, before anything
    opens."""
    app = web.Application(client_max_size=settings.api_max_body_kb * 1024)
    app[SETTINGS] = settings
    app[EVIDENCE_KEY] = evidence_key(settings)
    app[API_RATE] = RateLimiter(settings.api_rate_per_s, settings.api_burst)
    app[API_REFUSED] = RateLimiter(
        settings.api_refused_per_min / 60.0, settings.api_refused_per_min
    )
    app.middlewares.append(
        api_guard(
            GuardConfig(
                session=lambda a: a[DATABASE].session(),
                admin_token=lambda a: a[SETTINGS].admin_token,
                timezone=lambda a: ZoneInfo(a[SETTINGS].timezone),
                limiter=lambda a: a[API_RATE],
                failures=lambda a: a[API_REFUSED],
            )
        )
    )
    app[LADDERS] = load_ladders(settings)
    app[THRESHOLDS] = load_thresholds(settings)
    app[COMPLIANCE_TABLES] = all_tables(settings.compliance_tables)
    for kind, text in (("ledger", settings.ledger_schedule),
                       ("progress", settings.progress_schedule)):  # fmt: skip
        try:
            parse_schedule(kind, text)
        except ValueError as exc:
            raise ConfigError.one("settings", None, f"{kind}_schedule", str(exc)) from None
    app.cleanup_ctx.extend([_database_ctx, _telemetry_ctx, _ingest_ctx, _management_ctx])
    web_handlers.add_routes(app)
    add_telemetry_routes(app)
    add_gateway_admin_routes(app)
    add_alert_routes(app)
    add_compliance_routes(app)
    add_screen_routes(app)
    check_routes(app)  # every /api/ route says who may call it
    return app
