"""Device profiles: a sensor model described in YAML, so that a new model is a file, not code.

A profile says how to talk to one maker's model (Modbus RTU registers, a framed serial
protocol, or JSON over a local MQTT broker) and how its values become the reading fields and
events of DOMAIN.md. It also records how the device is set up in the field: its reporting
interval and the thresholds it is configured with. docs/firmware-configs.md is the guide.

Loading converts the YAML into the frozen types below with msgspec, then :func:`_check`
verifies what types cannot: field and event names of the device kind, value types that fit
the field (an ``int`` field cannot have scale 0.1), positions inside the frame, one target per
point. Every problem names the file, the line and the key path.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from collectors.checksums import WIDTH, ChecksumName
from collectors.points import (
    BCD_TYPES,
    SIZE,
    TEXT,
    Encoding,
    Order,
    ValueType,
    field_type,
    value_size,
)
from collectors.wire import EVENTS_BY_KIND, FIELDS_BY_KIND, ID_PATTERN, DeviceKind
from collectors.yamlconf import ConfigError, Problem, key_lines, load_yaml

__all__ = [
    "BitTarget",
    "Frame",
    "FramedProfile",
    "Message",
    "ModbusPoint",
    "ModbusProfile",
    "MqttEvent",
    "MqttField",
    "MqttProfile",
    "MqttTopic",
    "Point",
    "Profile",
    "SerialSettings",
    "load_profile",
    "load_profiles",
]

PROFILE_VERSION: Final = 1
_FLOATS: Final = ("f32", "f64")
#: Modbus application protocol v1.1b3 §6.3/§6.4: at most 125 registers per read, and
#: §6.1/§6.2: 2000 coils or discrete inputs.
MAX_READ_REGISTERS: Final = 125
MAX_READ_BITS: Final = 2000
#: A frame longer than this is not a sensor report; the parser caps its buffer with it.
MAX_FRAME_BYTES: Final = 1024

#: Bytes written as hex pairs, e.g. "AA 55"; checked in :func:`_check_framed`, so that the
#: message says what to write rather than quoting a regular expression.
HexBytes = str
_HEX = re.compile(r"^\s*([0-9A-Fa-f]{2}\s*)+$")


class _Conf(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class SerialSettings(_Conf, frozen=True):
    """Line settings; Modbus over Serial Line §2.5.1 makes 8E1 the default, makers vary."""

    baudrate: int = 9600
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1

    @property
    def bits_per_char(self) -> int:
        """Bits on the wire per character: start + data + parity + stop."""
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits


class BitTarget(_Conf, frozen=True):
    """What one bit of a status word means: a boolean field, a named field's value when the
    bit is set and when it is clear (``set``/``clear``: YAML reads ``on``/``off`` keys as
    booleans), or a condition event."""

    field: str | None = None
    event: str | None = None
    invert: bool = False
    #: For a named field (``power``, ``door``): its value while the bit is set / clear; one
    #: may be left out (the field is then not set in that case).
    when_set: str | None = msgspec.field(default=None, name="set")
    when_clear: str | None = msgspec.field(default=None, name="clear")


class Point(_Conf, frozen=True):
    """One value and what it becomes. Exactly one of field, bits, event, codes.

    value = raw × scale + offset (raw first narrowed to ``(raw & mask) >> shift`` when a
    ``mask`` is given); ``enum`` maps raw integers to a field's names, ``bits`` maps
    bit numbers (0 = least significant) of a status word, ``event`` is a condition that is on
    while the value is non-zero, ``codes`` maps a fault-code value to the event it starts
    (0 = no fault; a change ends the old event and starts the new one).
    """

    type: ValueType = "u16"
    byte_order: Order = "big"
    word_order: Order = "big"
    #: A bit group of the value: ``(raw & mask) >> shift`` is what the rest of the point
    #: sees (enum, scale, event, codes). ``shift`` defaults to the mask's lowest set bit.
    mask: int | None = None
    shift: int | None = None
    scale: float = 1.0
    offset: float = 0.0
    field: str | None = None
    #: Raw value → name; for a ``string`` point, text → name.
    enum: dict[int | str, str] | None = None
    enum_default: str | None = None
    bits: dict[int, BitTarget] | None = None
    event: str | None = None
    invert: bool = False
    codes: dict[int, str] | None = None
    #: For a number field: a change smaller than this (from the value last reported) does
    #: not make a reading; heartbeats still do. 0: every change counts.
    deadband: float = 0.0
    #: For ``type: string``: its size in bytes, and how its bytes are text.
    length: int = 0
    encoding: Encoding = "ascii"
    description: str = ""

    @property
    def size(self) -> int:
        """Bytes the value occupies."""
        return value_size(self.type, self.length)


class ModbusPoint(Point, frozen=True):
    """A point at a Modbus address (0-based PDU address: holding register 40001 is 0)."""

    address: int = -1
    table: Literal["holding", "input", "coil", "discrete"] = "holding"


class FramePoint(Point, frozen=True):
    """A point at a byte position of the unescaped frame (0 = first start byte). A frame is
    bytes: a point is one byte (``u8``) unless its ``type`` says otherwise."""

    byte: int = -1
    type: ValueType = "u8"


class _ProfileBase(_Conf, frozen=True):
    profile: Literal[1]
    id: str
    kind: DeviceKind
    maker: str
    model: str
    #: How often the device reports (push) or is polled (Modbus), in seconds.
    report_interval_s: float
    #: The thresholds the device itself is configured with (e.g. its own trapped-detection
    #: delay), by name, in the unit the name says. Recorded so that the edge rules and the
    #: alert rules can be compared with what the device does.
    thresholds: dict[str, float] = {}
    #: A reading whose values did not change is still sent this often, so silence means loss.
    heartbeat_s: float = 60.0
    description: str = ""


class ModbusProfile(
    _ProfileBase, frozen=True, kw_only=True, tag="modbus_rtu", tag_field="protocol"
):
    """A Modbus RTU device on an RS-485 bus."""

    points: list[ModbusPoint] = []
    serial: SerialSettings = SerialSettings()
    timeout_ms: int = 300
    retries: int = 1
    #: Consecutive missed polls before the device is reported offline.
    offline_after: int = 3
    #: Registers between two points that are still read in one request instead of two.
    max_gap: int = 8


class Frame(_Conf, frozen=True):
    """The frame format of a serial protocol (see docs/firmware-configs.md for a drawing).

    ``length_at``/``length_size`` locate a length field; the frame's total length is its
    value + ``length_adjust``. Without a length field, a frame ends at ``end``. ``escape``
    (with ``escape_xor``) is byte stuffing: on the wire, a special byte X is sent as
    ``escape, X ^ escape_xor``. Lengths and checksums apply to the unescaped frame. The
    checksum covers bytes ``checksum_from`` up to the checksum itself, which sits just
    before ``end`` (or last).
    """

    start: HexBytes
    checksum: ChecksumName
    checksum_from: int = 0
    checksum_order: Order = "big"
    length_at: int | None = None
    length_size: Literal[1, 2] = 1
    length_order: Order = "big"
    length_adjust: int = 0
    end: HexBytes | None = None
    escape: HexBytes | None = None
    escape_xor: int = 0x20
    max_length: int = 256
    #: Byte position of the device's bus address inside the frame, if the bus is shared.
    address_at: int | None = None


class Message(_Conf, frozen=True):
    """One kind of frame, told apart by the byte at ``when_byte`` equal to ``when_value``."""

    name: str
    points: list[FramePoint] = []
    when_byte: int | None = None
    when_value: int | None = None
    #: A one-off event this message reports (e.g. repeated failed credentials), with data
    #: fields taken from points that name a ``field`` here.
    instant: str | None = None


class FramedProfile(
    _ProfileBase, frozen=True, kw_only=True, tag="framed_serial", tag_field="protocol"
):
    """A device that pushes its own frames over a serial line."""

    frame: Frame
    messages: list[Message]
    serial: SerialSettings = SerialSettings(parity="N")
    #: Seconds without a good frame before the device is reported offline.
    offline_after_s: float = 30.0


class MqttField(_Conf, frozen=True):
    """A reading field from a JSON path (dots and [index]; e.g. ``result.objects[0].cls``)."""

    path: str
    enum: dict[str, str] | None = None
    scale: float = 1.0
    #: For bool fields: the JSON values meaning true (default: JSON true or non-zero).
    true: list[str | int | bool] | None = None
    #: For number fields: see :attr:`Point.deadband`.
    deadband: float = 0.0


class MqttEvent(_Conf, frozen=True):
    """An event from a JSON path: values that start, end, or are a one-off occurrence."""

    event: str
    path: str
    start: list[str | int | bool] = []
    end: list[str | int | bool] = []
    instant: list[str | int | bool] = []
    #: Event data: name → JSON path (e.g. the snapshot reference).
    data: dict[str, str] = {}


class MqttTopic(_Conf, frozen=True):
    """A topic pattern with named levels, e.g. ``aibox/{box}/lane/{zone}``.

    ``address`` says where the device's address comes from: ``topic:NAME`` (a named level)
    or ``json:PATH``. ``time`` is a JSON path to the device's timestamp: epoch seconds
    (``time_unit: s``) or milliseconds (``ms``), or an ISO-8601 string (``iso8601``, e.g.
    ``2026-11-22T14:03:05+08:00``; one without an offset is in ``time_zone``). Without it
    the arrival time is used.
    """

    pattern: str
    address: str
    fields: dict[str, MqttField] = {}
    events: list[MqttEvent] = []
    time: str | None = None
    time_unit: Literal["s", "ms", "iso8601"] = "ms"
    time_zone: str = "Asia/Shanghai"


class MqttProfile(_ProfileBase, frozen=True, kw_only=True, tag="mqtt", tag_field="protocol"):
    """A device (typically a camera-AI box) that publishes JSON to the community's broker."""

    topics: list[MqttTopic]
    offline_after_s: float = 300.0


