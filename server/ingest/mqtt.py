"""The broker side of ingest: subscribe, feed :class:`server.ingest.pipeline.Ingest`, reconnect.

Workers subscribe to ``up`` with a shared subscription (``$share/<group>/...``) so several
server processes split the load on the broker's own clustering (DESIGN.md, "MQTT"). Status
messages are subscribed plainly: every worker keeps every gateway's status.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from sqlalchemy import select

from server.ingest.pipeline import Ingest
from server.ingest.seqtrack import SeqState
from server.ingest.session import run_session
from server.settings import Settings
from server.store import models
from server.store.db import Database

__all__ = ["load_seq_states", "run_mqtt_ingest", "save_seq_states"]

log = logging.getLogger(__name__)

SEQ_SAVE_INTERVAL_S: Final = 2.0


async def run_mqtt_ingest(settings: Settings, ingest: Ingest, *, connected: asyncio.Event) -> None:
    """Subscribe and ingest until cancelled, reconnecting after every failure."""
    prefix = settings.mqtt_prefix
    up = f"{prefix}/+/+/up"
    if settings.mqtt_shared_group:
        up = f"$share/{settings.mqtt_shared_group}/{up}"

    async def handle(topic: str, payload: bytes) -> None:
        await ingest.handle(topic, payload)

    await run_session(
        settings,
        role="server",  # the client id of earlier versions: the broker keeps its session
        subscriptions=[up, f"{prefix}/+/+/status"],
        handle=handle,
        connected=connected,
    )


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
    async with db.session(write=True) as session:
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
