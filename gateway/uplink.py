"""The MQTT uplink: batches items into envelopes and publishes them with QoS 1.

Theory of operation
-------------------
Collectors hand items to :meth:`Uplink.put`, which appends them to an in-memory pending list
bounded by :data:`MAX_PENDING_ITEMS` (``put`` waits when it is full: back-pressure, not loss).
The publisher loop takes a batch (bounded by count, bytes and age; an event flushes at once),
gives it the next durable sequence number, and publishes it until the broker's PUBACK
arrives. After a disconnect the *same* envelope, with the same ``seq``, is published again
on the next connection, so delivery is at least once and the server drops duplicates.

On connect the gateway publishes a retained ``online`` status; its Last Will is a retained
``offline`` one, and a clean shutdown publishes ``offline`` itself.

This first cut keeps pending items in memory; the disk-backed store-and-forward queue that
survives a crash is issue 4.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from typing import Final, Literal

import aiomqtt

from collectors.mqtturl import parse_mqtt_url
from collectors.wire import (
    Envelope,
    Event,
    GatewayStatus,
    Item,
    encode_envelope,
    encode_status,
    topic_for,
)
from gateway.seqstore import SeqStore
from gateway.site import SiteConfig

__all__ = ["MAX_PENDING_ITEMS", "Uplink"]

log = logging.getLogger(__name__)

MAX_PENDING_ITEMS: Final = 100_000
BACKOFF_MIN_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0
PUBLISH_TIMEOUT_S: Final = 10.0
#: An item's share of a batch's bytes, estimated before encoding (a reading is ~200 bytes).
_ITEM_BYTES_ESTIMATE: Final = 240


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Uplink:
    """One gateway's connection to the central broker."""

    def __init__(self, site: SiteConfig, seq: SeqStore, *, backoff: bool = True) -> None:
        self._site = site
        self._seq = seq
        self._backoff = backoff
        self._pending: deque[Item] = deque()
        self._has_items = asyncio.Event()
        self._urgent = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._inflight: tuple[bytes, int] | None = None  # (payload, item count)
        self.connected = asyncio.Event()
        self.published_items = 0
        self.published_batches = 0
        prefix = site.uplink.prefix
        self._up = topic_for(prefix, site.community, site.gateway, "up")
        self._status = topic_for(prefix, site.community, site.gateway, "status")

    @property
    def unsent(self) -> int:
        """Items not yet acknowledged by the broker."""
        return len(self._pending) + (self._inflight[1] if self._inflight else 0)

    async def put(self, item: Item) -> None:
        """Queue one item; waits while the pending list is full."""
        while len(self._pending) >= MAX_PENDING_ITEMS:
            self._room.clear()
            await self._room.wait()
        self._pending.append(item)
        self._has_items.set()
        if isinstance(item, Event):
            self._urgent.set()

    async def drain(self) -> None:
        """Return once every queued item has been acknowledged by the broker."""
        while self.unsent:
            self._urgent.set()
            await asyncio.sleep(0.05)

    def _status_payload(self, status: Literal["online", "offline"]) -> bytes:
        return encode_status(
            GatewayStatus(status, self._site.gateway, self._site.community, _now_ms())
        )

    async def run(self) -> None:
        """Connect, publish, and reconnect with jittered backoff, until cancelled."""
        addr = parse_mqtt_url(self._site.uplink.url)
        will = aiomqtt.Will(self._status, self._status_payload("offline"), qos=1, retain=True)
        delay = BACKOFF_MIN_S
        while True:
            try:
                async with aiomqtt.Client(
                    addr.host,
                    addr.port,
                    username=addr.username,
                    password=addr.password,
                    identifier=f"linli-gw-{self._site.community}-{self._site.gateway}",
                    will=will,
                    keepalive=30,
                ) as client:
                    await client.publish(
                        self._status, self._status_payload("online"), qos=1, retain=True
                    )
                    self.connected.set()
                    delay = BACKOFF_MIN_S
                    log.info(
                        "%s/%s uplink connected to %s:%d",
                        self._site.community,
                        self._site.gateway,
                        addr.host,
                        addr.port,
                    )
                    try:
                        await self._publish_loop(client)
                    finally:
                        self.connected.clear()
                        # A clean DISCONNECT does not trigger the Will (MQTT 3.1.1, 3.14.4),
                        # so a stopping gateway says offline itself; the Will covers crashes.
                        await self._say_offline(client)
            except aiomqtt.MqttError as exc:
                wait = random.uniform(0, delay) if self._backoff else 0.05  # noqa: S311 (jitter)
                log.warning(
                    "%s/%s uplink down (%s); retrying in %.1f s",
                    self._site.community,
                    self._site.gateway,
                    exc,
                    wait,
                )
                await asyncio.sleep(wait)
                delay = min(delay * 2, BACKOFF_MAX_S)

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        try:
            await client.publish(
                self._status, self._status_payload("offline"), qos=1, retain=True, timeout=2
            )
        except aiomqtt.MqttError:
            log.info("could not publish offline status; the broker will send the Will")

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        while True:
            if self._inflight is None:
                self._inflight = await self._next_batch()
            payload, count = self._inflight
            await client.publish(self._up, payload, qos=1, timeout=PUBLISH_TIMEOUT_S)
            # PUBACK received: only now does the batch leave the gateway's hands.
            self._inflight = None
            self.published_items += count
            self.published_batches += 1

    async def _next_batch(self) -> tuple[bytes, int]:
        """Wait for items, then cut a batch by count, bytes and age; events go at once."""
        batch = self._site.batch
        while not self._pending:
            self._has_items.clear()
            await self._has_items.wait()
        if not self._urgent.is_set():
            oldest = self._pending[0].t
            wait_s = max(0.0, (oldest + batch.max_age_ms - _now_ms()) / 1000)
            full = batch.max_items
            if len(self._pending) < full and wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), wait_s)
        self._urgent.clear()
        limit = min(batch.max_items, max(1, batch.max_bytes // _ITEM_BYTES_ESTIMATE))
        items = [self._pending.popleft() for _ in range(min(limit, len(self._pending)))]
        # The estimate is only a first cut: encode, and while the batch is over max_bytes,
        # give its second half back to the front of the queue. The batch is encoded with the
        # number ``allocate`` will return, so the final encoding is the one sent and a batch
        # that shrank wastes no number.
        while True:
            payload = self._encode(items, self._seq.next)
            if len(payload) <= batch.max_bytes or len(items) == 1:
                break
            keep = len(items) // 2
            self._pending.extendleft(reversed(items[keep:]))
            del items[keep:]
        if any(isinstance(i, Event) for i in self._pending):
            self._urgent.set()  # an event left behind must not wait for the next age bound
        self._room.set()
        seq = await self._seq.allocate()
        assert seq + 1 == self._seq.next  # the number the payload was encoded with
        return payload, len(items)

    def _encode(self, items: list[Item], seq: int) -> bytes:
        envelope = Envelope(
            gw=self._site.gateway,
            community=self._site.community,
            seq=seq,
            sent=_now_ms(),
            items=items,
        )
        return encode_envelope(envelope)