Profile = ModbusProfile | FramedProfile | MqttProfile


def profile_events(profile: Profile) -> frozenset[str]:
    """Every event name a device of ``profile`` can report (from points, bits, fault codes,
    MQTT event paths and one-off messages)."""
    points: list[Point] = []
    names: set[str] = set()
    if isinstance(profile, ModbusProfile):
        points += profile.points
    elif isinstance(profile, FramedProfile):
        for m in profile.messages:
            points += m.points
            if m.instant is not None:
                names.add(m.instant)
    else:
        names.update(e.event for t in profile.topics for e in t.events)
    for p in points:
        if p.event is not None:
            names.add(p.event)
        names.update((p.codes or {}).values())
        names.update(b.event for b in (p.bits or {}).values() if b.event is not None)
    return frozenset(names)


def profile_deadbands(profile: Profile) -> dict[str, float]:
    """Each number field's deadband (only those above 0)."""
    out: dict[str, float] = {}
    if isinstance(profile, MqttProfile):
        for t in profile.topics:
            out.update({name: f.deadband for name, f in t.fields.items() if f.deadband > 0})
        return out
    points: list[Point] = list(profile.points) if isinstance(profile, ModbusProfile) else [
        p for m in profile.messages for p in m.points]  # fmt: skip
    out.update({p.field: p.deadband for p in points if p.field and p.deadband > 0})
    return out


