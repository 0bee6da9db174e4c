"""The uplink wire contract that gateway and server both speak (DESIGN.md, "Contracts").

This module is I/O free: bytes go in, typed objects come out, and objects encode back to
bytes. It is the only definition of the contract; never copy it.

Topics (prefix configurable, default ``linli/v1``)::

    {prefix}/{community}/{gateway}/up        gateway -> server, QoS 1, an Envelope
    {prefix}/{community}/{gateway}/status    retained {"status": "online"|"offline", ...}
    {prefix}/{community}/{gateway}/config    server -> gateway, retained, versioned sections
    {prefix}/{community}/{gateway}/cmd       server -> gateway, a :class:`Command`
    {prefix}/{community}/{gateway}/cmd/ack   gateway -> server, an :class:`Ack` (command or config)
    {prefix}/org/{org}/alerts                an organisation's alert feed (issue 5)

Envelope (JSON, UTF-8)::

    {"v": 1, "gw": "gw-1", "community": "c-001", "seq": 41, "sent": <epoch ms>,
     "items": [ <reading> | <event>, ... ]}

    reading: {"t": <epoch ms>, "dev": "el-3", "kind": "elevator", "fields": {...}}
    event:   {"t": ..., "dev": ..., "kind": ..., "event": "trapped",
              "state": "start"|"end"|"instant", "data": {...}}

Invariants checked at decode (a violation raises :class:`WireError` naming the path):

* ``seq`` increases by one per batch per gateway and never repeats; the receiver uses it to
  drop duplicates and to count gaps, so it must be a non-negative integer.
* Identifiers (community, gateway, device) are lower-case slugs, because they are MQTT topic
  levels and InfluxDB tags.
* A reading's field names and value types, and an event's name, belong to its device kind
  (DOMAIN.md, "Device kinds, fields and events"); unknown ones are refused rather than stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar, get_args

import msgspec

T = TypeVar("T")

__all__ = [
    "COMMAND_OPS",
    "DEFAULT_TOPIC_PREFIX",
    "DEVICE_COMMAND_OPS",
    "ELEVATOR_CODED_FAULTS",
    "EVENTS_BY_KIND",
    "FIELDS_BY_KIND",
    "ID_PATTERN",
    "MAX_ITEMS_PER_ENVELOPE",
    "MAX_PAYLOAD_BYTES",
    "MAX_T_MS",
    "MIN_T_MS",
    "POLL_OK_PREFIX",
    "PROTOCOL_VERSION",
    "REMOTE_SECTIONS",
    "Ack",
    "Command",
    "CommandOp",
    "DeviceKind",
    "Envelope",
    "Event",
    "EventState",
    "GatewayStatus",
    "Item",
    "ItemKind",
    "Reading",
    "TopicAddress",
    "WireError",
    "decode_ack",
    "decode_command",
    "decode_envelope",
    "decode_status",
    "encode_command",
    "encode_envelope",
    "encode_status",
    "parse_topic",
    "topic_for",
]

PROTOCOL_VERSION: Final = 1
DEFAULT_TOPIC_PREFIX: Final = "linli/v1"
#: A batch larger than this is refused unread. 256 KiB holds ~2,000 readings, far above the
#: gateway's batch bound; mosquitto's own default message_size_limit is much larger, so the
#: check must live here.
MAX_PAYLOAD_BYTES: Final = 256 * 1024
#: Items in one envelope; the gateway's batches are bounded well below this.
MAX_ITEMS_PER_ENVELOPE: Final = 5000
#: Device timestamps outside [2000-01-01, 2100-01-01) in epoch ms are refused as nonsense.
MIN_T_MS: Final = 946_684_800_000
MAX_T_MS: Final = 4_102_444_800_000

ID_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

DeviceKind = Literal["elevator", "fire_lane", "gate", "fire_panel"]
#: What an item can be about: a device, or the gateway itself (its periodic health item,
#: ``dev`` being the gateway's id).
ItemKind = Literal["elevator", "fire_lane", "gate", "fire_panel", "gateway"]
#: Per-device poll success in a gateway health item: ``poll_ok.<device id>``, 0..1.
POLL_OK_PREFIX: Final = "poll_ok."
#: Error counters in a gateway health item, counted since the gateway started (never reset):
#: ``bus.<collector>.<counter>`` for a line or broker (checksum_errors, stray_bytes,
#: torn_frames, timeouts, crc_errors, exceptions …) and ``dev.<device>.<counter>`` for a
#: device (misses, value_problems, exceptions, offline). Only counters above 0 are sent.
BUS_PREFIX: Final = "bus."
DEV_PREFIX: Final = "dev."
_COUNTER_NAME: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
EventState = Literal["start", "end", "instant"]
FieldValue = bool | int | float | str


WireProblem = Literal["too_large", "malformed", "schema", "topic"]


class WireError(ValueError):
    """A payload or topic that does not follow the contract; the message names where.

    ``problem`` sorts it for counting: ``too_large`` (refused unread), ``malformed`` (not JSON
    or not UTF-8), ``schema`` (JSON of the wrong shape or values) or ``topic``.
    """

    def __init__(self, problem: WireProblem, message: str) -> None:
        super().__init__(message)
        self.problem: WireProblem = problem


# --- per-kind field schemas (DOMAIN.md) -------------------------------------------------


class _Fields(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    """Base of the per-kind field schemas: every field optional, unknown names refused."""


class ElevatorFields(_Fields, frozen=True):
    """Elevator readings; service_mode codes follow GB/T 24476 (out_of_service 0 … unknown 7)."""

    running: bool | None = None
    direction: Literal["none", "up", "down"] | None = None
    floor: int | None = None
    door_zone: bool | None = None
    door: Literal["closed", "open", "opening", "closing"] | None = None
    occupied: bool | None = None
    service_mode: (
        Literal[
            "out_of_service",
            "normal",
            "inspection",
            "fire_return",
            "firefighter",
            "emergency_power",
            "earthquake",
            "unknown",
        ]
        | None
    ) = None
    power: Literal["mains", "battery", "off"] | None = None
    run_hours: float | None = None
    trips: int | None = None


class FireLaneFields(_Fields, frozen=True):
    """Fire-lane readings from a camera-AI box, radar or geomagnetic sensor."""

    occupied: bool | None = None
    dwell_s: float | None = None
    object: Literal["vehicle", "ebike", "goods", "unknown"] | None = None
    evidence: str | None = None


class GateFields(_Fields, frozen=True):
    """Gate / door / barrier readings."""

    open: bool | None = None
    locked: bool | None = None
    mode: Literal["normal", "held_open", "locked_down", "fire_release"] | None = None
    passages: int | None = None


class FirePanelFields(_Fields, frozen=True):
    """A fire alarm input (dry contact or GB/T 26875.3 feed)."""

    alarm: bool | None = None


class GatewayFields(_Fields, frozen=True):
    """A gateway's health item (besides per-device ``poll_ok.<dev>`` shares, 0..1)."""

    queue_depth: int | None = None  # items not yet acknowledged by the broker
    oldest_unsent_s: float | None = None
    disk_bytes: int | None = None  # the queue's file and WAL
    budget_bytes: int | None = None
    thinned: int | None = None  # routine readings dropped under the disk budget, ever
    reconnects: int | None = None  # uplink connections lost since start
    clock_offset_ms: int | None = None  # server clock minus gateway clock (last command)
    devices: int | None = None
    devices_ok: int | None = None  # devices whose polls all succeeded in the period
    software: str | None = None
    config_version: int | None = None
    uptime_s: float | None = None


