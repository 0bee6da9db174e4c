"""Readings and events as InfluxDB line protocol (sans-I/O). The schema is docs/telemetry.md.

::

    elevator,community=meihuayuan,gateway=gw-1,device=el-1-1 floor=5i,running=true 1795300000000
    events,community=meihuayuan,gateway=gw-1,device=el-1-1,kind=elevator,event=trapped,\
state=start data="{}" 1795300000000      (one line; broken here to fit)

* One measurement per device kind; tags are the low-cardinality identity (community, gateway,
  device: all bounded by the registry). Free text never goes into a tag.
* Field types follow the wire schema, not the JSON an envelope happened to carry (a float
  field written once as ``5`` and once as ``5.5`` would be a type conflict that InfluxDB
  refuses), so every field is coerced to its declared type.
* Events are their own measurement with ``state`` as a tag, so that an ``end`` and a
  ``start`` of one event at the same millisecond are two points, not one overwriting the
  other. Their data is a JSON string field.
* Timestamps are the device's, in ms (write with ``precision=ms``).

Escaping follows the line protocol reference: commas and spaces in measurements; commas,
equals signs and spaces in tag keys, tag values and field keys; double quotes and
backslashes in string fields. Line breaks cannot be escaped and become spaces.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Final

import msgspec

from collectors.points import field_type
from collectors.wire import BUS_PREFIX, DEV_PREFIX, FIELDS_BY_KIND, POLL_OK_PREFIX, Event, Item

__all__ = ["EVENTS_MEASUREMENT", "encode_item", "encode_items", "encode_status"]

EVENTS_MEASUREMENT: Final = "events"

_TAG_ESCAPES: Final = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": " ", "\r": " "})
_STR_ESCAPES: Final = str.maketrans({'"': r"\"", "\\": "\\\\", "\n": " ", "\r": " "})
_json = msgspec.json.Encoder()


def _tag(value: str) -> str:
    return value.translate(_TAG_ESCAPES)


def _string(value: str) -> str:
    return '"' + value.translate(_STR_ESCAPES) + '"'


FieldEncoder = Callable[[object], "str | None"]


@functools.lru_cache(maxsize=4096)
def _quoted(value: str) -> str:
    """A string field value, escaped; cached, as most are enum labels."""
    return _string(value)


@functools.cache
def _field_encoder(kind: str, name: str) -> FieldEncoder:
    """``name=value`` for one field of ``kind``, specialised once per field (this is the
    writer's hot path: several fields per reading, thousands of readings per second)."""
    ft = field_type(kind, name)
    # A field the schema does not name is a gateway's ``poll_ok.<dev>`` share (a float) or
    # one of its ``bus.``/``dev.`` error counters (an integer).
    declared = ft[0] if ft else (
        "float" if name.startswith(POLL_OK_PREFIX)
        else "int" if name.startswith((BUS_PREFIX, DEV_PREFIX))
        else "str"
    )  # fmt: skip
    key = _tag(name) + "="
    true, false = key + "true", key + "false"

    def general(value: object) -> str | None:
        if declared == "bool" or isinstance(value, bool):
            return true if value else false
        if isinstance(value, int | float):
            if not math.isfinite(value):
                return None  # not representable (NaN cannot be stored); the wire refuses it
            if declared == "int":
                return f"{key}{int(value)}i"
            if declared == "float":
                return f"{key}{float(value)!r}"
        if isinstance(value, str):
            return key + (_quoted(value) if len(value) < 64 else _string(value))
        return None

    # Fast paths for the value types the wire schema declares; anything else: general().
    if declared == "bool":
        return lambda v: true if v else false
    if declared == "int":
        return lambda v: f"{key}{v}i" if type(v) is int else general(v)
    if declared == "float":
        return lambda v: f"{key}{v!r}" if type(v) is float and math.isfinite(v) else general(v)
    return lambda v: key + _quoted(v) if type(v) is str and len(v) < 64 else general(v)


_ENCODERS: Final = {
    kind: {name: _field_encoder(kind, name) for name in schema.__struct_fields__}
    for kind, schema in FIELDS_BY_KIND.items()
}


@functools.lru_cache(maxsize=100_000)
def _series_key(measurement: str, community: str, gateway: str, dev: str, building: str) -> str:
    """The measurement and tag set of one device's series, escaped once."""
    tags = f"community={_tag(community)},gateway={_tag(gateway)},device={_tag(dev)}"
    if building:
        tags = f"building={_tag(building)},{tags}"
    return f"{measurement},{tags}"


def encode_item(community: str, gateway: str, item: Item, building: str = "") -> str | None:
    """One line for one item (without the newline), or None if it has no storable field.
    ``building`` (from the registry) becomes a tag when it is not empty."""
    if isinstance(item, Event):
        base = _series_key(EVENTS_MEASUREMENT, community, gateway, item.dev, building)
        data = _string(_json.encode(item.data).decode())
        return (
            f"{base},kind={item.kind},event={_tag(item.event)},"
            f"state={item.state} data={data} {item.t}"
        )
    kind = item.kind
    base = _series_key(kind, community, gateway, item.dev, building)
    values = item.fields
    encoders = _ENCODERS.get(kind, {})
    fields = [
        encoded
        for name in sorted(values)
        if (encoded := (encoders.get(name) or _field_encoder(kind, name))(values[name])) is not None
    ]
    if not fields:
        return None
    return f"{base} {','.join(fields)} {item.t}"


def encode_items(
    community: str,
    gateway: str,
    items: Iterable[Item],
    building_of: Callable[[str, str], str] | None = None,
) -> Sequence[str]:
    """The lines of an envelope's items, in order; items with nothing to store are skipped.
    ``building_of(community, dev)`` gives each device's building tag."""
    return [
        line
        for item in items
        if (
            line := encode_item(
                community, gateway, item, building_of(community, item.dev) if building_of else ""
            )
        )
    ]


def encode_status(community: str, gateway: str, status: str, t: int) -> str:
    """A gateway's status as its ``gateway_offline`` event: ``start`` when offline, ``end``
    when online (the gateway is its own device, ``kind=gateway``)."""
    state = "start" if status == "offline" else "end"
    return (
        f"{EVENTS_MEASUREMENT},community={_tag(community)},gateway={_tag(gateway)},"
        f'device={_tag(gateway)},kind=gateway,event=gateway_offline,state={state} data="{{}}" {t}'
    )