def hex_bytes(text: str) -> bytes:
    """``"AA 55"`` → ``b"\\xaa\\x55"`` (the pattern was checked at load)."""
    return bytes.fromhex(text.replace(" ", ""))


# --- checks ------------------------------------------------------------------------------


def _check_point(
    kind: str, p: Point, path: str, *, in_data: bool = False
) -> Iterator[tuple[str, str]]:
    targets = [n for n in ("field", "bits", "event", "codes") if getattr(p, n) is not None]
    if len(targets) != 1:
        yield path, "a point needs exactly one of field, bits, event or codes"
        return
    if p.type in _FLOATS and targets[0] != "field":
        yield f"{path}.type", f"{p.type} can only feed a field"
    if p.type == TEXT:
        yield from _check_text(kind, p, path, targets[0], in_data=in_data)
        return
    if p.length or p.encoding != "ascii":
        key = "length" if p.length else "encoding"
        yield f"{path}.{key}", f"{key} goes with type: string, not {p.type}"
    if p.enum is not None and any(not isinstance(k, int) for k in p.enum):
        yield f"{path}.enum", f"the enum of a {p.type} maps numbers; text keys need type: string"
    if targets[0] != "field" and (p.scale != 1.0 or p.offset != 0.0):
        yield f"{path}.scale", f"scale and offset are for number fields, not {targets[0]}"
    bounds = _raw_range(p)
    if bounds is not None:
        lo, hi = bounds
        what = f"a {p.type}" if p.mask is None else f"the bit group {p.mask:#x}"
        for key, table in (("enum", p.enum), ("codes", p.codes)):
            for raw in table or {}:
                if isinstance(raw, int) and not lo <= raw <= hi:
                    yield (f"{path}.{key}.{raw}",
                           f"{raw} can never come from {what} ({lo}..{hi})")  # fmt: skip
    if p.mask is not None or p.shift is not None:
        width = 8 * SIZE[p.type]
        if p.type in (*_FLOATS, "bool", *BCD_TYPES):
            yield f"{path}.mask", f"a mask needs an integer type, not {p.type}"
        elif p.mask is None:
            yield f"{path}.shift", "shift goes with mask"
        elif not 0 < p.mask < 1 << width:
            yield f"{path}.mask", f"{p.mask:#x} is not a mask of a {width}-bit {p.type}"
        elif p.shift is not None and not 0 <= p.shift < width:
            yield f"{path}.shift", f"{p.shift} is outside 0..{width - 1}"
    if p.enum is not None and p.field is None:
        yield f"{path}.enum", "enum only goes with field"
    if p.field is not None and not in_data:
        yield from _check_field(kind, p, path)
    if p.deadband < 0:
        yield f"{path}.deadband", "must be >= 0"
    elif p.deadband > 0:
        ft = field_type(kind, p.field) if p.field is not None else None
        if ft is None or ft[0] not in ("int", "float") or p.enum is not None:
            yield f"{path}.deadband", "a deadband is for a number field"
    if p.bits is not None:
        width = 8 * SIZE[p.type]
        if p.type in (*_FLOATS, "bool", *BCD_TYPES):
            yield f"{path}.type", "bits need an integer type"
        for bit, target in p.bits.items():
            bpath = f"{path}.bits.{bit}"
            if not 0 <= bit < width:
                yield bpath, f"bit {bit} is outside a {p.type} value"
            if (target.field is None) == (target.event is None):
                yield bpath, "a bit needs exactly one of field or event"
            elif target.field is not None:
                yield from _check_bit_field(kind, target, bpath)
            elif target.event is not None and target.event not in EVENTS_BY_KIND[kind]:
                yield f"{bpath}.event", _unknown_event(kind, target.event)
    if p.event is not None and p.event not in EVENTS_BY_KIND[kind]:
        yield f"{path}.event", _unknown_event(kind, p.event)
    if p.codes is not None:
        if 0 in p.codes:
            yield f"{path}.codes", "code 0 means 'no fault' and cannot name an event"
        for code, event in p.codes.items():
            if event not in EVENTS_BY_KIND[kind]:
                yield f"{path}.codes.{code}", _unknown_event(kind, event)


