"""The interface between ingest and a telemetry store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from collectors.wire import Item

__all__ = ["TelemetryWriteError", "TelemetryWriter"]


class TelemetryWriteError(Exception):
    """A store refused or could not take a write; says which store and why."""


class TelemetryWriter(Protocol):
    """Where ingest sends every accepted reading and event.

    ``write`` and ``write_status`` queue in memory and return. ``commit`` makes everything
    queued so far durable in one step with ingest's marks (opaque bytes per gateway: its
    sequence windows), so that after a crash the store holds the items of exactly the
    messages whose marks it holds; ingest acknowledges a message to the broker only after
    the commit that holds it. Queued items nobody committed are dropped at close. ``flush``
    waits until everything queued so far is stored where queries see it.
    """

    async def write(self, community: str, gateway: str, items: Sequence[Item]) -> None:
        """Queue ``items`` from one envelope for storage."""
        ...

    async def write_status(self, community: str, gateway: str, status: str, t: int) -> None:
        """Queue a gateway's status (``online``/``offline``) as of device time ``t``."""
        ...

    async def commit(self, marks: Mapping[tuple[str, str], bytes]) -> None:
        """Make every item queued so far and ``marks`` durable, together; on failure
        neither is stored and the items stay queued."""
        ...

    async def load_marks(self) -> dict[tuple[str, str], bytes]:
        """The marks of the last commit, per ``(community, gateway)``."""
        ...

    async def flush(self) -> None:
        """Return once everything queued before the call is stored."""
        ...
