"""The broker side of ingest: subscribe, feed :class:`server.ingest.Ingest`, reconnect.

Workers subscribe to ``up`` with a shared subscription (``$share/<group>/...``) so several
server processes split the load on the broker's own clustering (DESIGN.md, "MQTT"). Status
messages are subscribed plainly: every worker keeps every gateway's status.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from typing import Final

import aiomqtt
from sqlalchemy import select

from collectors.mqtturl import parse_mqtt_url
from server import models
from server.db import Database
from server.ingest import Ingest
from server.seqtrack import SeqState
from server.settings import Settings

__all__ = ["load_seq_states", "run_mqtt_ingest", "save_seq_states"]

log = logging.getLogger(__name__)

BACKOFF_MIN_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0
SEQ_SAVE_INTERVAL_S: Final = 2.0


async def run_mqtt_ingest(settings: Settings, ingest: Ingest, *, connected: asyncio.Event) -> None:
    """Subscribe and ingest until cancelled, re-entering the client after every failure."""
    addr = parse_mqtt_url(settings.mqtt_url)
    prefix = settings.mqtt_prefix
    up = f"{prefix}/+/+/up"
    if settings.mqtt_shared_group:
        up = f"$share/{settings.mqtt_shared_group}/{up}"
    delay = BACKOFF_MIN_S
    # Stable across restarts so that clean_session=False gets the same session back.
    identifier = f"linli-server-{socket.gethostname()}-{settings.http_port}"
    while True:
        try:
            async with aiomqtt.Client(
                addr.host,
                addr.port,
                username=addr.username,
                password=addr.password,
                identifier=identifier,
                # A server that restarts wants the same session back, with what the
                # broker kept for it (QoS 1 messages published while it was away).
                clean_session=False,
            ) as client:
                await client.subscribe(up, qos=1)
                await client.subscribe(f"{prefix}/+/+/status", qos=1)
                log.info("ingest subscribed to %s on %s:%d", up, addr.host, addr.port)
                connected.set()
                delay = BACKOFF_MIN_S
                async for message in client.messages:
                    await ingest.handle(message.topic.value, message.payload)
        except aiomqtt.MqttError as exc:
            connected.clear()
            # Full jitter (AWS architecture blog, "Exponential Backoff And Jitter").
            wait = random.uniform(0, delay)  # noqa: S311 (jitter, not security)
            log.warning("ingest lost the broker (%s); reconnecting in %.1f s", exc, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, BACKOFF_MAX_S)


async def load_seq_states(db: Database) -> dict[tuple[str, str], SeqState]:
    """The saved sequence high marks, so duplicates stay dropped across restarts."""
    async with db.session() as session:
        rows = (await session.scalars(select(models.GatewaySeq))).all()
    return {
        (r.community_id, r.gateway_id): SeqState.restored(r.high, r.gaps, r.duplicates)
        for r in rows
    }


async def save_seq_states(db: Database, ingest: Ingest) -> None:
    """Write the windows that changed since the last save."""
    dirty, ingest.dirty = ingest.dirty, set()
    if not dirty:
        return
    async with db.session() as session:
        for key in dirty:
            state = ingest.seq[key]
            if state.high is None:
                continue
            await session.merge(
                models.GatewaySeq(
                    community_id=key[0],
                    gateway_id=key[1],
                    high=state.high,
                    gaps=state.gaps,
                    duplicates=state.duplicates,
                )
            )


async def run_seq_saver(db: Database, ingest: Ingest) -> None:
    """Save sequence windows every few seconds until cancelled, and once more on the way out."""
    try:
        while True:
            await asyncio.sleep(SEQ_SAVE_INTERVAL_S)
            await save_seq_states(db, ingest)
    finally:
        await save_seq_states(db, ingest)