def _raw_range(p: Point) -> tuple[int, int] | None:
    """The raw integers a point can produce (before scale), or None (floats, text)."""
    if p.type in _FLOATS or p.type == TEXT:
        return None
    width = 8 * SIZE[p.type]
    if p.mask is not None:
        if not 0 < p.mask < 1 << width:
            return None  # reported elsewhere
        shift = p.shift if p.shift is not None else (p.mask & -p.mask).bit_length() - 1
        return 0, p.mask >> shift
    if p.type == "bcd16":
        return 0, 9999
    if p.type == "bcd32":
        return 0, 99_999_999
    if p.type == "bool":
        return 0, 1
    if p.type.startswith("i"):
        return -(1 << (width - 1)), (1 << (width - 1)) - 1
    return 0, (1 << width) - 1


#: The longest text a point may read (bytes).
MAX_TEXT: Final = 240


def _check_text(
    kind: str, p: Point, path: str, target: str, *, in_data: bool
) -> Iterator[tuple[str, str]]:
    """A ``string`` point feeds a field: a name (through ``enum``), text, or a number written
    in digits; never bits, events or codes, and nothing that needs an integer."""
    if target != "field":
        yield f"{path}.type", f"a string can only feed a field, not {target}"
        return
    if not 1 <= p.length <= MAX_TEXT:
        yield f"{path}.length", f"a string needs its length in bytes (1..{MAX_TEXT})"
    for key in ("mask", "shift"):
        if getattr(p, key) is not None:
            yield f"{path}.{key}", f"{key} needs an integer type, not string"
    if p.word_order != "big":
        yield f"{path}.word_order", "text has no word order; byte_order: little swaps each pair"
    assert p.field is not None
    ft = field_type(kind, p.field)
    if p.deadband and (ft is None or ft[0] not in ("int", "float")):
        yield f"{path}.deadband", "a deadband is for a number field"
    if in_data or ft is None:
        if not in_data:
            yield f"{path}.field", _unknown_field(kind, p.field)
        return
    base, allowed = ft
    if base == "bool":
        yield f"{path}.type", (f"{kind} field {p.field!r} is bool; text cannot say true or "
                               "false: read a number or a bit")  # fmt: skip
        return
    if base in ("int", "float"):
        if p.enum is not None:
            yield f"{path}.enum", f"{kind} field {p.field!r} is {base}; enum is for named fields"
        if base == "int" and (p.scale != int(p.scale) or p.offset != int(p.offset)):
            yield f"{path}.scale", f"{kind} field {p.field!r} is an integer: whole scale/offset"
        return
    if allowed and p.enum is None:
        names = ", ".join(sorted(allowed))
        yield f"{path}.enum", f"map the device's texts to {p.field}'s names with enum ({names})"
    for raw, label in (p.enum or {}).items():
        if allowed and label not in allowed:
            yield f"{path}.enum.{raw}", _not_allowed(p.field, label, allowed)
    if p.enum_default is not None and allowed and p.enum_default not in allowed:
        yield f"{path}.enum_default", _not_allowed(p.field, p.enum_default, allowed)
    if p.scale != 1.0 or p.offset != 0.0:
        yield f"{path}.scale", "scale and offset are for numbers"


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


