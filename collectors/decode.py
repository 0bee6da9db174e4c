"""Profiles compiled into sans-I/O decoders: registers, frames or JSON in, samples out.

Compiled once when a collector starts; at run time each decoder is a list of small
callables (:mod:`collectors.points`). Nothing here does I/O or raises on device input:
every oddity becomes a counted problem in the :class:`~collectors.points.Sample`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

import msgspec

from collectors.points import (
    TEXT,
    BitSpec,
    Decoder,
    PointSpec,
    Sample,
    compile_point,
    field_type,
)
from collectors.profile import (
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    FramedProfile,
    ModbusPoint,
    ModbusProfile,
    MqttField,
    MqttProfile,
    MqttTopic,
    Point,
)
from collectors.wire import MAX_T_MS, MIN_T_MS

__all__ = [
    "FrameDecoder",
    "ModbusPlan",
    "ModbusRead",
    "MqttDecoder",
    "MqttMessage",
    "pack_bits",
]

Table = Literal["holding", "input", "coil", "discrete"]
_BIT_TABLES: Final = ("coil", "discrete")


def _target(point: Point) -> Literal["field", "bits", "event", "codes"]:
    if point.bits is not None:
        return "bits"
    if point.event is not None:
        return "event"
    if point.codes is not None:
        return "codes"
    return "field"


def _lowest_bit(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


def _spec(
    kind: str, point: Point, name: str, start: int, *, size: int = 0, bit: int | None = None
) -> PointSpec:
    """The compiled form of a checked point. Data points of instant events have no wire
    field; their type follows from the point (enum or text → str, bool, integral → int)."""
    field_kind: Literal["bool", "int", "float", "str"] = "float"
    if point.field is not None:
        ft = field_type(kind, point.field)
        if ft is not None:
            field_kind = ft[0]
        elif point.enum is not None:
            field_kind = "str"
        elif point.type == TEXT:
            # Text stays text (an id, a name) unless scale or offset make it a number.
            plain = point.scale == 1.0 and point.offset == 0.0
            whole = point.scale == int(point.scale) and point.offset == int(point.offset)
            field_kind = "str" if plain else ("int" if whole else "float")
        elif point.type == "bool":
            field_kind = "bool"
        elif point.type not in ("f32", "f64") and point.scale == int(point.scale):
            field_kind = "int"
    bits: dict[int, BitSpec] | None = None
    if point.bits is not None:
        bits = {
            b: ("field", t.field, t.invert, t.when_set, t.when_clear)
            if t.field
            else ("event", t.event or "", t.invert, None, None)
            for b, t in point.bits.items()
        }
    shift = 0
    if point.mask is not None:
        shift = point.shift if point.shift is not None else _lowest_bit(point.mask)
    return PointSpec(
        name=name,
        start=start,
        vtype=point.type,
        word_order=point.word_order,
        byte_order=point.byte_order,
        scale=point.scale,
        offset=point.offset,
        size=size,
        bit=bit,
        mask=point.mask,
        shift=shift,
        target=_target(point),
        field_name=point.field or "",
        field_kind=field_kind,
        enum=point.enum,
        enum_default=point.enum_default,
        bits=bits,
        event=point.event or "",
        invert=point.invert,
        codes=point.codes,
        encoding=point.encoding,
    )


# --- Modbus -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModbusRead:
    """One read request of a poll: ``count`` registers (or bits) from ``address``."""

    table: Table
    address: int
    count: int


def _width(p: ModbusPoint) -> int:
    if p.table in _BIT_TABLES:
        return 1
    return max(1, (p.size + 1) // 2)


def pack_bits(bits: Sequence[bool]) -> bytes:
    """Coils/discrete inputs as Modbus packs them: 8 per byte, first bit least significant."""
    out = bytearray((len(bits) + 7) // 8)
    for i, on in enumerate(bits):
        if on:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


class ModbusPlan:
    """The reads one poll makes and how their answers become a sample.

    Points of one table whose addresses are at most ``max_gap`` apart are read in one
    request (fewer requests: less time on the wire), within the protocol's size limits.
    """

    def __init__(self, profile: ModbusProfile) -> None:
        self.reads: list[ModbusRead] = []
        self._decoders: list[list[Decoder]] = []
        by_table: dict[str, list[ModbusPoint]] = {}
        for p in profile.points:
            by_table.setdefault(p.table, []).append(p)
        for table in ("holding", "input", "coil", "discrete"):
            points = sorted(by_table.get(table, []), key=lambda p: p.address)
            limit = MAX_READ_BITS if table in _BIT_TABLES else MAX_READ_REGISTERS
            group: list[ModbusPoint] = []
            for p in points:
                if group:
                    first = group[0].address
                    end = max(q.address + _width(q) for q in group)
                    if p.address > end + profile.max_gap or p.address + _width(p) - first > limit:
                        self._add(profile.kind, table, group)
                        group = []
                group.append(p)
            if group:
                self._add(profile.kind, table, group)

    def _add(self, kind: str, table: Table, group: list[ModbusPoint]) -> None:
        first = group[0].address
        count = max(p.address + _width(p) for p in group) - first
        self.reads.append(ModbusRead(table, first, count))
        decoders = []
        for p in group:
            name = f"{table} {p.address}"
            if table in _BIT_TABLES:
                decoders.append(compile_point(_spec(kind, p, name, 0, bit=p.address - first)))
            else:
                size = 2 if p.type == "bool" else p.length
                start = (p.address - first) * 2
                decoders.append(compile_point(_spec(kind, p, name, start, size=size)))
        self._decoders.append(decoders)

    def decode(self, blocks: Sequence[bytes]) -> Sample:
        """One sample from the answers to :attr:`reads`, in order (registers big-endian,
        bits packed as :func:`pack_bits` does)."""
        sample = Sample()
        for block, decoders in zip(blocks, self._decoders, strict=True):
            for decode in decoders:
                decode(block, sample)
        return sample

    @staticmethod
    def registers_to_bytes(registers: Sequence[int]) -> bytes:
        """Registers as they travelled: each 16-bit value big-endian."""
        return struct.pack(f">{len(registers)}H", *registers)


# --- framed serial ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _CompiledMessage:
    name: str
    when_byte: int | None
    when_value: int | None
    decoders: tuple[Decoder, ...]
    instant: str | None


class FrameDecoder:
    """Turns a good frame into (bus address, message name, sample); see FramedProfile."""

    def __init__(self, profile: FramedProfile) -> None:
        self.address_at = profile.frame.address_at
        self._messages = []
        for m in profile.messages:
            decoders = tuple(
                compile_point(
                    _spec(profile.kind, p, f"{m.name} byte {p.byte}", p.byte, size=p.length)
                )
                for p in m.points
            )
            self._messages.append(
                _CompiledMessage(m.name, m.when_byte, m.when_value, decoders, m.instant)
            )

    def decode(self, frame: bytes) -> tuple[int | None, str, Sample] | None:
        """Decode one frame; None if no message of the profile matches it."""
        address = None
        if self.address_at is not None:
            if self.address_at >= len(frame):
                return None
            address = frame[self.address_at]
        for m in self._messages:
            if m.when_byte is not None and (
                m.when_byte >= len(frame) or frame[m.when_byte] != m.when_value
            ):
                continue
            sample = Sample()
            for decode in m.decoders:
                decode(frame, sample)
            if m.instant is not None:
                data: dict[str, Any] = dict(sample.fields)
                sample.fields.clear()
                sample.instants.append((m.instant, data))
            return address, m.name, sample
        return None


# --- local MQTT -------------------------------------------------------------------------

_PATH_STEP: Final = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_UNITS: Final = {"s": "epoch seconds", "ms": "epoch milliseconds", "iso8601": "an ISO-8601 time"}


def _compile_path(path: str) -> tuple[str | int, ...]:
    steps: list[str | int] = []
    for name, index in _PATH_STEP.findall(path.removeprefix("$.")):
        steps.append(int(index) if index else name)
    return tuple(steps)


def _get(doc: Any, steps: tuple[str | int, ...]) -> Any:
    for step in steps:
        if isinstance(step, int):
            if not isinstance(doc, list) or step >= len(doc):
                return None
        elif not isinstance(doc, dict):
            return None
        doc = doc[step] if isinstance(step, int) else doc.get(step)
    return doc


def _same(value: Any, options: Sequence[str | int | bool]) -> bool:
    """JSON equality that keeps true and 1 apart."""
    return any(type(value) is type(o) and value == o for o in options)


@dataclass(frozen=True, slots=True)
class MqttMessage:
    """What one local MQTT message said: the device address, its time if given, a sample."""

    address: str
    t: int | None
    sample: Sample


def _lowered(f: MqttField) -> MqttField:
    if f.enum is None:
        return f
    return msgspec.structs.replace(f, enum={k.lower(): v for k, v in f.enum.items()})


class _CompiledTopic:
    def __init__(self, kind: str, topic: MqttTopic) -> None:
        self.topic = topic
        self.levels = topic.pattern.split("/")
        self.filter = "/".join("+" if lv.startswith("{") else lv for lv in self.levels)
        source, _, ref = topic.address.partition(":")
        self.address_level = self.levels.index("{" + ref + "}") if source == "topic" else None
        self.address_path = _compile_path(ref) if source == "json" else ()
        self.time_path = _compile_path(topic.time) if topic.time else None
        self.zone = ZoneInfo(topic.time_zone)
        self.fields = [
            (name, _compile_path(f.path), _lowered(f), field_type(kind, name))
            for name, f in topic.fields.items()
        ]
        self.events = [
            (e, _compile_path(e.path), {k: _compile_path(v) for k, v in e.data.items()})
            for e in topic.events
        ]
        #: Every value some event lists, per JSON path: a value another event on the same
        #: path takes is not a problem of this one.
        self.listed: dict[str, list[str | int | bool]] = {}
        for e in topic.events:
            self.listed.setdefault(e.path, []).extend([*e.start, *e.end, *e.instant])

    def _time(self, raw: Any, sample: Sample) -> int | None:
        """The device's time in epoch ms, or None (with a problem: the message then keeps
        its arrival time; a box whose clock is unset must not spoil the uplink batch)."""
        unit = self.topic.time_unit
        ms: float | None = None
        if unit == "iso8601":
            if isinstance(raw, str):
                try:
                    when = dt.datetime.fromisoformat(raw)
                except ValueError:
                    when = None
                if when is not None:
                    if when.tzinfo is None:
                        when = when.replace(tzinfo=self.zone)
                    ms = when.timestamp() * 1000
        elif isinstance(raw, int | float) and not isinstance(raw, bool):
            ms = raw * 1000 if unit == "s" else raw
        if ms is None:
            sample.problems.append(f"time {raw!r} at {self.topic.time!r} is not {_UNITS[unit]}")
            return None
        if not (math.isfinite(ms) and MIN_T_MS <= ms < MAX_T_MS):
            sample.problems.append(f"time {raw!r} is not a plausible {_UNITS[unit]}")
            return None
        return int(ms)

    def match(self, levels: list[str]) -> bool:
        if len(levels) != len(self.levels):
            return False
        return all(p.startswith("{") or p == lv for p, lv in zip(self.levels, levels, strict=True))

    def decode(self, levels: list[str], doc: Any) -> MqttMessage | None:
        sample = Sample()
        if self.address_level is not None:
            address: Any = levels[self.address_level]
        else:
            address = _get(doc, self.address_path)
        if not isinstance(address, str | int) or isinstance(address, bool):
            return None
        t = None
        if self.time_path is not None:
            t = self._time(_get(doc, self.time_path), sample)
        for name, steps, spec, ft in self.fields:
            value = _get(doc, steps)
            if value is None:
                continue
            converted = _convert(value, spec.enum, spec.scale, spec.true, ft)
            if converted is None:
                sample.problems.append(f"{name}: {value!r} at {spec.path!r} does not fit")
            else:
                sample.fields[name] = converted
        unlisted: set[str] = set()
        for ev, steps, data_paths in self.events:
            value = _get(doc, steps)
            if value is None:
                continue
            data = {}
            for key, path in data_paths.items():
                item = _get(doc, path)
                if isinstance(item, str | int | float | bool):
                    data[key] = item
            if _same(value, ev.start):
                sample.set_event(ev.event, True, data)
            elif _same(value, ev.end):
                sample.set_event(ev.event, False, end_data=data)
            elif _same(value, ev.instant):
                sample.instants.append((ev.event, data))
            elif not _same(value, self.listed[ev.path]) and ev.path not in unlisted:
                unlisted.add(ev.path)  # one problem per value, however many events read it
                sample.problems.append(f"{ev.event}: value {value!r} is not listed")
        return MqttMessage(str(address), t, sample)


def _convert(
    value: Any,
    enum: dict[str, str] | None,
    scale: float,
    true: list[str | int | bool] | None,
    ft: tuple[str, frozenset[str]] | None,
) -> bool | int | float | str | None:
    base = ft[0] if ft else "str"
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if enum is not None:
        # Keys are matched without case (the profile's as written, lowered at compile).
        return enum.get(str(value).lower() if isinstance(value, str) else str(value))
    if base == "bool":
        if true is not None:
            return _same(value, true)
        if isinstance(value, bool):
            return value
        return value != 0 if is_number else None
    if base in ("int", "float"):
        if not is_number or not math.isfinite(value):
            return None
        scaled = value * scale
        return round(scaled) if base == "int" else float(scaled)
    if isinstance(value, str):
        return value[:512]
    return None


class MqttDecoder:
    """Matches a local broker's topics against a profile and decodes their JSON payloads."""

    def __init__(self, profile: MqttProfile) -> None:
        self._topics = [_CompiledTopic(profile.kind, t) for t in profile.topics]

    @property
    def filters(self) -> list[str]:
        """MQTT subscription filters for the profile's topic patterns."""
        return sorted({t.filter for t in self._topics})

    def decode(self, topic: str, payload: bytes) -> MqttMessage | str | None:
        """A decoded message, a reason it was refused, or None if no pattern matches."""
        levels = topic.split("/")
        for compiled in self._topics:
            if not compiled.match(levels):
                continue
            try:
                doc = msgspec.json.decode(payload)
            except msgspec.DecodeError:
                return "not JSON"
            message = compiled.decode(levels, doc)
            return message if message is not None else "no device address in the message"
        return None
