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
from collectors.wire import Event, Item

__all__ = ["EVENTS_MEASUREMENT", "encode_item", "encode_items", "encode_status"]

EVENTS_MEASUREMENT: Final = "events"

_TAG_ESCAPES: Final = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": " ", "\r": " "})
_STR_ESCAPES: Final = str.maketrans({'"': r"\"", "\\": "\\\\", "\n": " ", "\r": " "})
_json = msgspec.json.Encoder()


def _tag(value: str) -> str:
    return value.translate(_TAG_ESCAPES)


def _string(value: str) -> str:
    return '"' + value.translate(_STR_ESCAPES) + '"'


@functools.cache
def _declared(kind: str, name: str) -> str:
    ft = field_type(kind, name)
    return ft[0] if ft else "str"


def _field(kind: str, name: str, value: object) -> str | None:
    declared = _declared(kind, name)
    if declared == "bool" or isinstance(value, bool):
        return "true" if value else "false"
    if declared == "int" and isinstance(value, int | float) and math.isfinite(value):
        return f"{int(value)}i"
    if declared == "float" and isinstance(value, int | float) and math.isfinite(value):
        return repr(float(value))
    if isinstance(value, str):
        return _string(value)
    return None  # not representable (NaN cannot be stored); the wire refuses these anyway


def encode_item(community: str, gateway: str, item: Item, building: str = "") -> str | None:
    """One line for one item (without the newline), or None if it has no storable field.
    ``building`` (from the registry) becomes a tag when it is not empty."""
    base = f"community={_tag(community)},gateway={_tag(gateway)},device={_tag(item.dev)}"
    if building:
        base = f"building={_tag(building)},{base}"
    if isinstance(item, Event):
        data = _string(_json.encode(item.data).decode())
        return (
            f"{EVENTS_MEASUREMENT},{base},kind={item.kind},event={_tag(item.event)},"
            f"state={item.state} data={data} {item.t}"
        )
    fields = []
    for name, value in sorted(item.fields.items()):
        encoded = _field(item.kind, name, value)
        if encoded is not None:
            fields.append(f"{_tag(name)}={encoded}")
    if not fields:
        return None
    return f"{item.kind},{base} {','.join(fields)} {item.t}"


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