def _unknown_event(kind: str, event: str) -> str:
    near = difflib.get_close_matches(event, EVENTS_BY_KIND[kind], n=1)
    if near:
        return f"{event!r} is not {_article(kind)} {kind} event; did you mean {near[0]!r}?"
    names = ", ".join(sorted(EVENTS_BY_KIND[kind]))
    return f"{event!r} is not {_article(kind)} {kind} event; use one of: {names}"


def _unknown_field(kind: str, name: str) -> str:
    fields = sorted(FIELDS_BY_KIND[kind].__struct_fields__)
    near = difflib.get_close_matches(name, fields, n=1)
    hint = f"did you mean {near[0]!r}?" if near else "use one of: " + ", ".join(fields)
    return f"{name!r} is not {_article(kind)} {kind} field; {hint}"


def _check_bit_field(kind: str, target: BitTarget, bpath: str) -> Iterator[tuple[str, str]]:
    """A bit sets a bool field (set = true, unless ``invert``), or a named field to its
    ``set`` / ``clear`` value; numbers come from a bit group (``mask``), not from one bit."""
    assert target.field is not None
    ft = field_type(kind, target.field)
    if ft is None:
        yield f"{bpath}.field", _unknown_field(kind, target.field)
        return
    base, allowed = ft
    named = target.when_set is not None or target.when_clear is not None
    if base == "bool":
        if named:
            yield f"{bpath}.set", (f"{kind} field {target.field!r} is bool: the bit sets it; "
                                   "drop set/clear (invert: true flips it)")  # fmt: skip
        return
    if base != "str":
        yield f"{bpath}.field", (f"{kind} field {target.field!r} is {base}: one bit cannot "
                                 "hold it; read a bit group with mask (and scale)")  # fmt: skip
        return
    if not named:
        yield f"{bpath}.field", (f"{kind} field {target.field!r} takes names: say which with "
                                 f"set/clear ({', '.join(sorted(allowed))})")  # fmt: skip
    for key, label in (("set", target.when_set), ("clear", target.when_clear)):
        if label is not None and allowed and label not in allowed:
            yield f"{bpath}.{key}", _not_allowed(target.field, label, allowed)


