"""The MQTT uplink: publishes the disk queue's batches with QoS 1, and listens for the server.

Theory of operation
-------------------
Items are already committed to the :class:`~gateway.queue.DiskQueue` when the uplink sees
them. The publisher cuts a batch (bounded by count, bytes and age; an event makes it go at
once) and publishes it; only the broker's PUBACK removes it from the queue. Up to
``window`` batches are in flight at a time, so cutting the next batch overlaps the wait for
the last one's PUBACK. After a disconnect every batch still in flight is published again,
byte for byte with the same ``seq``, before new ones: delivery is at least once and the
server drops duplicates.

Reconnects back off exponentially from :data:`BACKOFF_MIN_S` to :data:`BACKOFF_MAX_S` with
full jitter (a random wait between 0 and the current bound), so a hundred gateways that lost
the same broker do not all come back in the same second.

On connect the gateway publishes a retained ``online`` status; its Last Will is a retained
``offline`` one, and a clean stop publishes ``offline`` itself. It subscribes to its
``config`` (retained) and ``cmd`` topics and hands those messages to ``on_message``; replies
go out with :meth:`Uplink.reply`. The session is clean: a command sent while the gateway was
away is not acted on hours later (commands also carry their own expiry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Final, Literal

import aiomqtt

from collectors.mqtturl import parse_mqtt_url, tls_context
from collectors.wire import GatewayStatus, encode_status, topic_for
from gateway.queue import Batch, DiskQueue
from gateway.site import SiteConfig

__all__ = ["BACKOFF_MAX_S", "BACKOFF_MIN_S", "MessageHandler", "Uplink"]

log = logging.getLogger(__name__)

BACKOFF_MIN_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0
PUBLISH_TIMEOUT_S: Final = 10.0

MessageHandler = Callable[[str, bytes], Awaitable[None]]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Uplink:
    """One gateway's connection to the central broker."""

    def __init__(
        self,
        site: SiteConfig,
        queue: DiskQueue,
        *,
        on_message: MessageHandler | None = None,
        backoff: bool = True,
        window: int = 4,
    ) -> None:
        self.site = site
        self.queue = queue
        self._on_message = on_message
        self._backoff = backoff
        self._window = window
        self._client: aiomqtt.Client | None = None
        self._hurry = False
        self.connected = asyncio.Event()
        self.published_items = 0
        self.published_batches = 0
        self.reconnects = 0
        self._inflight_items = 0
        prefix = site.uplink.prefix
        self._up = topic_for(prefix, site.community, site.gateway, "up")
        self._status = topic_for(prefix, site.community, site.gateway, "status")
        self._config = topic_for(prefix, site.community, site.gateway, "config")
        self._cmd = topic_for(prefix, site.community, site.gateway, "cmd")
        self._ack = topic_for(prefix, site.community, site.gateway, "cmd/ack")

    @property
    def unsent(self) -> int:
        """Items committed but not yet acknowledged by the broker (approximate in flight)."""
        return self.queue.pending + self._inflight_items

    async def drain(self) -> None:
        """Return once every queued item has been acknowledged by the broker."""
        self._hurry = True  # no batch waits for its age bound any more
        self.queue.changed.set()
        while self.unsent:  # noqa: ASYNC110 (two counters, polled only while stopping)
            await asyncio.sleep(0.05)

    def _status_payload(self, status: Literal["online", "offline"]) -> bytes:
        return encode_status(
            GatewayStatus(status, self.site.gateway, self.site.community, _now_ms())
        )

    async def reply(self, payload: bytes) -> bool:
        """Publish a ``cmd/ack`` message now; ``False`` if the uplink is down."""
        client = self._client
        if client is None:
            return False
        try:
            await client.publish(self._ack, payload, qos=1, timeout=PUBLISH_TIMEOUT_S)
        except aiomqtt.MqttError as exc:
            log.warning("could not publish a reply: %s", exc)
            return False
        return True

    async def run(self) -> None:
        """Connect, publish, and reconnect with jittered backoff, until cancelled."""
        addr = parse_mqtt_url(self.site.uplink.url)
        will = aiomqtt.Will(self._status, self._status_payload("offline"), qos=1, retain=True)
        delay = BACKOFF_MIN_S
        where = f"{self.site.community}/{self.site.gateway}"
        while True:
            failure: str | None = None
            try:
                async with aiomqtt.Client(
                    addr.host,
                    addr.port,
                    username=addr.username,
                    password=addr.password,
                    identifier=f"linli-gw-{self.site.community}-{self.site.gateway}",
                    will=will,
                    tls_context=tls_context(addr),
                    keepalive=30,
                ) as client:
                    await client.publish(
                        self._status, self._status_payload("online"), qos=1, retain=True
                    )
                    await client.subscribe(self._config, qos=1)
                    await client.subscribe(self._cmd, qos=1)
                    self._client = client
                    self.connected.set()
                    delay = BACKOFF_MIN_S
                    log.info("%s uplink connected to %s:%d", where, addr.host, addr.port)
                    try:
                        async with asyncio.TaskGroup() as tg:
                            tg.create_task(self._publish_loop(client))
                            tg.create_task(self._listen(client))
                    finally:
                        self._client = None
                        self.connected.clear()
                        # A clean DISCONNECT does not trigger the Will (MQTT 3.1.1, 3.14.4),
                        # so a stopping gateway says offline itself; the Will covers crashes.
                        await self._say_offline(client)
            except* aiomqtt.MqttError as group:
                failure = "; ".join(str(e) for e in group.exceptions)
            self.reconnects += 1
            wait = random.uniform(0, delay) if self._backoff else 0.05  # noqa: S311 (jitter)
            log.warning("%s uplink down (%s); retrying in %.1f s", where, failure, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        try:
            await client.publish(
                self._status, self._status_payload("offline"), qos=1, retain=True, timeout=2
            )
        except aiomqtt.MqttError:
            log.info("could not publish offline status; the broker will send the Will")

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if self._on_message is None:
                continue
            payload = message.payload
            body = payload if isinstance(payload, bytes) else str(payload or "").encode()
            try:
                await self._on_message(str(message.topic), body)
            except Exception:  # a bad message must not take the uplink down
                log.exception("handling %s failed", message.topic)

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        window = asyncio.Semaphore(self._window)
        async with asyncio.TaskGroup() as tg:
            # What was in flight when the last connection (or process) ended goes first.
            for batch in await self.queue.inflight():
                await window.acquire()
                self._inflight_items += batch.items
                tg.create_task(self._send(client, batch, window))
            while True:
                await window.acquire()
                batch = await self._next_batch()
                self._inflight_items += batch.items
                tg.create_task(self._send(client, batch, window))

    async def _send(self, client: aiomqtt.Client, batch: Batch, window: asyncio.Semaphore) -> None:
        try:
            await client.publish(self._up, batch.payload, qos=1, timeout=PUBLISH_TIMEOUT_S)
            # PUBACK received: only now does the batch leave the gateway's hands.
            await self.queue.ack(batch.seq, len(batch.payload))
            self.published_items += batch.items
            self.published_batches += 1
        finally:
            self._inflight_items -= batch.items
            window.release()

    async def _next_batch(self) -> Batch:
        """Wait until a batch is due (an event, a full batch, or the oldest item's age), cut it."""
        bounds = self.site.batch
        queue = self.queue
        while True:
            queue.changed.clear()
            wait_s: float | None = None
            if queue.pending:
                now = _now_ms()
                due = queue.pending_urgent or queue.pending >= bounds.max_items or self._hurry
                oldest = queue.oldest_pending_t if queue.oldest_pending_t is not None else now
                age_left = min(oldest + bounds.max_age_ms - now, bounds.max_age_ms)
                if due or age_left <= 0:
                    batch = await queue.next_batch(bounds.max_items, bounds.max_bytes, now)
                    if batch is not None:
                        return batch
                    continue
                wait_s = age_left / 1000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(queue.changed.wait(), wait_s)