FIELDS_BY_KIND: Final[dict[str, type[_Fields]]] = {
    "elevator": ElevatorFields,
    "fire_lane": FireLaneFields,
    "gate": GateFields,
    "fire_panel": FirePanelFields,
    "gateway": GatewayFields,
}

#: The elevator faults with GB/T 24476 codes 01-10 (DOMAIN.md); rules and figures build on it.
ELEVATOR_CODED_FAULTS: Final = frozenset(
    {
        "safety_circuit_open",  # 01
        "door_close_fault",  # 02
        "door_open_fault",  # 03
        "stopped_outside_door_zone",  # 04
        "unintended_movement",  # 05
        "motor_runtime_limiter",  # 06
        "position_lost",  # 07
        "restart_prevented",  # 08
        "overtravel_top",  # 09
        "overtravel_bottom",  # 10
    }
)

#: Event names per kind, with the regulator platform codes (GB/T 24476) in DOMAIN.md.
EVENTS_BY_KIND: Final[dict[str, frozenset[str]]] = {
    "elevator": frozenset(
        {
            "safety_circuit_open",  # 01
            "door_close_fault",  # 02
            "door_open_fault",  # 03
            "stopped_outside_door_zone",  # 04
            "unintended_movement",  # 05
            "motor_runtime_limiter",  # 06
            "position_lost",  # 07
            "restart_prevented",  # 08
            "overtravel_top",  # 09
            "overtravel_bottom",  # 10
            "trapped",  # 11
            "door_open_while_running",
            "overspeed",
            "repeated_door_cycles",
            "door_obstructed",
            "long_stop",
            "power_failure",  # 41
            "alarm_button",  # 90
            "service_mode_changed",  # 40-47
            "ebike_detected",
            "terminal_offline",
        }
    ),
    "fire_lane": frozenset({"obstruction", "voice_warning", "sensor_fault"}),
    "gate": frozenset(
        {
            "forced_open",
            "held_open",
            "invalid_attempts",
            "comm_lost",
            "device_fault",
            "fire_release",
            "remote_open",
        }
    ),
    "fire_panel": frozenset({"fire_alarm", "comm_lost"}),
    "gateway": frozenset({"gateway_offline"}),
}

