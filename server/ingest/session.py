"""The server's MQTT sessions: connect, subscribe, hand every message on, and reconnect with
backoff after every failure. Ingest and the gateway-management link each run one.

Each session has a client id stable across restarts (``linli-<role>-<host>-<http_port>``)
and a persistent session (``clean_session=False``), so a restarted server gets back what
the broker kept for it (QoS 1 messages published while it was away).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import socket
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from collectors.mqtturl import parse_mqtt_url, tls_context
from server.settings import Settings

__all__ = [
    "BACKOFF_MAX_S",
    "BACKOFF_MIN_S",
    "MAX_HELD",
    "Delivery",
    "run_acked_session",
    "run_session",
]

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
                tls_context=tls_context(addr),
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


# --- acknowledged-means-durable -----------------------------------------------------------

#: Messages held by the server at once (received, not yet acknowledged): the memory bound.
MAX_HELD: Final = 64
#: paho's reconnect delay doubles from the first to the last (whole seconds, paho's unit).
RECONNECT_MIN_S: Final = 1
RECONNECT_MAX_S: Final = 5
_STOP_POLL_S: Final = 0.5
KEEPALIVE_S: Final = 60
COMMIT_RETRY_MIN_S: Final = 0.5
#: At a clean stop, how long the commit in flight may take before the session gives up on it.
STOP_COMMIT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message the broker delivered, not yet acknowledged."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    #: The connection it arrived on: a PUBACK is only ever sent on that connection.
    connection: int


Commit = Callable[[], Awaitable[None]]
#: Takes what was handled so far, at the call; returns the function that makes it durable.
Seal = Callable[[], Commit]


async def run_acked_session(
    settings: Settings,
    *,
    role: str,
    subscriptions: Sequence[str],
    handle: Handler,
    seal: Seal,
    connected: asyncio.Event,
    max_held: int = MAX_HELD,
) -> None:
    """Stay subscribed to ``subscriptions`` (QoS 1), pass each message to ``handle``, and
    acknowledge it only once the commit that holds it is durable, until cancelled.

    Messages are taken in batches (whatever arrived while the last batch was handled):
    ``handle`` for each, then ``seal()``, whose returned commit makes everything handled so
    far durable. The commit of one batch runs while the next batch is handled (one commit
    in flight; commits complete in order). A failing commit is retried with backoff and
    nothing is acknowledged meanwhile (a full disk stalls ingest; it loses nothing). At most
    ``max_held`` messages are held at once: past that the network thread stops reading, TCP
    pushes back, and the broker keeps the backlog. Acknowledgements go out in the order
    messages arrived (MQTT 3.1.1, 4.6) and only on the connection a message came on: after a
    reconnect the broker re-sends what was not acknowledged, under packet ids a new session
    may have reused.

    paho-mqtt runs on its own network thread (``loop_start``) with ``manual_ack``: aiomqtt
    acknowledges every message on receipt and has no switch for it, and paho's own loop
    gives reconnects and keepalive while the event loop is busy with a batch.
    """
    loop = asyncio.get_running_loop()
    addr = parse_mqtt_url(settings.mqtt_url)
    identifier = f"linli-{role}-{socket.gethostname()}-{settings.http_port}"
    # Deliveries cross from paho's thread in a deque; the event loop is woken once per
    # burst, not once per message (each wake-up is a write to the loop's self-pipe).
    inbox: collections.deque[Delivery] = collections.deque()
    arrived = asyncio.Event()
    armed = False  # a wake-up is on its way (guarded by lock)
    room = threading.Semaphore(max_held)
    stopping = threading.Event()
    lock = threading.Lock()
    connection = 0

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=identifier,
        clean_session=False,
        manual_ack=True,
    )
    if addr.username is not None:
        client.username_pw_set(addr.username, addr.password)
    client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
    context = tls_context(addr)
    if context is not None:
        client.tls_set_context(context)

    def on_connect(c: mqtt.Client, _u: Any, flags: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            log.warning("%s: the broker refused the connection: %s", role, reason)
            return
        c.subscribe([(topic, 1) for topic in subscriptions])

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
        log.info("%s subscribed to %s on %s:%d", role, ", ".join(subscriptions),
                 addr.host, addr.port)  # fmt: skip
        loop.call_soon_threadsafe(connected.set)

    def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        nonlocal connection
        with lock:
            connection += 1
        log.warning("%s lost the broker (%s); paho reconnects", role, reason)
        loop.call_soon_threadsafe(connected.clear)

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        # Runs on paho's thread: wait for room, so that nothing more is read off the socket
        # while the server holds max_held messages.
        nonlocal armed
        while not room.acquire(timeout=_STOP_POLL_S):
            if stopping.is_set():
                return  # not acknowledged: the broker delivers it again
        with lock:
            payload = bytes(message.payload)
            inbox.append(Delivery(message.topic, payload, message.mid, message.qos, connection))
            wake, armed = not armed, True
        if wake:
            loop.call_soon_threadsafe(arrived.set)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_disconnect = on_disconnect
    client.on_message = on_message
    client.connect_async(addr.host, addr.port, keepalive=KEEPALIVE_S)
    client.loop_start()

    def acknowledge(batch: list[Delivery]) -> None:
        with lock:
            for held in batch:
                if held.connection == connection and held.qos > 0:
                    client.ack(held.mid, held.qos)
        for _ in batch:
            room.release()

    async def commit_then_ack(commit: Commit, batch: list[Delivery]) -> None:
        await _commit_until_done(commit, role)
        acknowledge(batch)

    inflight: asyncio.Task[None] | None = None
    try:
        while True:
            await arrived.wait()
            arrived.clear()
            with lock:
                armed = False
                batch = list(inbox)
                inbox.clear()
            if not batch:
                continue
            for held in batch:
                await handle(held.topic, held.payload)
            commit = seal()  # at once, before anything else is handled
            if inflight is not None:
                await asyncio.shield(inflight)  # commits complete, and acks go out, in order
            inflight = asyncio.create_task(commit_then_ack(commit, batch))
    finally:
        if inflight is not None and not inflight.done():
            # A clean stop finishes the commit in hand and acknowledges it.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(inflight), STOP_COMMIT_S)
            inflight.cancel()  # still retrying (disk full): left unacknowledged for the broker
        stopping.set()
        connected.clear()
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)


async def _commit_until_done(commit: Commit, role: str) -> None:
    delay = COMMIT_RETRY_MIN_S
    while True:
        try:
            await commit()
        except Exception:
            log.exception("%s: could not make the last messages durable; retrying in %.1f s "
                          "(nothing is acknowledged meanwhile)", role, delay)  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
        else:
            return
