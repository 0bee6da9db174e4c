"""The interface between ingest and a telemetry store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from collectors.wire import Item

__all__ = ["TelemetryWriteError", "TelemetryWriter"]


class TelemetryWriteError(Exception):
    """A store refused or could not take a write; says which store and why."""


class TelemetryWriter(Protocol):
    """Where ingest sends every accepted reading and event.

    ``write`` and ``write_status`` queue in memory and return. ``seal`` takes everything
    queued so far, with ingest's marks (opaque bytes per gateway: its sequence windows), at
    the moment of the call; the function it returns makes that snapshot durable in one step,
    so that after a crash the store holds the items of exactly the messages whose marks it
    holds. Ingest acknowledges a message to the broker only after the write that holds it,
    and handles the next messages meanwhile. ``commit`` is seal-and-write. Queued items
    nobody committed are dropped at close. ``flush`` waits until everything queued so far is
    stored where queries see it.
    """

    async def write(self, community: str, gateway: str, items: Sequence[Item]) -> None:
        """Queue ``items`` from one envelope for storage."""
        ...

    async def write_status(self, community: str, gateway: str, status: str, t: int) -> None:
        """Queue a gateway's status (``online``/``offline``) as of device time ``t``."""
        ...

    def seal(self, marks: Mapping[tuple[str, str], bytes]) -> Callable[[], Awaitable[None]]:
        """Take every item queued so far and ``marks`` now; the returned function writes them
        durably in one transaction. On failure nothing of it is stored and the function may
        be called again (snapshots are written in the order they were sealed)."""
        ...

    async def commit(self, marks: Mapping[tuple[str, str], bytes]) -> None:
        """``seal(marks)`` and write it."""
        ...

    async def load_marks(self) -> dict[tuple[str, str], bytes]:
        """The marks of the last commit, per ``(community, gateway)``."""
        ...

    async def flush(self) -> None:
        """Return once everything queued before the call is stored."""
        ...