assert set(FIELDS_BY_KIND) == set(get_args(ItemKind)) == set(EVENTS_BY_KIND)
assert set(get_args(ItemKind)) == {*get_args(DeviceKind), "gateway"}


# --- items and envelope -----------------------------------------------------------------


class Reading(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A device's measured state at device time ``t`` (epoch ms); fields may be partial."""

    t: int
    dev: str
    kind: ItemKind
    fields: dict[str, FieldValue]


class Event(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Something that happened on a device: a condition's start/end or an instant."""

    t: int
    dev: str
    kind: ItemKind
    event: str
    state: EventState
    data: dict[str, Any] = msgspec.field(default_factory=dict)


Item = Reading | Event


def _check_poll_shares(fields: dict[str, FieldValue]) -> dict[str, FieldValue]:
    """Check a health item's ``poll_ok.<dev>`` shares and ``bus.``/``dev.`` counters; return
    the other fields."""
    rest: dict[str, FieldValue] = {}
    for name, value in fields.items():
        if name.startswith((BUS_PREFIX, DEV_PREFIX)):
            owner, _, counter = name.partition(".")[2].rpartition(".")
            if not ID_PATTERN.match(owner) or not _COUNTER_NAME.match(counter):
                raise ValueError(f"field {name!r}: write {name.split('.')[0]}.<id>.<counter>")
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"field {name!r}: expected a count (an integer >= 0)")
            continue
        if not name.startswith(POLL_OK_PREFIX):
            rest[name] = value
            continue
        if not ID_PATTERN.match(name[len(POLL_OK_PREFIX) :]):
            raise ValueError(f"field {name!r}: the device id is not a slug")
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"field {name!r}: expected a share between 0 and 1, got {value!r}")
    return rest


