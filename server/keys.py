"""Typed application keys: how handlers reach the resources the app opened."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from server.db import Database
from server.ingest import Ingest
from server.livestate import LiveState
from server.settings import Settings
from server.telemetry.sqlite_store import SqliteTelemetryStore

__all__ = ["DATABASE", "INGEST", "LIVE", "MQTT_CONNECTED", "SETTINGS", "STREAMS", "TELEMETRY"]

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)
TELEMETRY = web.AppKey("telemetry", SqliteTelemetryStore)
LIVE = web.AppKey("live", LiveState)
INGEST = web.AppKey("ingest", Ingest)
MQTT_CONNECTED = web.AppKey("mqtt_connected", asyncio.Event)
#: Handler tasks of open SSE streams, cancelled on shutdown so that it does not wait on them.
STREAMS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("streams")
