"""MQTT ingest: decode ▸ validate ▸ dedupe ▸ state ▸ telemetry, for every uplink message.

Theory of operation
-------------------
:class:`Ingest` is the pipeline without the MQTT client: the subscriber loop in
:mod:`server.ingest.mqtt` hands it each message's topic and payload. An ``up`` message is
accepted only if its topic parses, its payload decodes to a valid envelope, the topic's
community and gateway are the envelope's, and the registry knows the community, the gateway
and every device with the kind it claims. Anything else is **rejected**: counted under its
reason, logged in one line, kept in a short list of recent rejects for the API, and ingest
goes on with the next message.

An accepted envelope is then checked against its gateway's sequence window: a duplicate
(QoS 1 redelivery, a gateway re-sending after a lost PUBACK) is dropped and counted; a new
one updates live state and goes to the telemetry writer. A rejected envelope still consumes
its sequence number, so ``gaps`` counts only what the transport lost.

The registry index is cached; an unknown id triggers a reload (at most every
:data:`REGISTRY_RELOAD_MIN_S`), so devices added with ``linli registry import`` while the
server runs are picked up without a restart.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from collectors.wire import (
    Envelope,
    Item,
    Reading,
    WireError,
    decode_envelope,
    decode_status,
    parse_topic,
)
from server.ingest.seqtrack import SeqState, SeqVerdict
from server.store.registry import RegistryIndex
from server.telemetry import TelemetryWriter
from server.web.livestate import LiveState

__all__ = ["Ingest", "IngestStats", "Reason", "Rejected"]

log = logging.getLogger(__name__)

#: Where rejects of messages whose topic names no registered gateway are counted.
UNREGISTERED: Final = "unregistered"

REGISTRY_RELOAD_MIN_S: Final = 5.0
#: The registry is read again at least this often anyway, so that a change that names no new
#: id (a gateway retired) takes effect without a restart.
REGISTRY_REFRESH_S: Final = 30.0
RECENT_REJECTS: Final = 50
#: How much of a rejected payload is kept for the API (enough to see what it was).
REJECT_EXCERPT_BYTES: Final = 300


#: Where devices put a snapshot's reference: a reading's field, an event's data keys.
EVIDENCE_KEYS: Final = ("evidence", "snapshot", "photo", "image", "picture", "pic", "img")
#: Event data a device should never send (personal information, 个人信息保护法): dropped at
#: ingest and counted (``personal_data_dropped``). Profiles do not map these; a gateway or a
#: device publishing straight to the broker might.
PERSONAL_KEYS: Final = frozenset(
    {"plate", "plate_no", "plate_number", "license_plate", "phone", "mobile", "id_card",
     "id_no", "name", "face"}
)  # fmt: skip
_EVIDENCE_ID: Final = re.compile(r"^ev_[0-9a-f]{20}$")


def evidence_id(key: bytes, reference: str) -> str:
    """The opaque id stored for a device's evidence reference (a snapshot's file name may
    carry a plate): ``ev_`` and 20 hex digits of HMAC-SHA256 under the server's key. The
    same reference always gives the same id, so whoever holds the snapshots on site can find
    one (``linli evidence id REF…``); the server never keeps the reference itself."""
    if _EVIDENCE_ID.match(reference):
        return reference  # already an id (a gateway that sends ids, or a replay)
    return "ev_" + hmac.new(key, reference.encode(), hashlib.sha256).hexdigest()[:20]


def _opaque_evidence(key: bytes, items: Sequence[Item]) -> int:
    """Evidence references become ids; personal keys of event data are dropped. Returns how
    many values were dropped."""
    dropped = 0
    for item in items:
        values = item.fields if isinstance(item, Reading) else item.data
        if not values:
            continue
        for name in EVIDENCE_KEYS:
            ref = values.get(name)
            if isinstance(ref, str) and ref:
                values[name] = evidence_id(key, ref)
        if not isinstance(item, Reading):
            for name in [k for k in values if k.lower() in PERSONAL_KEYS]:
                del values[name]
                dropped += 1
    return dropped


class Reason(enum.StrEnum):
    """Why an uplink message was rejected."""

    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    SCHEMA = "schema"
    TOPIC = "topic"
    TOPIC_MISMATCH = "topic_mismatch"
    UNKNOWN_COMMUNITY = "unknown_community"
    UNKNOWN_GATEWAY = "unknown_gateway"
    RETIRED_GATEWAY = "retired_gateway"
    UNKNOWN_DEVICE = "unknown_device"
    KIND_MISMATCH = "kind_mismatch"


@dataclass(frozen=True)
class Rejected:
    """A rejected message: where it came from, why, and its first bytes."""

    topic: str
    reason: Reason
    detail: str
    excerpt: str
    at: int

    def as_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "reason": self.reason.value,
            "detail": self.detail,
            "excerpt": self.excerpt,
            "at": self.at,
        }


@dataclass
class IngestStats:
    """Counters for the health API and tests."""

    envelopes: int = 0
    items: int = 0
    duplicates: int = 0
    status_messages: int = 0
    alert_errors: int = 0
    #: Values of event data dropped as personal information (PERSONAL_KEYS).
    personal_data_dropped: int = 0
    #: Commits made durable (each ends a batch of messages; then they are acknowledged).
    commits: int = 0
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Rejects per registered gateway (by the message's topic); the rest under "unregistered",
    #: so that nobody publishing junk topics grows this.
    rejected_by_gateway: dict[str, collections.Counter[str]] = field(default_factory=dict)
    recent_rejects: collections.deque[Rejected] = field(
        default_factory=lambda: collections.deque(maxlen=RECENT_REJECTS)
    )


RegistryLoader = Callable[[], Awaitable[RegistryIndex]]


class AlertSink(Protocol):
    """Where accepted items and statuses go for alerting (server.alerting.service.AlertService)."""

    async def on_items(self, community: str, items: Sequence[Item]) -> None: ...

    async def on_status(self, community: str, gateway: str, online: bool) -> None: ...


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Ingest:
    """The ingest pipeline of one server process."""

    def __init__(
        self,
        *,
        prefix: str,
        registry: RegistryIndex,
        load_registry: RegistryLoader,
        live: LiveState,
        writer: TelemetryWriter,
        seq: dict[tuple[str, str], SeqState] | None = None,
        clock: Callable[[], float] = time.monotonic,
        alerts: AlertSink | None = None,
        evidence_key: bytes | None = None,
    ) -> None:
        self.prefix = prefix
        #: Evidence references from devices are stored as opaque ids keyed with this
        #: (:func:`evidence_id`); None keeps them as sent (tests of other things).
        self.evidence_key = evidence_key
        self.stats = IngestStats()
        self.seq: dict[tuple[str, str], SeqState] = seq or {}
        self.dirty: set[tuple[str, str]] = set()
        self._registry = registry
        self._load_registry = load_registry
        self._reloaded_at = float("-inf")
        self._live = live
        self._writer = writer
        self._clock = clock
        self._alerts = alerts

    @property
    def registry(self) -> RegistryIndex:
        """The registry index ingest currently checks against."""
        return self._registry

    def seal(self) -> Callable[[], Awaitable[None]]:
        """Take everything handled so far with the sequence windows it changed, now; the
        returned function makes it durable in one step (:meth:`TelemetryWriter.seal`) and
        may be called again after a failure. After it, what was handled may be acknowledged
        to the broker; the next messages may be handled while it runs."""
        dirty, self.dirty = self.dirty, set()
        write = self._writer.seal({key: self.seq[key].to_bytes() for key in dirty})

        async def commit() -> None:
            await write()
            self.stats.commits += 1

        return commit

    async def commit(self) -> None:
        """Seal and write at once."""
        await self.seal()()

    @property
    def gaps(self) -> int:
        """Envelopes never received, over all gateways."""
        return sum(s.gaps for s in self.seq.values())

    async def handle(self, topic: str, payload: bytes) -> Rejected | None:
        """Process one message from the broker; return the rejection, if it was one."""
        try:
            addr = parse_topic(self.prefix, topic)
        except WireError as exc:
            return self._reject(topic, Reason.TOPIC, str(exc), payload)
        if addr.channel == "status":
            return await self._handle_status(topic, addr.community, addr.gateway, payload)
        if addr.channel != "up":
            return self._reject(
                topic, Reason.TOPIC, f"ingest does not take {addr.channel}", payload
            )
        try:
            env = decode_envelope(payload)
        except WireError as exc:
            return self._reject(topic, Reason(exc.problem), str(exc), payload)
        if (env.community, env.gw) != (addr.community, addr.gateway):
            return self._reject(
                topic,
                Reason.TOPIC_MISMATCH,
                f"envelope says community={env.community!r} gw={env.gw!r}",
                payload,
            )
        if self._clock() - self._reloaded_at >= REGISTRY_REFRESH_S:
            await self._reload_registry()
        problem = self._check_registry(env)
        if problem is not None and await self._reload_registry():
            problem = self._check_registry(env)
        key = (env.community, env.gw)
        state = self.seq.get(key)
        if state is None:
            state = self.seq[key] = SeqState()
        verdict = state.offer(env.seq)
        self.dirty.add(key)
        if problem is not None:
            reason, detail = problem
            return self._reject(topic, reason, detail, payload)
        if verdict is SeqVerdict.DUPLICATE:
            self.stats.duplicates += 1
            return None
        if self.evidence_key is not None:
            self.stats.personal_data_dropped += _opaque_evidence(self.evidence_key, env.items)
        self._live.apply(env.community, env.items)
        await self._writer.write(env.community, env.gw, env.items)
        # Counted once written, so that a reader of the counts finds the items stored.
        self.stats.envelopes += 1
        self.stats.items += len(env.items)
        if self._alerts is not None:
            try:
                await self._alerts.on_items(env.community, env.items)
            except Exception:  # telemetry is stored; the alert path must not stop ingest
                self.stats.alert_errors += 1
                log.exception("alerts failed on %s seq %d", topic, env.seq)
        return None

    async def _handle_status(
        self, topic: str, community: str, gateway: str, payload: bytes
    ) -> Rejected | None:
        if not payload:  # a cleared retained message
            return None
        try:
            status = decode_status(payload)
        except WireError as exc:
            return self._reject(topic, Reason(exc.problem), str(exc), payload)
        if (status.community, status.gw) != (community, gateway):
            return self._reject(
                topic,
                Reason.TOPIC_MISMATCH,
                f"status names {status.community}/{status.gw}",
                payload,
            )
        if self._clock() - self._reloaded_at >= REGISTRY_REFRESH_S:
            await self._reload_registry()
        if (community, gateway) in self._registry.retired:
            message = f"gateway {gateway!r} of {community} is retired"
            return self._reject(topic, Reason.RETIRED_GATEWAY, message, payload)
        t = status.t or _now_ms()
        self._live.set_gateway(community, gateway, status.status, t)
        await self._writer.write_status(community, gateway, status.status, t)
        self.stats.status_messages += 1
        if self._alerts is not None and (community, gateway) in self._registry.gateways:
            try:
                await self._alerts.on_status(community, gateway, status.status == "online")
            except Exception:
                self.stats.alert_errors += 1
                log.exception("alerts failed on %s", topic)
        return None

    def _check_registry(self, env: Envelope) -> tuple[Reason, str] | None:
        reg = self._registry
        if env.community not in reg.communities:
            return Reason.UNKNOWN_COMMUNITY, f"community {env.community!r} is not in the registry"
        if (env.community, env.gw) in reg.retired:
            return Reason.RETIRED_GATEWAY, f"gateway {env.gw!r} of {env.community} is retired"
        if (env.community, env.gw) not in reg.gateways:
            return (
                Reason.UNKNOWN_GATEWAY,
                f"gateway {env.gw!r} is not registered in {env.community}",
            )
        for i, item in enumerate(env.items):
            if item.kind == "gateway":
                if item.dev != env.gw:
                    return (
                        Reason.KIND_MISMATCH,
                        f"items[{i}]: a gateway item from {env.gw} names {item.dev!r}",
                    )
                continue
            info = reg.devices.get((env.community, item.dev))
            if info is None:
                return (
                    Reason.UNKNOWN_DEVICE,
                    f"items[{i}]: device {item.dev!r} is not registered in {env.community}",
                )
            if info.kind != item.kind:
                return (
                    Reason.KIND_MISMATCH,
                    f"items[{i}]: {item.dev} is a {info.kind}, the item says {item.kind}",
                )
        return None

    async def _reload_registry(self) -> bool:
        now = self._clock()
        if now - self._reloaded_at < REGISTRY_RELOAD_MIN_S:
            return False
        self._reloaded_at = now
        self._registry = await self._load_registry()
        return True

    def _reject(self, topic: str, reason: Reason, detail: str, payload: bytes) -> Rejected:
        excerpt = payload[:REJECT_EXCERPT_BYTES].decode("utf-8", "replace")
        rejected = Rejected(topic, reason, detail, excerpt, _now_ms())
        self.stats.rejected[reason.value] += 1
        by = self.stats.rejected_by_gateway
        by.setdefault(self._gateway_of(topic), collections.Counter())[reason.value] += 1
        self.stats.recent_rejects.append(rejected)
        log.warning("rejected uplink message on %s: %s: %s", topic, reason.value, detail)
        return rejected

    def _gateway_of(self, topic: str) -> str:
        try:
            addr = parse_topic(self.prefix, topic)
        except WireError:
            return UNREGISTERED
        known = (addr.community, addr.gateway)
        if known not in self._registry.gateways and known not in self._registry.retired:
            return UNREGISTERED
        return f"{addr.community}/{addr.gateway}"

    def stats_json(self) -> dict[str, Any]:
        """The counters as the API shows them."""
        return {
            "envelopes": self.stats.envelopes,
            "items": self.stats.items,
            "duplicates": self.stats.duplicates,
            "gaps": self.gaps,
            "commits": self.stats.commits,
            "status_messages": self.stats.status_messages,
            "alert_errors": self.stats.alert_errors,
            "personal_data_dropped": self.stats.personal_data_dropped,
            "rejected": dict(self.stats.rejected),
            "rejected_total": sum(self.stats.rejected.values()),
            "recent_rejects": [r.as_json() for r in self.stats.recent_rejects],
            "gateways": {
                f"{c}/{g}": {
                    "high": s.high,
                    "gaps": s.gaps,
                    "duplicates": s.duplicates,
                    "jumps": s.jumps,
                    "rejected": dict(self.stats.rejected_by_gateway.get(f"{c}/{g}", {})),
                }
                for (c, g), s in sorted(self.seq.items())
            },
            "rejected_by_gateway": {
                key: dict(counts) for key, counts in sorted(self.stats.rejected_by_gateway.items())
            },
        }
