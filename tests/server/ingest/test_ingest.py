"""The ingest pipeline in process, over the real embedded telemetry store (no MQTT)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from collectors.yamlconf import ConfigError
from server.ingest.pipeline import Ingest, evidence_id
from server.store.db import open_database
from server.store.registry import RegistryIndex, import_registry, load_registry, load_registry_index
from server.telemetry.sqlite_store import open_sqlite_store
from server.web.livestate import LiveState
from tests.conftest import DEMO_REGISTRY

T0 = 1_763_800_000_000
UP = "linli/v1/meihuayuan/gw-1/up"


def env(seq: int, *items: dict[str, Any], community: str = "meihuayuan") -> bytes:
    return json.dumps(
        {"v": 1, "gw": "gw-1", "community": community, "seq": seq, "sent": T0, "items": list(items)}
    ).encode()


def lane(t: int, occupied: bool, dev: str = "fl-1") -> dict[str, Any]:
    return {"t": t, "dev": dev, "kind": "fire_lane", "fields": {"occupied": occupied}}


async def test_ingest_stores_state_dedupes_and_picks_up_new_devices(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    async with open_database(url) as db, open_sqlite_store(tmp_path / "t.db") as store:
        async with db.session() as s:
            await import_registry(s, load_registry(DEMO_REGISTRY))

        async def load() -> RegistryIndex:
            async with db.session() as s:
                return await load_registry_index(s)

        live = LiveState()
        sub = live.subscribe()
        ingest = Ingest(
            prefix="linli/v1", registry=await load(), load_registry=load, live=live, writer=store
        )
        assert await ingest.handle(UP, env(0, lane(T0, True))) is None
        assert await ingest.handle(UP, env(0, lane(T0, True))) is None  # duplicate
        ev = {
            "t": T0 + 5,
            "dev": "fl-1",
            "kind": "fire_lane",
            "event": "obstruction",
            "state": "start",
            "data": {"object": "vehicle"},
        }
        assert await ingest.handle(UP, env(2, lane(T0 + 1, True), ev)) is None
        await store.flush()
        assert await store.counts() == {"meihuayuan/fl-1": {"readings": 2, "events": 1}}
        assert ingest.stats.duplicates == 1
        assert ingest.gaps == 1  # seq 1 never came
        state = live.devices[("meihuayuan", "fl-1")]
        assert state.fields == {"occupied": True}
        assert state.active == {"obstruction": T0 + 5}
        batch = await sub.next_batch()
        assert [u["dev"] for u in batch] == ["fl-1"]  # coalesced: one update per device

        # A device unknown at first is picked up once the registry has it (reloaded on miss).
        rejected = await ingest.handle(UP, env(3, lane(T0, False, dev="fl-9")))
        assert rejected is not None
        assert rejected.reason == "unknown_device"
        text = DEMO_REGISTRY.read_text(encoding="utf-8").replace(
            "      - id: fl-1\n",
            "      - id: fl-9\n        kind: fire_lane\n        name: '9号'\n"
            "        gateway: gw-1\n      - id: fl-1\n",
            1,
        )
        extra = tmp_path / "extra.yaml"
        extra.write_text(text, encoding="utf-8")
        async with db.session() as s:
            await import_registry(s, load_registry(extra))
        ingest._reloaded_at = float("-inf")  # as if the reload interval had passed
        assert await ingest.handle(UP, env(4, lane(T0, False, dev="fl-9"))) is None
        assert ingest.stats_json()["rejected"] == {"unknown_device": 1}


async def test_a_forged_jump_does_not_silence_the_gateway_and_rejects_are_per_gateway(
    tmp_path: Path,
) -> None:
    """Issue 13's attack in process: one forged envelope numbered 10^12 for gw-1, then the
    real gateway's next 406 items all stored; misrouted envelopes counted against the
    gateway whose topic they used, junk topics under "unregistered"."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    async with open_database(url) as db, open_sqlite_store(tmp_path / "t.db") as store:
        async with db.session() as s:
            await import_registry(s, load_registry(DEMO_REGISTRY))
            index = await load_registry_index(s)

        async def load() -> RegistryIndex:
            return index

        ingest = Ingest(
            prefix="linli/v1", registry=index, load_registry=load, live=LiveState(), writer=store
        )
        for seq in range(5):
            assert await ingest.handle(UP, env(seq, lane(T0 + seq, True))) is None
        assert await ingest.handle(UP, env(10**12, lane(T0 - 1, False))) is None  # forged
        for seq in range(5, 411):
            assert await ingest.handle(UP, env(seq, lane(T0 + seq, seq % 2 == 0))) is None
        await ingest.commit()
        assert await store.counts() == {"meihuayuan/fl-1": {"readings": 412, "events": 0}}
        mark = ingest.stats_json()["gateways"]["meihuayuan/gw-1"]
        assert (mark["high"], mark["gaps"], mark["duplicates"], mark["jumps"]) == (410, 0, 0, 1)

        # The envelope of another community on gw-1's topic; junk on a made-up gateway.
        other = env(411, lane(T0, True), community="longzhu-baihe")
        assert (await ingest.handle(UP, other)).reason == "topic_mismatch"  # type: ignore[union-attr]
        junk = await ingest.handle("linli/v1/nowhere/gw-x/up", b"{}")
        assert junk is not None
        stats = ingest.stats_json()
        assert stats["gateways"]["meihuayuan/gw-1"]["rejected"] == {"topic_mismatch": 1}
        assert set(stats["rejected_by_gateway"]) == {"meihuayuan/gw-1", "unregistered"}


