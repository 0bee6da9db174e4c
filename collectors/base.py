"""The interface every collector offers the gateway.

A collector owns its source (a serial bus, a local broker, a simulator), turns what it reads
into wire items, and hands each one to ``emit`` in the order it saw them. ``emit`` is awaited:
when the gateway's queue pushes back, the collector waits instead of dropping. A collector
runs until cancelled and must leave its source closed when it returns.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from collectors.wire import Item

__all__ = ["Collector", "Emit", "wall_ms"]

Emit = Callable[[Item], Awaitable[None]]


class Collector(Protocol):
    """A running source of readings and events."""

    name: str

    async def run(self, emit: Emit) -> None:
        """Collect until cancelled, handing every item to ``emit``."""
        ...


def wall_ms() -> int:
    """Wall-clock time in epoch milliseconds: the default clock of every collector (tests
    pass their own, so that timestamps are exact)."""
    return time.time_ns() // 1_000_000
