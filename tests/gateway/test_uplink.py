"""The uplink's batching, without a broker: bounds by count, bytes and age; events first."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from collectors.wire import Event, Reading
from gateway.seqstore import SeqStore
from gateway.site import BatchConfig, SimDeviceConfig, SimulatorConfig, SiteConfig, UplinkConfig
from gateway.uplink import Uplink

T0 = 1_763_800_000_000


def uplink(tmp_path: Path, **batch: int) -> Uplink:
    site = SiteConfig(
        version=1,
        gateway="gw-1",
        community="c-1",
        uplink=UplinkConfig("mqtt://127.0.0.1"),
        state_dir=str(tmp_path),
        batch=BatchConfig(**batch),
        collectors=[SimulatorConfig(devices=[SimDeviceConfig("fl-1", "fire_lane")])],
    )
    return Uplink(site, SeqStore(tmp_path / "seq"))


async def test_batches_respect_max_bytes_exactly_and_keep_order(tmp_path: Path) -> None:
    up = uplink(tmp_path, max_bytes=4096, max_age_ms=0, max_items=1000)
    big = "x" * 700  # far above the per-item estimate
    for i in range(20):
        await up.put(Reading(T0 + i, "fl-1", "fire_lane", {"occupied": True, "evidence": big}))
    seen: list[int] = []
    seqs: list[int] = []
    while len(seen) < 20:
        payload, count = await up._next_batch()
        assert len(payload) <= 4096
        body = json.loads(payload)
        assert len(body["items"]) == count
        seen += [item["t"] - T0 for item in body["items"]]
        seqs.append(body["seq"])
    assert seen == list(range(20))  # nothing lost, nothing reordered
    assert seqs == list(range(len(seqs)))  # no number wasted on a batch that shrank
    assert (tmp_path / "seq").read_text().strip() == str(len(seqs))


async def test_an_event_goes_at_once_without_waiting_for_the_age_bound(tmp_path: Path) -> None:
    up = uplink(tmp_path, max_age_ms=60_000)
    now = time.time_ns() // 1_000_000
    await up.put(Reading(now, "fl-1", "fire_lane", {"occupied": True}))
    await up.put(Event(now, "fl-1", "fire_lane", "obstruction", "start"))
    payload, count = await asyncio.wait_for(up._next_batch(), 1.0)
    assert count == 2
    assert json.loads(payload)["items"][1]["event"] == "obstruction"
