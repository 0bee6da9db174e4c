"""The gateway-management link: the server's MQTT client that publishes configs and commands
(QoS 1, returning after the broker's PUBACK) and records every answer the gateways send on
``cmd/ack`` on the config version or command it answers."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Final

import aiomqtt

from collectors.signed import sign
from collectors.wire import WireError, decode_ack, parse_topic
from server.gateways.signing import load_or_create_signing_key
from server.ingest.session import run_session
from server.settings import Settings
from server.store import models
from server.store.db import Database

__all__ = ["BrokerUnavailableError", "GatewayLink"]

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S: Final = 10.0


class BrokerUnavailableError(Exception):
    """The management link has no broker connection, or the broker did not acknowledge."""


class GatewayLink:
    """The server's MQTT client for management: publishes on ``config`` and ``cmd``, and
    records every answer that arrives on ``cmd/ack``.

    Each server worker runs one, subscribed plainly with a persistent session, so answers sent
    while it was away are delivered when it is back; recording an answer is idempotent, so
    several workers recording the same one agree.
    """

    def __init__(self, settings: Settings, db: Database) -> None:
        self._settings = settings
        self._db = db
        #: Signs every config and command (:meth:`publish_signed`).
        self.signing_key = load_or_create_signing_key(Path(settings.signing_key_path))
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.acks = 0
        self.bad_acks = 0
        self.unmatched_acks = 0

    async def run(self) -> None:
        """Stay connected and record answers until cancelled."""

        def use(client: aiomqtt.Client | None) -> None:
            self._client = client

        await run_session(
            self._settings,
            role="admin",
            subscriptions=[f"{self._settings.mqtt_prefix}/+/+/cmd/ack"],
            handle=self.record_ack,
            connected=self.connected,
            on_client=use,
        )

    async def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        """Publish with QoS 1 and return once the broker acknowledged it."""
        client = self._client
        if client is None:
            raise BrokerUnavailableError("the server is not connected to the MQTT broker")
        try:
            await client.publish(topic, payload, qos=1, retain=retain, timeout=PUBLISH_TIMEOUT_S)
        except aiomqtt.MqttError as exc:
            raise BrokerUnavailableError(f"the broker did not take the message: {exc}") from exc

    async def publish_signed(
        self, topic: str, body: bytes, *, retain: bool, expires: int | None
    ) -> None:
        """``body`` signed for ``topic`` (collectors/signed.py), published as :meth:`publish`."""
        await self.publish(topic, sign(self.signing_key, topic, body, expires=expires),
                           retain=retain)  # fmt: skip

    async def record_ack(self, topic: str, payload: bytes) -> None:
        """Store one answer on the config version or command it answers."""
        try:
            addr = parse_topic(self._settings.mqtt_prefix, topic)
            ack = decode_ack(payload)
        except WireError as exc:
            self.bad_acks += 1
            log.warning("ignored an answer on %s: %s", topic, exc)
            return
        message = ack.error if ack.error is not None else (ack.result or "")
        async with self._db.session(write=True) as session:
            row: models.GatewayConfig | models.GatewayCommand | None
            if ack.type == "config":
                row = None
                if ack.version is not None:
                    row = await session.get(
                        models.GatewayConfig, (addr.community, addr.gateway, ack.version)
                    )
                if row is not None:
                    row.ack_running = ack.running
            else:
                row = await session.get(models.GatewayCommand, ack.id)
                if row is not None and (row.community_id, row.gateway_id) != (
                    addr.community,
                    addr.gateway,
                ):
                    row = None  # another gateway's command id: not this one's to answer
            if row is None:
                self.unmatched_acks += 1
                log.info("answer on %s matches nothing sent from here: %s", topic, message)
                return
            row.ack_t, row.ack_ok, row.ack_message = ack.t, ack.ok, message
        self.acks += 1