def _not_allowed(name: str, label: str, allowed: frozenset[str]) -> str:
    near = difflib.get_close_matches(label, sorted(allowed), n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return f"{label!r} is not allowed for {name}: use one of {', '.join(sorted(allowed))}{hint}"


def _check_field(kind: str, p: Point, path: str) -> Iterator[tuple[str, str]]:
    assert p.field is not None
    ft = field_type(kind, p.field)
    if ft is None:
        yield f"{path}.field", _unknown_field(kind, p.field)
        return
    base, allowed = ft
    if base == "str" and p.enum is None:
        yield f"{path}.enum", f"{kind} field {p.field!r} takes names; map values with enum"
    if p.enum is not None:
        if base != "str":
            yield f"{path}.enum", f"{kind} field {p.field!r} is {base}; enum is for named fields"
        for raw, label in p.enum.items():
            if allowed and label not in allowed:
                yield f"{path}.enum.{raw}", _not_allowed(p.field, label, allowed)
        if p.enum_default is not None and allowed and p.enum_default not in allowed:
            yield f"{path}.enum_default", _not_allowed(p.field, p.enum_default, allowed)
    for key in ("scale", "offset"):
        value = getattr(p, key)
        if base == "int" and value != int(value):
            yield f"{path}.{key}", f"{kind} field {p.field!r} is an integer; {key} must be too"
    if base == "int" and p.type in _FLOATS:
        yield f"{path}.type", f"{kind} field {p.field!r} is an integer; {p.type} cannot feed it"


def _check_common(p: _ProfileBase) -> Iterator[tuple[str, str]]:
    if not ID_PATTERN.match(p.id):
        yield "id", f"{p.id!r} is not a slug like 'acme-em100'"
    if p.report_interval_s <= 0:
        yield "report_interval_s", "must be > 0 seconds"
    if p.heartbeat_s < p.report_interval_s:
        yield "heartbeat_s", "must be at least report_interval_s"
    for name, value in p.thresholds.items():
        if value < 0:
            yield f"thresholds.{name}", "must be >= 0"


def _fields_set_twice(
    points: list[ModbusPoint] | list[FramePoint], scope: str
) -> Iterator[tuple[str, str]]:
    """A field set by two points of one poll or message: the profile is ambiguous."""
    seen: dict[str, str] = {}
    for i, pt in enumerate(points):
        names = [pt.field] if pt.field else []
        names += [t.field for t in (pt.bits or {}).values() if t.field]
        for name in names:
            if name in seen:
                yield f"{scope}[{i}]", f"field {name!r} is already set by {seen[name]}"
            seen.setdefault(name, f"{scope}[{i}]")


def _check_modbus(p: ModbusProfile) -> Iterator[tuple[str, str]]:
    if not p.points:
        yield "points", "a Modbus profile needs at least one point"
    lows = (("timeout_ms", p.timeout_ms, 10), ("retries", p.retries, 0),
            ("offline_after", p.offline_after, 1), ("max_gap", p.max_gap, 0))  # fmt: skip
    for key, value, low in lows:
        if value < low:
            yield key, f"{value} is below {low}"
    for i, pt in enumerate(p.points):
        path = f"points[{i}]"
        if not 0 <= pt.address <= 0xFFFF:
            yield f"{path}.address", "address (0..65535) is required"
        elif pt.address + max(1, (pt.size + 1) // 2) - 1 > 0xFFFF:
            yield f"{path}.address", f"a {pt.type} at {pt.address:#06x} runs past register 0xFFFF"
        bit_table = pt.table in ("coil", "discrete")
        if bit_table and pt.type != "bool":
            yield f"{path}.type", f"a {pt.table} is one bit; use type: bool"
        if not bit_table and pt.type in ("u8", "i8"):
            yield f"{path}.type", "registers are 16 bits; use u16/i16 (or bits for a byte)"
        yield from _check_point(p.kind, pt, path)
    yield from _fields_set_twice(p.points, "points")


def _check_framed(p: FramedProfile) -> Iterator[tuple[str, str]]:
    f = p.frame
    good: dict[str, bytes] = {}
    for key in ("start", "end", "escape"):
        value = getattr(f, key)
        if value is not None and not _HEX.match(value):
            yield f"frame.{key}", f"{value!r} is not hex bytes; write them like 'AA 55'"
        elif value is not None:
            good[key] = hex_bytes(value)
    # Bytes that are not hex are reported above; the rest is checked as if they were one
    # byte each, so that one run still names every other problem.
    start = good.get("start", b"\x00" * max(1, len(f.start.split())))
    end = good.get("end", b"\x00" if f.end is not None else b"")
    if f.length_at is None and f.end is None:
        yield "frame", "a frame needs length_at or end to say where it stops"
    if not 4 <= f.max_length <= MAX_FRAME_BYTES:
        yield "frame.max_length", f"must be 4..{MAX_FRAME_BYTES}"
    if f.length_at is not None and f.length_at < len(start):
        yield "frame.length_at", "the length field cannot overlap the start bytes"
    if f.escape is not None:
        if "escape" in good and len(good["escape"]) != 1:
            yield "frame.escape", "the escape is one byte"
        if f.end is None:
            yield "frame.escape", "byte stuffing needs an end marker"
    if not 0 <= f.checksum_from < f.max_length:
        yield "frame.checksum_from", "must be a position inside the frame"
    if f.address_at is not None and not len(start) <= f.address_at < f.max_length:
        yield "frame.address_at", (f"byte {f.address_at} is not inside a frame of at most "
                                   f"{f.max_length} bytes after the start bytes")  # fmt: skip
    trailer = WIDTH[f.checksum] + len(end)
    if not p.messages:
        yield "messages", "a framed profile needs at least one message"
    names: set[str] = set()
    for i, m in enumerate(p.messages):
        mpath = f"messages[{i}]"
        if m.name in names:
            yield f"{mpath}.name", f"message {m.name!r} appears twice"
        names.add(m.name)
        if (m.when_byte is None) != (m.when_value is None):
            yield mpath, "when_byte and when_value go together"
        if m.when_byte is not None and not 0 <= m.when_byte < f.max_length:
            yield f"{mpath}.when_byte", f"byte {m.when_byte} is outside a frame of {f.max_length}"
        if m.when_value is not None and not 0 <= m.when_value <= 0xFF:
            yield f"{mpath}.when_value", f"{m.when_value:#x} is not a byte (0..0xff)"
        if m.instant is not None and m.instant not in EVENTS_BY_KIND[p.kind]:
            yield f"{mpath}.instant", _unknown_event(p.kind, m.instant)
        if not m.points and m.instant is None:
            yield f"{mpath}.points", "a message needs points or an instant event"
        for j, pt in enumerate(m.points):
            path = f"{mpath}.points[{j}]"
            last = f.max_length - trailer - pt.size
            if pt.byte < 0:
                yield f"{path}.byte", "byte (its position, from the first start byte) is required"
            elif not len(start) <= pt.byte <= last:
                yield f"{path}.byte", (f"byte {pt.byte} is not after the start bytes and before "
                                       f"the checksum: a {pt.type} fits at {len(start)}..{last} "
                                       f"of a frame of at most {f.max_length} bytes")  # fmt: skip
            yield from _check_point(p.kind, pt, path, in_data=m.instant is not None)
        yield from _fields_set_twice(m.points, f"{mpath}.points")
    if len(p.messages) > 1 and any(m.when_byte is None for m in p.messages[:-1]):
        yield "messages", "with several messages, all but the last need when_byte/when_value"


def _check_mqtt(p: MqttProfile) -> Iterator[tuple[str, str]]:
    if not p.topics:
        yield "topics", "an MQTT profile needs at least one topic"
    for i, t in enumerate(p.topics):
        path = f"topics[{i}]"
        levels = t.pattern.split("/")
        names = [lv[1:-1] for lv in levels if lv.startswith("{") and lv.endswith("}")]
        if any(c in t.pattern for c in "+#") or not all(levels):
            yield f"{path}.pattern", "use {name} for a variable level; no + # or empty levels"
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            yield f"{path}.pattern", f"level {{{twice[0]}}} is named twice; give each its own name"
        source, _, ref = t.address.partition(":")
        if source not in ("topic", "json") or not ref:
            yield f"{path}.address", "write topic:NAME (a {NAME} level) or json:PATH"
        elif source == "topic" and ref not in names:
            yield f"{path}.address", f"the pattern has no level {{{ref}}}"
        if not t.fields and not t.events:
            yield path, "a topic needs fields or events"
        if t.time_unit == "iso8601" or t.time_zone != "Asia/Shanghai":
            try:
                ZoneInfo(t.time_zone)
            except (ZoneInfoNotFoundError, ValueError):
                yield f"{path}.time_zone", f"{t.time_zone!r} is not an IANA time zone"
        if t.time is None and t.time_unit != "ms":
            yield f"{path}.time_unit", "time_unit goes with time (the JSON path of the time)"
        for name, mf in t.fields.items():
            yield from _check_mqtt_field(p.kind, name, mf, f"{path}.fields.{name}")
        for j, ev in enumerate(t.events):
            epath = f"{path}.events[{j}]"
            if ev.event not in EVENTS_BY_KIND[p.kind]:
                yield f"{epath}.event", _unknown_event(p.kind, ev.event)
            if not (ev.start or ev.end or ev.instant):
                yield epath, "list the values that start, end or are an instant event"
            lists = {"start": ev.start, "end": ev.end, "instant": ev.instant}
            seen: dict[str, str] = {}
            for key, values in lists.items():
                for v in values:
                    token = repr(v).lower()
                    if token in seen and seen[token] != key:
                        why = f"{v!r} is also listed under {seen[token]}: one value, one meaning"
                        yield f"{epath}.{key}", why
                    seen.setdefault(token, key)


def _check_mqtt_field(kind: str, name: str, mf: MqttField, path: str) -> Iterator[tuple[str, str]]:
    """What a JSON value can become must be what the field takes: checked here, so that the
    runtime never drops a value as "does not fit" for a reason the profile already shows."""
    ft = field_type(kind, name)
    if ft is None:
        yield path, _unknown_field(kind, name)
        return
    base, allowed = ft
    if mf.enum is not None and base != "str":
        fix = "list the values meaning true with true: [...]" if base == "bool" else "drop it"
        yield f"{path}.enum", f"{kind} field {name!r} is {base}; enum maps to names: {fix}"
    if mf.true is not None and base != "bool":
        yield f"{path}.true", f"{kind} field {name!r} is {base}; true: is for bool fields"
    if mf.scale != 1.0 and base not in ("int", "float"):
        yield f"{path}.scale", f"{kind} field {name!r} is {base}; scale is for numbers"
    if base == "int" and mf.scale != int(mf.scale):
        yield f"{path}.scale", f"{kind} field {name!r} is an integer; scale must be too"
    if mf.deadband < 0 or (mf.deadband > 0 and base not in ("int", "float")):
        yield f"{path}.deadband", "a deadband (>= 0) is for a number field"
    if base == "str" and allowed:
        if not mf.enum:
            names = ", ".join(sorted(allowed))
            yield f"{path}.enum", f"map the device's values to {name}'s names with enum ({names})"
        for raw, label in (mf.enum or {}).items():
            if label not in allowed:
                yield f"{path}.enum.{raw}", _not_allowed(name, label, allowed)


def _check(p: Profile) -> Iterator[tuple[str, str]]:
    yield from _check_common(p)
    if isinstance(p, ModbusProfile):
        yield from _check_modbus(p)
    elif isinstance(p, FramedProfile):
        yield from _check_framed(p)
    else:
        yield from _check_mqtt(p)


def load_profile(path: Path) -> Profile:
    """Load and check one profile; raise ConfigError listing every problem."""
    # A union of tagged Structs is not a ``type``, but msgspec.convert takes it.
    return load_yaml(path, cast("type[Profile]", Profile), check=_check)


def is_profile_file(path: Path) -> bool:
    """True if a YAML file declares itself a profile (top-level ``profile:`` key)."""
    try:
        head = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(line.startswith("profile:") for line in head.splitlines())


def load_profiles(dirs: list[Path]) -> Mapping[str, Profile]:
    """Every profile under ``dirs`` (recursively), by id; ConfigError lists every problem."""
    profiles: dict[str, Profile] = {}
    where: dict[str, Path] = {}
    problems: list[Problem] = []
    for d in dirs:
        if not d.is_dir():
            raise ConfigError.one(str(d), None, "", "profile directory does not exist")
        for path in sorted(d.rglob("*.yaml")):
            if not is_profile_file(path):
                continue
            try:
                prof = load_profile(path)
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
            if prof.id in profiles:
                reason = f"profile id {prof.id!r} is also used by {where[prof.id]}"
                line = key_lines(path.read_text(encoding="utf-8")).get(".id")
                problems.append(Problem(str(path), line, "id", reason))
                continue
            profiles[prof.id] = prof
            where[prof.id] = path
    if problems:
        raise ConfigError(problems)
    return profiles