class _WireItem(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Decoding shape of an item: a reading or an event, told apart by their keys."""

    t: int
    dev: str
    kind: ItemKind
    fields: dict[str, FieldValue] | None = None
    event: str | None = None
    state: EventState | None = None
    data: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not MIN_T_MS <= self.t < MAX_T_MS:
            raise ValueError(f"t={self.t} is not an epoch-millisecond time between 2000 and 2100")
        if not ID_PATTERN.match(self.dev):
            raise ValueError(f"dev {self.dev!r} is not a slug like 'el-3'")
        if self.event is None:
            if self.fields is None:
                raise ValueError("an item needs 'fields' (a reading) or 'event' (an event)")
            if self.state is not None or self.data is not None:
                raise ValueError("a reading has no 'state' or 'data'; did you mean an event?")
            fields = self.fields
            if self.kind == "gateway":
                fields = _check_poll_shares(fields)
            try:
                msgspec.convert(fields, FIELDS_BY_KIND[self.kind])
            except msgspec.ValidationError as exc:
                raise ValueError(f"field of {self.kind}: {exc}") from exc
        else:
            if self.fields is not None:
                raise ValueError("an item has either 'fields' or 'event', not both")
            if self.event not in EVENTS_BY_KIND[self.kind]:
                raise ValueError(f"unknown {self.kind} event {self.event!r}")
            if self.state is None:
                raise ValueError("an event needs 'state': 'start', 'end' or 'instant'")

    def to_item(self) -> Item:
        if self.event is None:
            assert self.fields is not None
            return Reading(self.t, self.dev, self.kind, self.fields)
        assert self.state is not None
        return Event(self.t, self.dev, self.kind, self.event, self.state, self.data or {})


class _WireEnvelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    v: int
    gw: str
    community: str
    seq: int
    sent: int
    items: list[_WireItem]

    def __post_init__(self) -> None:
        if self.v != PROTOCOL_VERSION:
            raise ValueError(f"unsupported protocol version v={self.v}; expected 1")
        for name, value in (("gw", self.gw), ("community", self.community)):
            if not ID_PATTERN.match(value):
                raise ValueError(f"{name} {value!r} is not a slug like 'gw-1'")
        if self.seq < 0:
            raise ValueError(f"seq={self.seq} must be >= 0")
        if len(self.items) > MAX_ITEMS_PER_ENVELOPE:
            raise ValueError(f"{len(self.items)} items exceed {MAX_ITEMS_PER_ENVELOPE}")


class Envelope(msgspec.Struct, frozen=True):
    """One batch from one gateway; ``seq`` is per gateway, +1 per batch, never repeated."""

    gw: str
    community: str
    seq: int
    sent: int
    items: list[Item]
    v: int = PROTOCOL_VERSION


_envelope_decoder = msgspec.json.Decoder(_WireEnvelope)
_encoder = msgspec.json.Encoder()


def _decode(decoder: msgspec.json.Decoder[T], payload: bytes) -> T:
    """Decode one message; :class:`WireError` sorted into ``schema`` (msgspec's message
    carries the JSON path, e.g. "... - at `$.items[2].t`") or ``malformed``."""
    try:
        return decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise WireError("schema", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise WireError("malformed", f"not JSON: {exc}") from exc


def encode_envelope(envelope: Envelope) -> bytes:
    """Serialise an envelope to the JSON the contract specifies."""
    return _encoder.encode(envelope)


def decode_envelope(payload: bytes) -> Envelope:
    """Parse and validate an uplink payload; raise :class:`WireError` saying what and where."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError("too_large", f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    wire = _decode(_envelope_decoder, payload)
    return Envelope(
        gw=wire.gw,
        community=wire.community,
        seq=wire.seq,
        sent=wire.sent,
        items=[item.to_item() for item in wire.items],
        v=wire.v,
    )


# --- status -----------------------------------------------------------------------------


class GatewayStatus(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The retained ``status`` message; the ``offline`` one is the gateway's Last Will."""

    status: Literal["online", "offline"]
    gw: str
    community: str
    t: int | None = None


_status_decoder = msgspec.json.Decoder(GatewayStatus)


def encode_status(status: GatewayStatus) -> bytes:
    """Serialise a status message."""
    return _encoder.encode(status)


def decode_status(payload: bytes) -> GatewayStatus:
    """Parse a status message; raise :class:`WireError` on anything else."""
    return _decode(_status_decoder, payload)


# --- management: config, cmd, cmd/ack ------------------------------------------------

#: The site-config sections a remote ``config`` may replace; the rest is the gateway's own.
REMOTE_SECTIONS: Final[tuple[str, ...]] = (
    "collectors",
    "batch",
    "queue",
    "edge",
    "outputs",
    "health_interval_s",
)

CommandOp = Literal["unlock", "lock", "voice_warning", "reread", "ping"]
COMMAND_OPS: Final = frozenset(get_args(CommandOp))
#: The operations that act on one device, and so need ``device``.
DEVICE_COMMAND_OPS: Final = COMMAND_OPS - {"ping"}


class Command(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """A command on ``cmd``."""

    id: str
    op: CommandOp
    device: str | None = None
    expires: int | None = None  # epoch ms after which it must not be acted on
    sent: int | None = None  # server time when sent (the gateway's clock offset comes from it)


class Ack(msgspec.Struct, frozen=True, omit_defaults=True):
    """A gateway's answer on ``cmd/ack``: to a command (``id``) or to a config (``type`` is
    ``config``, with the ``version`` offered and the one ``running``)."""

    ok: bool
    t: int
    type: Literal["cmd", "config"] = "cmd"
    id: str | None = None
    op: str | None = None
    version: int | None = None
    running: int | None = None
    result: str | None = None
    error: str | None = None


_command_decoder = msgspec.json.Decoder(Command)
_ack_decoder = msgspec.json.Decoder(Ack)


def encode_command(command: Command) -> bytes:
    """Serialise a command."""
    return _encoder.encode(command)


def decode_command(payload: bytes) -> Command:
    """Parse a command; raise :class:`WireError` naming what is wrong."""
    return _decode(_command_decoder, payload)


def decode_ack(payload: bytes) -> Ack:
    """Parse an acknowledgement; raise :class:`WireError` naming what is wrong."""
    ack = _decode(_ack_decoder, payload)
    if ack.type == "cmd" and ack.id is None:
        raise WireError("schema", "a command acknowledgement needs an id")
    return ack


# --- topics -----------------------------------------------------------------------------

Channel = Literal["up", "status", "config", "cmd", "cmd/ack"]
_CHANNELS: Final = frozenset(get_args(Channel))


@dataclass(frozen=True, slots=True)
class TopicAddress:
    """Where a gateway topic points: community, gateway and channel."""

    community: str
    gateway: str
    channel: str


def topic_for(prefix: str, community: str, gateway: str, channel: Channel) -> str:
    """The topic of one gateway's channel."""
    return f"{prefix}/{community}/{gateway}/{channel}"


def parse_topic(prefix: str, topic: str) -> TopicAddress:
    """Split a gateway topic; raise :class:`WireError` if it is not one of the contract's."""
    head = prefix + "/"
    if not topic.startswith(head):
        raise WireError("topic", f"topic {topic!r} is not under prefix {prefix!r}")
    parts = topic[len(head) :].split("/", 2)
    if len(parts) != 3:
        raise WireError("topic", f"topic {topic!r} is not {prefix}/<community>/<gateway>/<channel>")
    community, gateway, channel = parts
    if channel not in _CHANNELS:
        raise WireError("topic", f"topic {topic!r} has unknown channel {channel!r}")
    if not (ID_PATTERN.match(community) and ID_PATTERN.match(gateway)):
        raise WireError("topic", f"topic {topic!r} has a community or gateway that is not a slug")
    return TopicAddress(community, gateway, channel)
