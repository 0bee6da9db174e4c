"""Each device's current state and each gateway's status, with change fan-out to screens.

Subscribers (the status page's SSE streams) get coalesced updates: if a device changes five
times between two sends, the screen gets its latest state once. A subscriber's pending set
is bounded by the number of devices, so a slow screen never grows memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from collectors.wire import Event, FieldValue, Item, Reading

__all__ = ["DeviceState", "LiveState", "Subscriber"]


@dataclass
class DeviceState:
    """What is known about a device now."""

    community: str
    dev: str
    kind: str
    t: int | None = None  # device time of the last item
    fields: dict[str, FieldValue] = field(default_factory=dict)
    active: dict[str, int] = field(default_factory=dict)  # event -> start time
    last_event: dict[str, Any] | None = None
    reading_t: int | None = None  # device time of the reading the fields come from

    def apply(self, item: Item) -> None:
        """Fold one item into the state.

        Items mostly arrive in device-time order, but a gateway sends events ahead of a
        backlog of readings, so a reading older than the one already shown is not applied.
        """
        self.t = item.t if self.t is None else max(self.t, item.t)
        if isinstance(item, Reading):
            if self.reading_t is not None and item.t < self.reading_t:
                return
            self.reading_t = item.t
            self.fields.update(item.fields)
            return
        assert isinstance(item, Event)
        if item.state == "start":
            self.active[item.event] = item.t
        elif item.state == "end":
            self.active.pop(item.event, None)
        self.last_event = {"t": item.t, "event": item.event, "state": item.state}

    def as_json(self) -> dict[str, Any]:
        """The state as the API and the screens show it."""
        return {
            "community": self.community,
            "dev": self.dev,
            "kind": self.kind,
            "t": self.t,
            "fields": self.fields,
            "active": sorted(self.active),
            "last_event": self.last_event,
        }


class Subscriber:
    """One screen's queue of pending updates, keyed so that only the latest is kept."""

    def __init__(self) -> None:
        self._pending: dict[str, dict[str, Any]] = {}
        self._ready = asyncio.Event()

    def offer(self, key: str, update: dict[str, Any]) -> None:
        self._pending[key] = update
        self._ready.set()

    async def next_batch(self) -> list[dict[str, Any]]:
        """Wait for updates, then take all of them."""
        await self._ready.wait()
        self._ready.clear()
        batch, self._pending = list(self._pending.values()), {}
        return batch


class LiveState:
    """Device states and gateway statuses held by one server process."""

    def __init__(self) -> None:
        self.devices: dict[tuple[str, str], DeviceState] = {}
        self.gateways: dict[tuple[str, str], dict[str, Any]] = {}
        self._subscribers: set[Subscriber] = set()
        #: Called with every change: (key, community, the DeviceState or the gateway's
        #: entry itself, nothing built): the screens' hub, which builds what it sends once
        #: per frame, not per change.
        self.listeners: list[Callable[[str, str, DeviceState | dict[str, Any]], None]] = []

    def apply(self, community: str, items: list[Item]) -> None:
        """Fold an envelope's items into device states and notify subscribers."""
        touched: dict[tuple[str, str], DeviceState] = {}
        for item in items:
            if item.kind == "gateway":
                if isinstance(item, Reading):
                    self.set_gateway_health(community, item.dev, item.t, item.fields)
                continue
            key = (community, item.dev)
            state = self.devices.get(key)
            if state is None:
                state = self.devices[key] = DeviceState(community, item.dev, item.kind)
            state.apply(item)
            touched[key] = state
        for (com, dev), state in touched.items():
            for listener in self.listeners:
                listener(f"d/{com}/{dev}", com, state)
        if not self._subscribers:
            return  # nobody watching the status page: no update to build
        for (com, dev), state in touched.items():
            self._notify(f"d/{com}/{dev}", {"type": "device", **state.as_json()})

    def set_gateway(self, community: str, gateway: str, status: str, t: int) -> None:
        """Record a gateway's online/offline status."""
        entry = self.gateways.setdefault((community, gateway), {})
        entry.update(community=community, gateway=gateway, status=status, t=t)
        self._notify(f"g/{community}/{gateway}", {"type": "gateway", **entry})
        for listener in self.listeners:
            listener(f"g/{community}/{gateway}", community, entry)

    def set_gateway_health(
        self, community: str, gateway: str, t: int, fields: dict[str, FieldValue]
    ) -> None:
        """Record a gateway's latest health item (queue depth, drops, poll success...)."""
        entry = self.gateways.setdefault(
            (community, gateway), {"community": community, "gateway": gateway, "status": None}
        )
        if entry.get("health_t", 0) > t:
            return
        entry["health"] = dict(fields)
        entry["health_t"] = t
        self._notify(f"g/{community}/{gateway}", {"type": "gateway", **entry})
        for listener in self.listeners:
            listener(f"g/{community}/{gateway}", community, entry)

    def subscribe(self) -> Subscriber:
        """A new subscriber; call :meth:`unsubscribe` when its screen goes away."""
        sub = Subscriber()
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    def _notify(self, key: str, update: dict[str, Any]) -> None:
        for sub in self._subscribers:
            sub.offer(key, update)
