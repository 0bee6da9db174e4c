"""Faults with real processes: mosquitto, ``linli server`` and ``linli gateway``, each its own
process, the gateway's devices simulated. Every test counts every item: what the gateway
committed to its queue (its ``--record`` file, one line per item, written after the commit)
against what the server stored, field by field.

The broker is a persistent mosquitto, as in production: it keeps the server's session and
the QoS 1 messages queued for it across its own restart. The server subscribes without a
shared group here: mosquitto (2.0.11, Debian 12) does not restore *shared* subscriptions
from its persistence file, so after a broker restart it would acknowledge the gateway's
batches with nobody to queue them for (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml

from collectors.signed import sign
from tests.conftest import ROOT, Broker, ServerProc, linli, server_on, signing_key, stop
from tests.pipeline import (
    COMMUNITY,
    get_json,
    produced_items,
    site_for,
    stored_items,
    wait_for,
)

pytestmark = pytest.mark.functional


@pytest.fixture
def srv(tmp_path: Path, persistent_mosquitto: Broker) -> Any:
    server = server_on(tmp_path, persistent_mosquitto, extra='mqtt_shared_group = ""\n')
    wait_for(lambda: get_json(f"{server.url}/healthz")["mqtt_connected"], what="server MQTT")
    yield server
    assert stop(server.proc) == 0, server.log.read_text()[-3000:]


def start_gateway(site: Path, record: Path, log: Path) -> subprocess.Popen[str]:
    with log.open("a") as out:
        return subprocess.Popen(
            linli("gateway", "--config", str(site), "--record", str(record)),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )


def device_items(produced: Counter[str]) -> Counter[str]:
    return Counter({k: n for k, n in produced.items() if json.loads(k)["dev"] != "gw-1"})


def stored_total(server: ServerProc) -> int:
    counts = get_json(f"{server.url}/api/telemetry/counts?community={COMMUNITY}&flush=1")
    return sum(c["readings"] + c["events"] for c in counts.values())


def ingest(server: ServerProc) -> dict[str, Any]:
    stats: dict[str, Any] = get_json(f"{server.url}/api/ingest")
    return stats


def test_broker_down_60_s_loses_nothing(
    tmp_path: Path, persistent_mosquitto: Broker, srv: ServerProc
) -> None:
    broker = persistent_mosquitto
    site = site_for(tmp_path, broker, health_interval_s=0, batch={"max_age_ms": 300})
    record = tmp_path / "produced.jsonl"
    gw = start_gateway(site, record, tmp_path / "gateway.log")
    try:
        wait_for(lambda: stored_total(srv) > 0, what="first items stored")
        broker.stop()
        before = len(record.read_text().splitlines())
        time.sleep(60)  # the sensors keep producing; the gateway queues on disk
        during = len(record.read_text().splitlines()) - before
        assert during > 100, "the simulators went on producing during the outage"
        broker.start()
        wait_for(
            lambda: stored_total(srv) >= sum(produced_items(record).values()),
            timeout=60,
            what="the backlog to drain",
        )
    finally:
        assert stop(gw) == 0, (tmp_path / "gateway.log").read_text()[-3000:]
    produced = produced_items(record)
    wait_for(lambda: stored_total(srv) >= sum(produced.values()), what="the last items")
    devices = {json.loads(k)["dev"] for k in produced}
    stored = stored_items(srv, devices)
    assert stored == produced  # every item exactly once, field by field
    stats = ingest(srv)
    assert stats["items"] == sum(produced.values())
    assert stats["gaps"] == 0
    assert stats["rejected_total"] == 0


def queue_rows(state_dir: Path) -> tuple[int, int]:
    """(items not yet deleted, batches in flight) in a gateway's queue file, read beside it
    (items stay in place until their batch is acknowledged; docs/gateway.md)."""
    db = sqlite3.connect(state_dir / "queue.sqlite3")
    try:
        items = sum(
            db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("items", "events")
        )
        inflight = db.execute("SELECT count(*) FROM flight").fetchone()[0]
    finally:
        db.close()
    return int(items), int(inflight)


def test_kill_9_mid_flight_then_restart_loses_nothing(
    tmp_path: Path, persistent_mosquitto: Broker, srv: ServerProc
) -> None:
    broker = persistent_mosquitto
    # One item per batch: each costs a commit, a publish and an acknowledged delete, so the
    # drain of the backlog takes long enough to be killed in the middle of it.
    site = site_for(tmp_path, broker, health_interval_s=0, batch={"max_items": 1})
    record = tmp_path / "produced.jsonl"
    log = tmp_path / "gateway.log"
    broker.stop()
    gw = start_gateway(site, record, log)
    time.sleep(12)
    backlog = queue_rows(tmp_path / "gw-state")[0]
    assert backlog > 20
    broker.start()
    # Kill it once the drain has begun, while most of the backlog is still queued.
    deadline = time.monotonic() + 30
    while not 0 < queue_rows(tmp_path / "gw-state")[0] < backlog - 2:
        assert time.monotonic() < deadline, "the drain did not start"
        time.sleep(0.005)
    gw.send_signal(signal.SIGKILL)
    killed_ms = time.time_ns() // 1_000_000
    gw.wait(timeout=10)
    pending, inflight = queue_rows(tmp_path / "gw-state")
    assert pending + inflight > 0, "killed in the middle of the drain"
    gw = start_gateway(site, record, log)
    time.sleep(4)
    assert stop(gw) == 0, log.read_text()[-3000:]
    assert queue_rows(tmp_path / "gw-state") == (0, 0)
    produced = produced_items(record)
    wait_for(lambda: stored_total(srv) >= sum(produced.values()), what="everything stored")
    devices = {json.loads(k)["dev"] for k in produced}
    stored = stored_items(srv, devices)
    # Everything committed reached the server exactly once: nothing lost, and what was in
    # flight at the kill, published again under its seq, dropped as a duplicate.
    assert not (produced - stored)
    assert max(stored.values()) == 1
    # The record line is written just after the commit: a kill between the two leaves items
    # on the server that the record never saw. They must be from the instant of the kill.
    for key in stored - produced:
        assert abs(json.loads(key)["t"] - killed_ms) < 2_000, key
    stats = ingest(srv)
    assert stats["gaps"] == 0
    assert stats["rejected_total"] == 0
    print(f"pending {pending}, in flight {inflight} at the kill; dups {stats['duplicates']}")


async def test_disk_budget_thins_readings_keeps_every_event_and_reports_drops(
    tmp_path: Path, persistent_mosquitto: Broker, mosquitto: Broker, srv: ServerProc
) -> None:
    broker = persistent_mosquitto
    budget_mb = 0.01  # about 10 KB: some fifty readings
    site_path = site_for(
        tmp_path, broker, seed=11, health_interval_s=1, queue={"budget_mb": budget_mb}
    )
    # The e-bike camera of el-2-1 sits on the community's own broker (``mosquitto``, which
    # stays up): the test makes it report events while the uplink is down.
    site = yaml.safe_load(site_path.read_text())
    sims = site["collectors"][0]
    sims["devices"] = [d for d in sims["devices"] if d["id"] != "el-2-1"]
    site["profile_dirs"] = [str(ROOT / "firmware_configs")]
    site["collectors"].append(
        {"type": "mqtt", "name": "aibox", "url": mosquitto.url,
         "devices": [{"id": "el-2-1", "profile": "aibox-ebike", "address": "cam-3"}]}
    )  # fmt: skip
    site_path.write_text(yaml.safe_dump(site))
    record = tmp_path / "produced.jsonl"
    log = tmp_path / "gateway.log"
    broker.stop()
    gw = start_gateway(site_path, record, log)
    await asyncio.sleep(3)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="test-aibox") as box:
        # Whole-second stamps one second apart, all in the past: history reads end at "now",
        # so a stamp ahead of the clock would be missed by the check, not by the gateway.
        t0 = int(time.time()) - 40
        for i in range(40):  # 20 e-bikes in, 20 out, over 20 s
            body = {"ts": t0 + i, "state": "enter" if i % 2 == 0 else "leave"}
            await box.publish("aibox/box-02/elevator/cam-3/ebike", json.dumps(body), qos=1)
            await asyncio.sleep(0.5)
    await asyncio.sleep(2)
    broker.start()

    def latest_health() -> dict[str, Any] | None:
        overview = get_json(f"{srv.url}/api/overview")
        entry = next((g for g in overview["gateways"] if g["gateway"] == "gw-1"), None)
        return entry.get("health") if entry else None

    def drained_health() -> dict[str, Any] | None:
        health = latest_health()
        return health if health and health["queue_depth"] <= 1 else None

    await asyncio.to_thread(
        wait_for, lambda: drained_health() is not None, 60, "a health item after drain"
    )
    assert stop(gw) == 0, log.read_text()[-3000:]
    produced = produced_items(record)
    await asyncio.sleep(1)
    # The last health item the gateway sent (on its way out it may count a couple of items
    # still queued: the drain was checked before the stop).
    health = latest_health()
    assert health is not None
    thinned = health["thinned"]
    assert thinned > 0, "the budget was reached"
    assert health["budget_bytes"] == int(budget_mb * 1024 * 1024)

    devices = {json.loads(k)["dev"] for k in device_items(produced)}
    stored = stored_items(srv, devices)
    produced_dev = device_items(produced)
    events = Counter({k: n for k, n in produced_dev.items() if "event" in json.loads(k)})
    stored_events = Counter({k: n for k, n in stored.items() if "event" in json.loads(k)})
    assert sum(events.values()) >= 40
    assert stored_events == events  # every event, exactly once, none thinned
    readings = sum(produced_dev.values()) - sum(events.values())
    stored_readings = sum(stored.values()) - sum(stored_events.values())
    assert not (stored - produced_dev), "nothing the gateway did not produce"
    # Counted: what is missing is exactly what the gateway says it thinned (its own health
    # items are routine readings too, so the count covers them).
    health_produced = sum(produced.values()) - sum(produced_dev.values())
    health_stored = ingest(srv)["items"] - sum(stored.values())
    assert (readings - stored_readings) + (health_produced - health_stored) == thinned
    print(f"readings {readings}, thinned {thinned}, events {sum(events.values())}")


async def _exchange(broker: Broker, topic: str, payload: bytes, *, retain: bool) -> dict[str, Any]:
    """Publish to a gateway topic, signed as the server signs, and return its next reply on
    cmd/ack."""
    base = f"linli/v1/{COMMUNITY}/gw-1"
    expires = None if topic == "config" else int(time.time() * 1000) + 60_000
    signed = sign(signing_key(), f"{base}/{topic}", payload, expires=expires)
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="test-admin") as client:
        await client.subscribe(f"{base}/cmd/ack", qos=1)
        await client.publish(f"{base}/{topic}", signed, qos=1, retain=retain)
        async with asyncio.timeout(15):
            async for message in client.messages:
                payload = message.payload
                body: dict[str, Any] = json.loads(
                    payload if isinstance(payload, bytes) else str(payload)
                )
                return body
    raise AssertionError("no reply")


async def test_remote_config_invalid_is_refused_and_the_old_one_kept(
    tmp_path: Path, mosquitto: Broker, server: ServerProc
) -> None:
    site = site_for(tmp_path, mosquitto, health_interval_s=0.5)
    record = tmp_path / "produced.jsonl"
    log = tmp_path / "gateway.log"
    gw = start_gateway(site, record, log)
    try:
        await asyncio.sleep(2)
        good = {"config_version": 3, "health_interval_s": 0.5,
                "edge": {"fire_lane": {"dwell_s": 30}}}  # fmt: skip
        reply = await _exchange(mosquitto, "config", json.dumps(good).encode(), retain=True)
        assert reply["type"] == "config"
        assert (reply["ok"], reply["version"], reply["running"]) == (True, 3, 3)

        corrupted = b'{"config_version": 4, "edge": {"fire_lane": {"dwell_s": 30'
        reply = await _exchange(mosquitto, "config", corrupted, retain=True)
        assert (reply["ok"], reply["running"]) == (False, 3)
        assert "not valid YAML" in reply["error"]

        invalid = {"config_version": 5, "edge": {"fire_release": {"gates": ["el-1-1"]}},
                   "batch": {"max_items": 0}}  # fmt: skip
        reply = await _exchange(mosquitto, "config", json.dumps(invalid).encode(), retain=True)
        assert (reply["ok"], reply["version"], reply["running"]) == (False, 5, 3)
        assert (
            "edge.fire_release.gates[0]: 'el-1-1' is not a gate on this gateway" in (reply["error"])
        )
        assert "batch: max_items >= 1" in reply["error"]

        older = {"config_version": 2}
        reply = await _exchange(mosquitto, "config", json.dumps(older).encode(), retain=True)
        assert reply["ok"] is False
        assert "older than the running 3" in reply["error"]

        # The gateway still runs version 3 and still delivers: its health item says so.
        def health() -> dict[str, Any] | None:
            overview = get_json(f"{server.url}/api/overview")
            entry = next((g for g in overview["gateways"] if g["gateway"] == "gw-1"), {})
            found: dict[str, Any] | None = entry.get("health")
            return found

        await asyncio.sleep(1.5)
        latest = health()
        assert latest is not None
        assert latest["config_version"] == 3
        before = ingest(server)["items"]
        await asyncio.sleep(1.5)
        assert ingest(server)["items"] > before

        bad_cmd = await _exchange(mosquitto, "cmd", b'{"id": "c1", "op": "explode"}', retain=False)
        assert (bad_cmd["id"], bad_cmd["ok"]) == ("c1", False)
        assert "not a command" in bad_cmd["error"]
        ping = {"id": "c2", "op": "ping", "sent": int(time.time() * 1000)}
        pong = await _exchange(mosquitto, "cmd", json.dumps(ping).encode(), retain=False)
        assert (pong["id"], pong["ok"], pong["result"]) == ("c2", True, "pong")
    finally:
        assert stop(gw) == 0, log.read_text()[-3000:]
    # Restarted without a broker, the gateway comes back on the version it saved.
    saved = json.loads((tmp_path / "gw-state" / "remote-config.json").read_text())
    assert json.loads(saved["body"])["config_version"] == 3  # kept as signed
