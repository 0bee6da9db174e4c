"""Points: how a value in a device's memory or frame becomes a reading field or an event.

Sans-I/O. A profile lists points (see :mod:`collectors.profile`); :func:`compile_points`
turns them, once at load, into small decoders with one signature::

    decoder(buf: bytes, sample: Sample) -> None

``buf`` is a Modbus register block (each register big-endian, as Modbus sends it) or an
unescaped serial frame. A decoder reads its bytes at a fixed position, applies byte/word order,
``scale`` and ``offset``, and writes into the :class:`Sample`: a field value, an event that is
active (with its data), or a problem when the bytes cannot be a valid value (a short buffer, a
NaN float, a code the profile does not know). Problems are counted, never raised: no input
makes a decoder throw.

Value layout for multi-register types (Modbus application protocol §4.2: registers are
big-endian; the order of registers in 32-bit values is the maker's choice)::

    u32 = 0x11223344, word_order big, byte_order big:    [11 22] [33 44]
                      word_order little:                 [33 44] [11 22]
                      byte_order little (byte-swapped):  [22 11] [44 33]
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, assert_never

import msgspec

from collectors.wire import FIELDS_BY_KIND

__all__ = [
    "BCD_TYPES",
    "SIZE",
    "TEXT",
    "BitSpec",
    "Decoder",
    "FieldType",
    "Sample",
    "ValueType",
    "decode_raw",
    "field_type",
    "value_size",
]

ValueType = Literal[
    "u8",
    "i8",
    "u16",
    "i16",
    "u32",
    "i32",
    "u64",
    "i64",
    "f32",
    "f64",
    "bcd16",
    "bcd32",
    "bool",
    "string",
]
#: Text in a device's memory or frame: ``length`` bytes in the point's ``encoding``; NUL and
#: space padding on either side is dropped.
TEXT: Final = "string"
Encoding = Literal["ascii", "gbk", "utf-8"]
#: Binary-coded decimal: each 4-bit nibble one decimal digit (0x1234 reads 1234).
BCD_TYPES: Final = frozenset({"bcd16", "bcd32"})
Order = Literal["big", "little"]

#: Bytes each fixed-size value type occupies (a ``string``: its ``length``); ``bool`` is one
#: byte (a frame) or one register (Modbus: the caller passes the register's two bytes and any
#: non-zero value is true).
SIZE: Final[dict[ValueType, int]] = {
    "u8": 1,
    "i8": 1,
    "u16": 2,
    "i16": 2,
    "u32": 4,
    "i32": 4,
    "u64": 8,
    "i64": 8,
    "f32": 4,
    "f64": 8,
    "bcd16": 2,
    "bcd32": 4,
    "bool": 1,
}

_STRUCTS: Final[dict[ValueType, struct.Struct]] = {
    "u8": struct.Struct(">B"),
    "i8": struct.Struct(">b"),
    "u16": struct.Struct(">H"),
    "i16": struct.Struct(">h"),
    "u32": struct.Struct(">I"),
    "i32": struct.Struct(">i"),
    "u64": struct.Struct(">Q"),
    "i64": struct.Struct(">q"),
    "f32": struct.Struct(">f"),
    "f64": struct.Struct(">d"),
    "bcd16": struct.Struct(">H"),
    "bcd32": struct.Struct(">I"),
    "bool": struct.Struct(">B"),
}


def value_size(vtype: ValueType, length: int = 0) -> int:
    """Bytes a value of ``vtype`` occupies (a string: its ``length``)."""
    return length if vtype == TEXT else SIZE[vtype]


def decode_raw(
    raw: bytes, vtype: ValueType, *, word_order: Order = "big", byte_order: Order = "big"
) -> int | float:
    """Decode ``raw`` (exactly ``SIZE[vtype]`` bytes, or 2 for a register ``bool``).

    ``word_order`` little reverses the 16-bit words of a 32- or 64-bit value; ``byte_order``
    little swaps the two bytes of each word. A BCD value with a nibble over 9 is -1 (the
    caller reports it)."""
    if len(raw) >= 2:
        if word_order == "little" and len(raw) >= 4:
            raw = b"".join(raw[i : i + 2] for i in range(len(raw) - 2, -1, -2))
        if byte_order == "little":
            raw = bytes(b for i in range(0, len(raw), 2) for b in (raw[i + 1], raw[i]))
    if vtype == "bool":
        return int(any(raw))
    value: int | float = _STRUCTS[vtype].unpack(raw)[0]
    if vtype in BCD_TYPES:
        digits = f"{value:x}"
        return int(digits) if digits.isdigit() else -1
    return value


# --- the wire's field types -------------------------------------------------------------

FieldType = tuple[Literal["bool", "int", "float", "str"], frozenset[str]]


def field_type(kind: str, name: str) -> FieldType | None:
    """The wire type of field ``name`` of device ``kind``, or None if there is no such field.

    For enumerated fields the second element holds the allowed strings (empty otherwise).
    """
    info = msgspec.inspect.type_info(FIELDS_BY_KIND[kind])
    assert isinstance(info, msgspec.inspect.StructType)
    for f in info.fields:
        if f.name != name:
            continue
        t = f.type
        if isinstance(t, msgspec.inspect.UnionType):
            t = next(x for x in t.types if not isinstance(x, msgspec.inspect.NoneType))
        if isinstance(t, msgspec.inspect.BoolType):
            return "bool", frozenset()
        if isinstance(t, msgspec.inspect.IntType):
            return "int", frozenset()
        if isinstance(t, msgspec.inspect.FloatType):
            return "float", frozenset()
        if isinstance(t, msgspec.inspect.LiteralType):
            return "str", frozenset(str(v) for v in t.values)
        if isinstance(t, msgspec.inspect.StrType):
            return "str", frozenset()
        raise AssertionError(f"unexpected wire type {t!r} for {kind}.{name}")
    return None


# --- samples ----------------------------------------------------------------------------


@dataclass(slots=True)
class Sample:
    """What one poll or one frame says about a device.

    ``fields`` are reading values; ``active`` maps each condition event the sample covers to
    whether it is on (with its data when on); ``instants`` are one-off events; ``problems``
    names values that could not be decoded (counted by the collector, never raised).
    """

    fields: dict[str, bool | int | float | str] = field(default_factory=dict)
    active: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    instants: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: Data the message that ends an event carries (a camera's "clear" picture); an end
    #: without any keeps the start's data (a fault code).
    ended: dict[str, dict[str, Any]] = field(default_factory=dict)

    def set_event(
        self,
        event: str,
        on: bool,
        data: dict[str, Any] | None = None,
        *,
        end_data: dict[str, Any] | None = None,
    ) -> None:
        """Mark ``event`` on or off; when several points name one event, any on wins (and
        their data merge: a status bit's empty data never hides a fault code)."""
        if on:
            self.active[event] = {**(self.active.get(event) or {}), **(data or {})}
        else:
            self.active.setdefault(event, None)
            if end_data:
                self.ended[event] = end_data


Decoder = Callable[[bytes, Sample], None]
BitSpec = tuple[Literal["field", "event"], str, bool, str | None, str | None]


@dataclass(frozen=True, slots=True)
class PointSpec:
    """The compiled form of one profile point (see :class:`collectors.profile.Point`).

    ``start`` is the byte position in the buffer; ``bit`` selects a single bit of a coil
    block (Modbus coils/discrete inputs arrive packed, LSB first).
    """

    name: str  # for problems: e.g. "address 5" or "byte 7"
    start: int
    vtype: ValueType
    word_order: Order = "big"
    byte_order: Order = "big"
    scale: float = 1.0
    offset: float = 0.0
    size: int = 0  # bytes read; 0 means SIZE[vtype]
    bit: int | None = None  # packed bit index (coils), instead of a typed value
    mask: int | None = None  # a bit group: (raw & mask) >> shift
    shift: int = 0
    target: Literal["field", "bits", "event", "codes"] = "field"
    field_name: str = ""
    field_kind: Literal["bool", "int", "float", "str"] = "float"
    enum: Mapping[int | str, str] | None = None
    enum_default: str | None = None
    #: bit → (field or event, its name, invert, the named field's values when set / clear)
    bits: Mapping[int, BitSpec] | None = None
    event: str = ""
    invert: bool = False
    codes: Mapping[int, str] | None = None
    encoding: Encoding = "ascii"


def compile_text(spec: PointSpec) -> Decoder:
    """A ``string`` point: its bytes as text (``byte_order: little`` swaps the two bytes of
    each register, as some Modbus makers store text), padding dropped; then a name through
    ``enum`` (exact text), the text itself for a text field, or a number for a number field
    (ASCII digits such as ``+012.5``, then scale and offset)."""
    end = spec.start + spec.size
    where, name, kind = spec.name, spec.field_name, spec.field_kind
    enum = {str(k): v for k, v in spec.enum.items()} if spec.enum is not None else None
    default = spec.enum_default

    def decode_text(buf: bytes, sample: Sample) -> None:
        if len(buf) < end:
            sample.problems.append(f"{where}: needs bytes {spec.start}..{end - 1}, got {len(buf)}")
            return
        raw = buf[spec.start : end]
        if spec.byte_order == "little":
            raw = bytes(b for i in range(0, len(raw) - 1, 2) for b in (raw[i + 1], raw[i])) + (
                raw[-1:] if len(raw) % 2 else b""
            )
        try:
            text = raw.decode(spec.encoding).strip("\x00 ")
        except UnicodeDecodeError:
            sample.problems.append(f"{where}: {raw.hex()} is not {spec.encoding} text")
            return
        if enum is not None:
            label = enum.get(text, default)
            if label is None:
                sample.problems.append(f"{where}: {name} text {text!r} is not in the enum")
            else:
                sample.fields[name] = label
            return
        if kind == "str":
            sample.fields[name] = text
            return
        try:
            number = float(text)
        except ValueError:
            sample.problems.append(f"{where}: {name} text {text!r} is not a number")
            return
        if not math.isfinite(number):
            sample.problems.append(f"{where}: {name} text {text!r} is not a finite number")
            return
        value = number * spec.scale + spec.offset
        sample.fields[name] = round(value) if kind == "int" else value

    return decode_text


def compile_point(spec: PointSpec) -> Decoder:
    """Turn one checked point into a decoder (see the module docstring)."""
    if spec.vtype == TEXT:
        return compile_text(spec)
    size = spec.size or SIZE[spec.vtype]
    end = spec.start + size
    where = spec.name
    mask, shift = spec.mask, spec.shift

    def read(buf: bytes, sample: Sample) -> int | float | None:
        if spec.bit is not None:
            byte_i, bit_i = divmod(spec.bit, 8)
            if byte_i >= len(buf):
                sample.problems.append(f"{where}: buffer too short")
                return None
            return (buf[byte_i] >> bit_i) & 1
        if len(buf) < end:
            sample.problems.append(f"{where}: needs bytes {spec.start}..{end - 1}, got {len(buf)}")
            return None
        value = decode_raw(
            buf[spec.start : end],
            spec.vtype,
            word_order=spec.word_order,
            byte_order=spec.byte_order,
        )
        if isinstance(value, float) and not math.isfinite(value):
            sample.problems.append(f"{where}: {value} is not a finite number")
            return None
        if value == -1 and spec.vtype in BCD_TYPES:
            sample.problems.append(f"{where}: {buf[spec.start : end].hex()} is not BCD")
            return None
        if mask is not None:
            return (int(value) & mask) >> shift
        return value

    def scaled(raw: int | float) -> int | float:
        if spec.scale == 1.0 and spec.offset == 0.0:
            return raw
        return raw * spec.scale + spec.offset

    target = spec.target
    if target == "field":
        name = spec.field_name
        kind = spec.field_kind
        if spec.enum is not None:
            enum = spec.enum
            default = spec.enum_default

            def decode_enum(buf: bytes, sample: Sample) -> None:
                raw = read(buf, sample)
                if raw is None:
                    return
                label = enum.get(int(raw), default)
                if label is None:
                    sample.problems.append(f"{where}: {name} value {raw} is not in the enum")
                else:
                    sample.fields[name] = label

            return decode_enum
        if kind == "bool":
            invert = spec.invert

            def decode_bool(buf: bytes, sample: Sample) -> None:
                raw = read(buf, sample)
                if raw is not None:
                    sample.fields[name] = (raw != 0) != invert

            return decode_bool
        as_int = kind == "int"

        def decode_number(buf: bytes, sample: Sample) -> None:
            raw = read(buf, sample)
            if raw is None:
                return
            value = scaled(raw)
            if as_int:
                # Load-time checks make scale and offset integral for int fields.
                sample.fields[name] = round(value)
            else:
                sample.fields[name] = float(value)

        return decode_number
    if target == "bits":
        assert spec.bits is not None
        bits = tuple(spec.bits.items())

        def decode_bits(buf: bytes, sample: Sample) -> None:
            raw = read(buf, sample)
            if raw is None:
                return
            word = int(raw)
            for bit, (what, name, invert, when_on, when_off) in bits:
                on = bool((word >> bit) & 1) != invert
                if what == "event":
                    sample.set_event(name, on)
                elif when_on is None and when_off is None:
                    sample.fields[name] = on
                else:
                    label = when_on if on else when_off
                    if label is not None:
                        sample.fields[name] = label

        return decode_bits
    if target == "event":
        event = spec.event
        invert = spec.invert

        def decode_event(buf: bytes, sample: Sample) -> None:
            raw = read(buf, sample)
            if raw is not None:
                sample.set_event(event, (raw != 0) != invert)

        return decode_event
    if target == "codes":
        assert spec.codes is not None
        codes = spec.codes
        names = tuple(sorted(set(codes.values())))

        def decode_codes(buf: bytes, sample: Sample) -> None:
            raw = read(buf, sample)
            if raw is None:
                return
            code = int(raw)
            current = codes.get(code)
            if code != 0 and current is None:
                sample.problems.append(f"{where}: code {code} is not in the profile")
            for name in names:
                sample.set_event(name, name == current, {"code": code})

        return decode_codes
    assert_never(target)
