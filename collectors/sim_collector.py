"""The simulators as an ordinary collector: a thin clocked shell around the state machines."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from collectors.base import Emit, wall_ms
from collectors.simulators import TICK_MS, DeviceSimulator

__all__ = ["SimulatorCollector"]


class SimulatorCollector:
    """Steps a set of simulated devices once per tick of wall time and emits what they report.

    ``clock`` is injectable so tests can drive it; the items carry the simulator's device time.
    """

    def __init__(
        self,
        name: str,
        devices: Sequence[DeviceSimulator],
        *,
        clock: Callable[[], int] = wall_ms,
        tick_s: float = TICK_MS / 1000,
    ) -> None:
        self.name = name
        self._devices = list(devices)
        self._clock = clock
        self._tick_s = tick_s

    async def run(self, emit: Emit) -> None:
        """Step every device each tick until cancelled."""
        while True:
            now = self._clock()
            for device in self._devices:
                for item in device.step(now):
                    await emit(item)
            await asyncio.sleep(self._tick_s)