async def test_a_retired_gateway_is_rejected_and_counted_against_it(tmp_path: Path) -> None:
    """Issue 13, item 5: a gateway retired in the registry keeps its history, and what it
    (or someone with its old credentials) still sends is rejected, status included."""
    text = DEMO_REGISTRY.read_text(encoding="utf-8").replace(
        "    gateways:\n      - id: gw-1\n",
        "    gateways:\n      - id: gw-1\n      - id: gw-old\n        retired: true\n",
        1,
    )
    path = tmp_path / "retired.yaml"
    path.write_text(text, encoding="utf-8")
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    async with open_database(url) as db, open_sqlite_store(tmp_path / "t.db") as store:
        async with db.session(write=True) as s:
            await import_registry(s, load_registry(path))
            registry = await load_registry_index(s)
        assert ("meihuayuan", "gw-old") in registry.retired
        assert ("meihuayuan", "gw-old") not in registry.gateways

        async def load() -> RegistryIndex:
            return registry

        ingest = Ingest(prefix="linli/v1", registry=registry, load_registry=load,
                        live=LiveState(), writer=store)  # fmt: skip
        old_up = "linli/v1/meihuayuan/gw-old/up"
        payload = env(0, lane(T0, True)).replace(b'"gw-1"', b'"gw-old"')
        rejected = await ingest.handle(old_up, payload)
        assert rejected is not None
        assert rejected.reason == "retired_gateway"
        status = json.dumps({"gw": "gw-old", "community": "meihuayuan",
                             "status": "online", "t": T0}).encode()  # fmt: skip
        rejected = await ingest.handle("linli/v1/meihuayuan/gw-old/status", status)
        assert rejected is not None
        assert rejected.reason == "retired_gateway"
        assert await ingest.handle(UP, env(0, lane(T0, True))) is None  # gw-1 is fine
        await store.flush()
        assert await store.counts() == {"meihuayuan/fl-1": {"readings": 1, "events": 0}}
        stats = ingest.stats_json()
        assert stats["rejected_by_gateway"]["meihuayuan/gw-old"] == {"retired_gateway": 2}
        # Retired while the server runs: it takes effect at the next refresh, no restart.
        clock = [0.0]
        live_path = tmp_path / "live.yaml"
        live_path.write_text(text.replace("      - id: gw-old\n        retired: true\n",
                                          "      - id: gw-old\n"), encoding="utf-8")  # fmt: skip
        async with db.session(write=True) as s:
            await import_registry(s, load_registry(live_path))

        async def reload() -> RegistryIndex:
            async with db.session() as s:
                return await load_registry_index(s)

        running = Ingest(prefix="linli/v1", registry=await reload(), load_registry=reload,
                         live=LiveState(), writer=store, clock=lambda: clock[0])  # fmt: skip
        running._reloaded_at = 0.0
        assert await running.handle(old_up, env(5, lane(T0, True)).replace(
            b'"gw-1"', b'"gw-old"')) is None  # fmt: skip
        async with db.session(write=True) as s:
            await import_registry(s, load_registry(path))  # retired now
        clock[0] = 31.0
        late = await running.handle(old_up, env(6, lane(T0, True)).replace(b'"gw-1"', b'"gw-old"'))
        assert late is not None
        assert late.reason == "retired_gateway"
        bad = tmp_path / "bad.yaml"
        bad.write_text(text.replace("        gateway: gw-1\n", "        gateway: gw-old\n", 1))
        with pytest.raises(ConfigError, match="gateway 'gw-old' is retired: move the device"):
            load_registry(bad)


async def test_evidence_references_are_stored_as_opaque_ids(tmp_path: Path) -> None:
    """Issue 13, item 9: a snapshot's file name may carry a plate; what is stored, shown and
    sent on is an id derived from it with the server's key."""
    key = b"k" * 32
    plate = "snap/\u4eacA12345_20261201.jpg"
    async with open_database(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}") as db:
        async with db.session(write=True) as s:
            await import_registry(s, load_registry(DEMO_REGISTRY))
            registry = await load_registry_index(s)

        async def load() -> RegistryIndex:
            return registry

        async with open_sqlite_store(tmp_path / "t.db") as store:
            live = LiveState()
            ingest = Ingest(prefix="linli/v1", registry=registry, load_registry=load,
                            live=live, writer=store, evidence_key=key)  # fmt: skip
            reading = {**lane(T0, True), "fields": {"occupied": True, "evidence": plate}}
            data = {"snapshot": plate, "photo": plate, "plate": "\u4eacA1", "confidence": 0.9}
            ebike = {"t": T0, "dev": "el-1-1", "kind": "elevator", "event": "ebike_detected",
                     "state": "start", "data": data}  # fmt: skip
            assert await ingest.handle(UP, env(0, reading, ebike)) is None
            await store.flush()
            stored = json.dumps(await store.items("meihuayuan", "fl-1", "fire_lane",
                                                  since=0, until=2**62, limit=10))  # fmt: skip
            events = await store.events("meihuayuan", "elevator", ["ebike_detected"],
                                        since=0, until=2**62, dev="el-1-1")  # fmt: skip
    want = evidence_id(key, plate)
    assert want.startswith("ev_")
    assert len(want) == 23
    assert "A12345" not in stored
    assert want in stored
    assert [e.data for e in events] == [{"snapshot": want, "photo": want, "confidence": 0.9}]
    assert ingest.stats.personal_data_dropped == 1  # the plate
    assert live.devices[("meihuayuan", "fl-1")].fields["evidence"] == want
    assert evidence_id(key, want) == want  # an id stays itself
    assert evidence_id(b"other" * 7, plate) != want
