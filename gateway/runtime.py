"""One gateway at run time: its collectors feeding its uplink, and a clean stop.

Stopping: collectors are cancelled first (no new items), then the uplink drains what is
pending for up to ``drain_timeout`` seconds, then it is cancelled (publishing ``offline``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO, cast

import msgspec

from collectors.base import Collector
from collectors.framed import FramedCollector, FramedDevice
from collectors.local_mqtt import LocalMqttCollector, MqttDevice
from collectors.modbus import ModbusCollector, ModbusDevice
from collectors.profile import FramedProfile, ModbusProfile, MqttProfile, Profile
from collectors.sim_collector import SimulatorCollector
from collectors.simulators import make_simulator
from collectors.wire import Item
from gateway.seqstore import SeqStore
from gateway.site import ModbusBusConfig, SerialBusConfig, SimulatorConfig, SiteConfig
from gateway.uplink import Uplink

__all__ = ["Gateway", "build_collectors"]

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode


def build_collectors(site: SiteConfig, profiles: Mapping[str, Profile]) -> list[Collector]:
    """The collectors a (checked) site config declares, with their profiles."""
    collectors: list[Collector] = []
    for i, conf in enumerate(site.collectors):
        if isinstance(conf, SimulatorConfig):
            # Each simulator's seed also depends on its position, so two collectors with the
            # same seed do not mirror each other.
            sims = [
                make_simulator(d.id, d.kind, conf.seed + i, floors=d.floors) for d in conf.devices
            ]
            collectors.append(SimulatorCollector(conf.name, sims))
        elif isinstance(conf, ModbusBusConfig):
            devices = [
                ModbusDevice(d.id, d.unit, cast(ModbusProfile, profiles[d.profile]))
                for d in conf.devices
            ]
            serial = conf.serial or devices[0].profile.serial
            collectors.append(ModbusCollector(conf.name, conf.port, serial, devices))
        elif isinstance(conf, SerialBusConfig):
            framed = cast(FramedProfile, profiles[conf.profile])
            collectors.append(
                FramedCollector(
                    conf.name,
                    conf.port,
                    conf.serial or framed.serial,
                    framed,
                    [FramedDevice(d.id, d.address) for d in conf.devices],
                )
            )
        else:
            mqtt_devices = [
                MqttDevice(d.id, cast(MqttProfile, profiles[d.profile]), str(d.address))
                for d in conf.devices
            ]
            client_id = f"linli-{site.community}-{site.gateway}-{conf.name}"
            collectors.append(
                LocalMqttCollector(conf.name, conf.url, mqtt_devices, client_id=client_id)
            )
    return collectors


class Gateway:
    """Runs one site's collectors and uplink until stopped."""

    def __init__(
        self,
        site: SiteConfig,
        *,
        profiles: Mapping[str, Profile] | None = None,
        record: TextIO | None = None,
    ) -> None:
        self.site = site
        self.collectors = build_collectors(site, profiles or {})
        self.uplink = Uplink(site, SeqStore(Path(site.state_dir) / "seq"))
        self.produced = 0
        self._record = record

    async def _emit(self, item: Item) -> None:
        self.produced += 1
        if self._record is not None:
            # One JSON line per item as produced, so a test can count what the server holds.
            line = _encode(
                {"community": self.site.community, "gw": self.site.gateway, "item": item}
            )
            self._record.write(line.decode() + "\n")
        await self.uplink.put(item)

    async def run(self, stop: asyncio.Event, *, drain_timeout: float = 10.0) -> None:
        """Run until ``stop`` is set, then stop collectors, drain the uplink, and return."""
        uplink_task = asyncio.create_task(
            self.uplink.run(), name=f"uplink-{self.site.community}-{self.site.gateway}"
        )
        collector_tasks = [
            asyncio.create_task(c.run(self._emit), name=f"collector-{self.site.community}-{c.name}")
            for c in self.collectors
        ]
        try:
            waits = [asyncio.create_task(stop.wait()), uplink_task, *collector_tasks]
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            waits[0].cancel()
            for task in done:
                failure = None if task is waits[0] else task.exception()
                if failure is not None:
                    raise failure
        finally:
            for task in collector_tasks:
                task.cancel()
            for task in collector_tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self._record is not None:
                self._record.flush()
            if not uplink_task.done():
                try:
                    await asyncio.wait_for(self.uplink.drain(), drain_timeout)
                except TimeoutError:
                    log.warning(
                        "%s/%s stopped with %d items unsent",
                        self.site.community,
                        self.site.gateway,
                        self.uplink.unsent,
                    )
                uplink_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await uplink_task
