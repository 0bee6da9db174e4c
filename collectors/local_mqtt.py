"""The local-MQTT collector: camera-AI boxes and other devices on the community's own broker.

Subscribes to the topic patterns of every profile in use, decodes each message with its
profile (:class:`collectors.decode.MqttDecoder`), finds the device by the address the
message carries, and emits what its tracker makes of it. Reconnects with capped, jittered
backoff; devices silent for their profile's ``offline_after_s`` are reported offline.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import aiomqtt

from collectors.base import Emit, wall_ms
from collectors.decode import MqttDecoder
from collectors.mqtturl import parse_mqtt_url, tls_context
from collectors.profile import MqttProfile, profile_deadbands
from collectors.tracker import DeviceTracker
from collectors.wire import Item

__all__ = ["LocalMqttCollector", "MqttDevice", "MqttSession"]

log = logging.getLogger(__name__)

#: A camera box's message is a few hundred bytes; anything this large is refused unread.
MAX_LOCAL_PAYLOAD: Final = 64 * 1024
_BACKOFF_MAX_S: Final = 30.0
_SILENCE_CHECK_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class MqttDevice:
    """A device on the local broker: its id, its profile, and the address its messages carry."""

    id: str
    profile: MqttProfile
    address: str


class MqttSession:
    """Sans-I/O core: (topic, payload) in, wire items out."""

    def __init__(self, devices: Sequence[MqttDevice], *, started_t: int) -> None:
        self.counts: Counter[str] = Counter()
        self.started_t = started_t
        self._decoders: dict[str, MqttDecoder] = {}
        self._profiles: dict[str, MqttProfile] = {}
        self.trackers: dict[tuple[str, str], DeviceTracker] = {}
        for d in devices:
            self._decoders.setdefault(d.profile.id, MqttDecoder(d.profile))
            self._profiles[d.profile.id] = d.profile
            self.trackers[d.profile.id, d.address] = DeviceTracker(
                d.id,
                d.profile.kind,
                heartbeat_ms=int(d.profile.heartbeat_s * 1000),
                deadbands=profile_deadbands(d.profile),
            )

    @property
    def filters(self) -> list[str]:
        """Every subscription the devices need."""
        return sorted({f for dec in self._decoders.values() for f in dec.filters})

    def handle(self, t: int, topic: str, payload: bytes) -> list[Item]:
        """One message from the local broker."""
        if len(payload) > MAX_LOCAL_PAYLOAD:
            self.counts["too_large"] += 1
            return []
        items: list[Item] = []
        matched = taken = unknown = False
        refusals: list[str] = []
        for profile_id, decoder in self._decoders.items():
            result = decoder.decode(topic, payload)
            if result is None:
                continue
            matched = True
            if isinstance(result, str):
                refusals.append(f"{profile_id}: {result}")
                continue
            tracker = self.trackers.get((profile_id, result.address))
            if tracker is None:
                unknown = True
                continue
            taken = True
            self.counts["messages"] += 1
            for problem in result.sample.problems:
                log.info("local message on %s: %s", topic, problem)
            items.extend(tracker.sample(result.t if result.t is not None else t, result.sample))
            tracker.last_seen_t = t  # silence is judged on arrival time, not the box's clock
        if not matched:
            self.counts["unmatched"] += 1
        elif unknown and not taken:
            # A device address no site device has (a box's new channel, a mistyped address).
            self.counts["unknown_addresses"] += 1
            log.debug("local message on %s: no device has its address", topic)
        elif refusals and not taken:
            # Refused only if no profile on this topic took it: two models sharing a topic
            # each refuse the other's messages, which is no fault.
            self.counts["refused"] += 1
            log.debug("local message on %s refused: %s", topic, "; ".join(refusals))
        return items

    def diagnostics(self) -> dict[str, int]:
        """Messages refused since start: not JSON or without a device address, on no
        pattern of the profiles, for an address no device has, over the size limit."""
        c = self.counts
        names = ("refused", "unmatched", "unknown_addresses", "too_large")
        return {name: c[name] for name in names}

    def check_silence(self, t: int) -> list[Item]:
        """Offline events for devices silent longer than their profile allows."""
        items: list[Item] = []
        for (profile_id, _), tracker in self.trackers.items():
            limit_ms = int(self._profiles[profile_id].offline_after_s * 1000)
            if limit_ms > 0:
                items.extend(tracker.silent_since(t, limit_ms, self.started_t))
        return items


class LocalMqttCollector:
    """Subscribes to the community's local broker for its devices' messages."""

    def __init__(
        self,
        name: str,
        url: str,
        devices: Sequence[MqttDevice],
        *,
        client_id: str,
        clock: Callable[[], int] = wall_ms,
        backoff: bool = True,
    ) -> None:
        self.name = name
        self.address = parse_mqtt_url(url)
        self.client_id = client_id
        self._clock = clock
        self._backoff = backoff
        self.session = MqttSession(devices, started_t=clock())
        self.counts: Counter[str] = Counter()

    def diagnostics(self) -> dict[str, int]:
        """The broker connection's refusals since start (see MqttSession.diagnostics)."""
        return self.session.diagnostics()

    async def run(self, emit: Emit) -> None:
        """Subscribe and collect until cancelled, reconnecting with backoff."""
        delay = 1.0
        silence = asyncio.create_task(self._watch_silence(emit), name=f"{self.name}-silence")
        try:
            while True:
                try:
                    async with aiomqtt.Client(
                        self.address.host,
                        self.address.port,
                        username=self.address.username,
                        password=self.address.password,
                        identifier=self.client_id,
                        tls_context=tls_context(self.address),
                    ) as client:
                        for topic_filter in self.session.filters:
                            await client.subscribe(topic_filter, qos=1)
                        self.counts["connects"] += 1
                        delay = 1.0
                        async for message in client.messages:
                            items = self.session.handle(
                                self._clock(), str(message.topic), bytes(message.payload)
                            )
                            for item in items:
                                await emit(item)
                except aiomqtt.MqttError as exc:
                    self.counts["disconnects"] += 1
                    wait = random.uniform(0, delay) if self._backoff else 0.05  # noqa: S311
                    log.warning(
                        "%s: local broker: %s; reconnecting in %.1f s", self.name, exc, wait
                    )
                    await asyncio.sleep(wait)
                    delay = min(delay * 2, _BACKOFF_MAX_S)
        finally:
            silence.cancel()
            await asyncio.gather(silence, return_exceptions=True)

    async def _watch_silence(self, emit: Emit) -> None:
        while True:
            await asyncio.sleep(_SILENCE_CHECK_S)
            for item in self.session.check_silence(self._clock()):
                await emit(item)
