"""The server's MQTT sessions: connect, subscribe, hand every message on, and reconnect with
backoff after every failure. Ingest and the gateway-management link each run one.

Each session has a client id stable across restarts (``linli-<role>-<host>-<http_port>``)
and a persistent session (``clean_session=False``), so a restarted server gets back what
the broker kept for it (QoS 1 messages published while it was away).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import aiomqtt

from collectors.mqtturl import parse_mqtt_url
from server.settings import Settings

__all__ = ["BACKOFF_MAX_S", "BACKOFF_MIN_S", "run_session"]

log = logging.getLogger(__name__)

BACKOFF_MIN_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0

Handler = Callable[[str, bytes], Awaitable[None]]


async def run_session(
    settings: Settings,
    *,
    role: str,
    subscriptions: Sequence[str],
    handle: Handler,
    connected: asyncio.Event,
    on_client: Callable[[aiomqtt.Client | None], None] = lambda _client: None,
) -> None:
    """Stay subscribed to ``subscriptions`` (QoS 1) and pass each message to ``handle``
    until cancelled. ``connected`` is set while subscribed; ``on_client`` is given the
    client when connected and None when the connection is gone (to publish through it)."""
    addr = parse_mqtt_url(settings.mqtt_url)
    identifier = f"linli-{role}-{socket.gethostname()}-{settings.http_port}"
    delay = BACKOFF_MIN_S
    while True:
        try:
            async with aiomqtt.Client(
                addr.host,
                addr.port,
                username=addr.username,
                password=addr.password,
                identifier=identifier,
                clean_session=False,
            ) as client:
                for topic in subscriptions:
                    await client.subscribe(topic, qos=1)
                log.info("%s subscribed to %s on %s:%d", role, ", ".join(subscriptions),
                         addr.host, addr.port)  # fmt: skip
                on_client(client)
                connected.set()
                delay = BACKOFF_MIN_S
                async for message in client.messages:
                    payload = message.payload
                    if isinstance(payload, bytes):
                        await handle(message.topic.value, payload)
        except aiomqtt.MqttError as exc:
            # Full jitter (AWS architecture blog, "Exponential Backoff And Jitter").
            wait = random.uniform(0, delay)  # noqa: S311 (jitter, not security)
            log.warning("%s lost the broker (%s); reconnecting in %.1f s", role, exc, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, BACKOFF_MAX_S)
        finally:
            on_client(None)
            connected.clear()
