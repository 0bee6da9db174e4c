"""Typed application keys: how handlers reach the resources the app opened."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from server.alerting.notifier import Notifier
from server.alerting.service import AlertService
from server.compliance.citytable import CityTable
from server.gateways.link import GatewayLink
from server.ingest.pipeline import Ingest
from server.screens.hub import ScreenHub
from server.settings import Settings
from server.store.db import Database
from server.telemetry import TelemetryWriter
from server.telemetry.influx import InfluxWriter
from server.telemetry.queries import TelemetryReader
from server.telemetry.sqlite_store import SqliteTelemetryStore
from server.web.livestate import LiveState

__all__ = [
    "ALERTS",
    "COMPLIANCE_TABLES",
    "DATABASE",
    "EVIDENCE_KEY",
    "GATEWAY_LINK",
    "INFLUX",
    "INGEST",
    "LIVE",
    "MQTT_CONNECTED",
    "NOTIFIER",
    "SCREENS",
    "SETTINGS",
    "STREAMS",
    "TELEMETRY",
    "TELEMETRY_READER",
    "TELEMETRY_WRITER",
]

SETTINGS = web.AppKey("settings", Settings)
#: The key of opaque evidence ids (server/ingest/pipeline.py ``evidence_id``).
EVIDENCE_KEY = web.AppKey("evidence_key", bytes)
DATABASE = web.AppKey("database", Database)
#: The embedded store, when it is the telemetry store (no InfluxDB configured).
TELEMETRY = web.AppKey("telemetry", SqliteTelemetryStore)
#: Where ingest writes: InfluxDB when it is configured, else the embedded store.
TELEMETRY_WRITER: web.AppKey[TelemetryWriter] = web.AppKey("telemetry_writer")
#: What the query API reads: the same store.
TELEMETRY_READER: web.AppKey[TelemetryReader] = web.AppKey("telemetry_reader")
INFLUX = web.AppKey("influx", InfluxWriter)
LIVE = web.AppKey("live", LiveState)
INGEST = web.AppKey("ingest", Ingest)
MQTT_CONNECTED = web.AppKey("mqtt_connected", asyncio.Event)
ALERTS = web.AppKey("alerts", AlertService)
#: The city assessment tables, by id (server/compliance/citytable.py).
COMPLIANCE_TABLES: web.AppKey[dict[str, CityTable]] = web.AppKey("compliance_tables")
NOTIFIER = web.AppKey("notifier", Notifier)
#: The screens' live feed (server/screens/hub.py).
SCREENS = web.AppKey("screens", ScreenHub)
GATEWAY_LINK = web.AppKey("gateway_link", GatewayLink)
#: Handler tasks of open SSE streams, cancelled on shutdown so that it does not wait on them.
STREAMS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("streams")
