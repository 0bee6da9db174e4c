"""The interface between ingest and a telemetry store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from collectors.wire import Item

__all__ = ["TelemetryWriteError", "TelemetryWriter"]


class TelemetryWriteError(Exception):
    """A store refused or could not take a write; says which store and why."""


class TelemetryWriter(Protocol):
    """Where ingest sends every accepted reading and event.

    ``write`` queues and returns quickly; it waits only when the store's bounded buffer is
    full (back-pressure), and never loses an item it accepted. ``flush`` waits until every
    item queued so far is stored.
    """

    async def write(self, community: str, gateway: str, items: Sequence[Item]) -> None:
        """Queue ``items`` from one envelope for storage."""
        ...

    async def write_status(self, community: str, gateway: str, status: str, t: int) -> None:
        """Queue a gateway's status (``online``/``offline``) as of device time ``t``."""
        ...

    async def flush(self) -> None:
        """Return once everything queued before the call is stored."""
        ...
