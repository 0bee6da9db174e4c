"""The broker side of ingest: subscribe, feed :class:`server.ingest.pipeline.Ingest`, and
acknowledge each message only once what it carried is durable.

Messages come in batches (what arrived while the last batch was handled, at most
:data:`server.ingest.session.MAX_HELD`); each batch is handled, then committed in one step
with the sequence windows it changed (:meth:`Ingest.commit`), then acknowledged (PUBACK). A
crash at any instant leaves each message either committed with its window, so that the
broker's redelivery is dropped as a duplicate, or unacknowledged, so that the broker
delivers it again (docs/operations.md, "Acknowledged means durable").

The server subscribes to ``up`` plainly, with a persistent session, which mosquitto restores
after its own restart. Several workers split the communities (``ingest_worker = "k/n"``): each
receives every message and ingests only its own communities' (docs/operations.md, "Server
workers"). ``mqtt_shared_group`` subscribes through ``$share/<group>/...`` instead, for brokers
that restore shared subscriptions. Every worker keeps every gateway's status.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable

from sqlalchemy import select

from server.ingest.pipeline import Ingest
from server.ingest.seqtrack import SeqState
from server.ingest.session import run_acked_session
from server.settings import Settings, worker_share
from server.store import models
from server.store.db import Database
from server.telemetry import TelemetryWriter

__all__ = ["load_seq_states", "run_mqtt_ingest"]

log = logging.getLogger(__name__)


async def run_mqtt_ingest(settings: Settings, ingest: Ingest, *, connected: asyncio.Event) -> None:
    """Subscribe and ingest until cancelled, reconnecting after every failure."""
    prefix = settings.mqtt_prefix
    up = f"{prefix}/+/+/up"
    if settings.mqtt_shared_group:
        up = f"$share/{settings.mqtt_shared_group}/{up}"
    mine = community_filter(settings)

    async def handle(topic: str, payload: bytes) -> None:
        if mine(topic):
            await ingest.handle(topic, payload)
        # else another worker's community: acknowledged with the batch, unread

    await run_acked_session(
        settings,
        role="server",  # the client id of earlier versions: the broker keeps its session
        subscriptions=[up, f"{prefix}/+/+/status"],
        handle=handle,
        seal=ingest.seal,
        connected=connected,
    )


def community_filter(settings: Settings) -> Callable[[str], bool]:
    """Whether a message is this worker's to ingest (``ingest_worker`` k of n): status
    messages always, ``up`` messages of the communities whose CRC-32 modulo n is k - 1."""
    k, n = worker_share(settings)
    if n == 1:
        return lambda _topic: True
    start = len(settings.mqtt_prefix) + 1

    def mine(topic: str) -> bool:
        if not topic.endswith("/up"):
            return True
        community = topic[start:].partition("/")[0]
        return zlib.crc32(community.encode()) % n == k - 1

    return mine


async def load_seq_states(writer: TelemetryWriter, db: Database) -> dict[tuple[str, str], SeqState]:
    """Each gateway's sequence window as the telemetry store last committed it.

    A gateway the store has no mark for falls back to the high mark an older server saved in
    SQL (``gateway_seq``, no longer written), so an upgrade does not take old envelopes for
    new ones.
    """
    states: dict[tuple[str, str], SeqState] = {}
    async with db.session() as session:
        for r in (await session.scalars(select(models.GatewaySeq))).all():
            states[r.community_id, r.gateway_id] = SeqState.restored(r.high, r.gaps, r.duplicates)
    for key, raw in (await writer.load_marks()).items():
        try:
            states[key] = SeqState.from_bytes(raw)
        except ValueError as exc:
            log.error("sequence mark of %s/%s unreadable, ignored: %s", *key, exc)  # noqa: TRY400
    return states
