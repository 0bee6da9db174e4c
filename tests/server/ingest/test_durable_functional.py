"""Acknowledged means durable (issue 12), end to end with real parts: mosquitto (persistent,
as docs/deploy/mosquitto.conf), influxd 1.x, ``linli gateway`` with simulated devices and
``linli server`` as processes.

One run, counted: the server is killed with SIGKILL five times at random moments during the
gateway's steady stream, then once while it drains an overload of at least twice what it
sustains (a burst published by a second, registered gateway), then mosquitto is stopped for
30 s. Every item the gateway recorded and every item of the burst must be in InfluxDB
exactly once (per measurement, device, time, and event state), no gap may be counted, and
the server's RSS, sampled every 50 ms, must stay under :data:`RSS_BOUND_MB`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from collectors.wire import Envelope, Item, Reading, encode_envelope
from tests.conftest import (
    DEMO_REGISTRY,
    ROOT,
    Broker,
    Influxd,
    ServerProc,
    api_json,
    free_port,
    linli,
    run_linli,
    start_server,
    stop,
    write_influx_settings,
)
from tests.pipeline import COMMUNITY, site_for, wait_for
from tests.server.telemetry.test_influx_functional import influxql

pytestmark = pytest.mark.functional

#: The bound docs/operations.md states for the server's resident memory at any offered load.
RSS_BOUND_MB = 200
LOAD_DEVICES = 20
LOAD_ITEMS_PER_ENVELOPE = 500
T0 = 1_795_300_000_000


class RssWatch:
    """Samples the server's resident set size until stopped; the server may be replaced."""

    def __init__(self) -> None:
        self.pid = 0
        self.max_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    self.max_kb = max(self.max_kb, int(line.split()[1]))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def get(url: str) -> Any:
    return api_json(url)


def registry_with_load_gateway(tmp: Path) -> Path:
    """The demo registry, plus gateway gw-load in the test community with its elevators."""
    reg = yaml.safe_load(DEMO_REGISTRY.read_text())
    com = next(c for c in reg["communities"] if c["id"] == COMMUNITY)
    com["gateways"].append({"id": "gw-load"})
    for n in range(LOAD_DEVICES):
        com["devices"].append(
            {
                "id": f"ld-{n}",
                "kind": "elevator",
                "name": f"负载{n}",
                "gateway": "gw-load",
                "floors": 30,
                "maintenance_unit": "mu-tengda",
            }
        )
    path = tmp / "registry.yaml"
    path.write_text(yaml.safe_dump(reg, allow_unicode=True))
    return path


def burst(first_seq: int, envelopes: int, start: int) -> tuple[list[bytes], list[Item]]:
    """Envelopes of gw-load, each item a distinct (device, time)."""
    payloads: list[bytes] = []
    items: list[Item] = []
    for e in range(envelopes):
        chunk: list[Item] = [
            Reading(start + (e * LOAD_ITEMS_PER_ENVELOPE + i) // LOAD_DEVICES,
                    f"ld-{i % LOAD_DEVICES}", "elevator", {"floor": i % 30, "running": True})
            for i in range(LOAD_ITEMS_PER_ENVELOPE)
        ]  # fmt: skip
        items.extend(chunk)
        env = Envelope("gw-load", COMMUNITY, first_seq + e, start, chunk)
        payloads.append(encode_envelope(env))
    return payloads, items


def publish_all(broker: Broker, payloads: list[bytes]) -> float:
    """Publish with QoS 1 as fast as the broker takes them; seconds until the last PUBACK."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-load-gw")
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        started = time.monotonic()
        infos = [client.publish(f"linli/v1/{COMMUNITY}/gw-load/up", p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(timeout=60)
        return time.monotonic() - started
    finally:
        client.disconnect()
        client.loop_stop()


def stored(influxd: Influxd) -> Counter[tuple[Any, ...]]:
    """Every point in InfluxDB, keyed as :func:`expected` keys items."""
    out: Counter[tuple[Any, ...]] = Counter()
    for row in influxql(influxd, "linli", "SHOW MEASUREMENTS"):
        name = row["name"]
        for point in influxql(influxd, "linli", f'SELECT * FROM "{name}"'):
            if point.get("event") == "gateway_offline":
                continue  # the server's record of the gateway's status messages, not an item
            if name == "events":
                out[(name, point["device"], point["time"], point["event"], point["state"])] += 1
            else:
                out[(name, point["device"], point["time"])] += 1
    return out


def expected(items: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    out: Counter[tuple[Any, ...]] = Counter()
    for item in items:
        if "event" in item:
            out[("events", item["dev"], item["t"], item["event"], item["state"])] += 1
        else:
            out[(item["kind"], item["dev"], item["t"])] += 1
    return out


def gateway_high(srv: ServerProc) -> int:
    """The highest seq of gw-1 the server has taken."""
    marks = get(f"{srv.url}/api/ingest")["gateways"]
    return int(marks.get(f"{COMMUNITY}/gw-1", {}).get("high") or -1)


def next_seq(queue_db: Path) -> int:
    """The seq the gateway gives its next envelope (its queue's ``meta.next_seq``)."""
    with contextlib.closing(sqlite3.connect(queue_db)) as db:
        row = db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
    return int(row[0]) if row else 0


def queued(queue_db: Path) -> int:
    """Items and batches still in the gateway's queue."""
    with contextlib.closing(sqlite3.connect(queue_db)) as db:
        return sum(
            db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("items", "events", "flight")
        )


def kill9(srv: ServerProc) -> None:
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(timeout=10)


@pytest.mark.timeout(420)
def test_kills_overload_and_broker_stop_lose_nothing_acknowledged(
    tmp_path: Path, mosquitto: Broker, influxd: Influxd
) -> None:
    rng = random.Random(int(os.environ.get("LINLI_TEST_SEED", time.time_ns() % 10_000)))
    http_port = free_port()
    settings = write_influx_settings(tmp_path, mosquitto, http_port, influxd.url)
    done = run_linli("registry", "import", str(registry_with_load_gateway(tmp_path)),
                     "--config", str(settings))  # fmt: skip
    assert done.returncode == 0, done.stderr
    rss = RssWatch()
    srv = start_server(tmp_path, settings, http_port)
    rss.pid = srv.proc.pid
    record = tmp_path / "produced.jsonl"
    gateway_state = tmp_path / "gw-state" / "queue.sqlite3"
    gateway = subprocess.Popen(
        linli("gateway", "--config", str(site_for(tmp_path, mosquitto)), "--record", str(record)),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    load_items: list[Item] = []
    try:
        # 1. Five SIGKILLs at random moments of the steady stream, each restarted at once.
        for _ in range(5):
            time.sleep(rng.uniform(0.5, 3.0))
            kill9(srv)
            srv = start_server(tmp_path, settings, http_port)
            rss.pid = srv.proc.pid

        # 2. Overload: a burst far faster than ingest, and a SIGKILL while it drains.
        payloads, items = burst(0, 600, T0)
        load_items += items
        offered_s = publish_all(mosquitto, payloads)
        offered = len(items) / offered_s
        t1, n1 = time.monotonic(), get(f"{srv.url}/api/ingest")["items"]
        time.sleep(0.5)
        t2, n2 = time.monotonic(), get(f"{srv.url}/api/ingest")["items"]
        sustained = (n2 - n1) / (t2 - t1)
        assert offered >= 2 * sustained, (offered, sustained)
        kill9(srv)
        srv = start_server(tmp_path, settings, http_port)
        rss.pid = srv.proc.pid

        # 3. The broker stopped for 30 s (SIGTERM, as an operator's restart), then back.
        time.sleep(rng.uniform(0.5, 2.0))
        mosquitto.stop()
        time.sleep(30)
        mosquitto.start()
        # The gateway reconnects on its own backoff; what it queued meanwhile must arrive.
        after = next_seq(gateway_state) + 1
        wait_for(lambda: gateway_high(srv) >= after, timeout=90,
                 what="the gateway's envelopes after the broker restart")  # fmt: skip
    finally:
        gateway.send_signal(signal.SIGTERM)
        out, _ = gateway.communicate(timeout=60)
    assert gateway.returncode == 0, out[-3000:]
    # Every item recorded left the gateway: none waits in its queue for a next start.
    assert queued(gateway_state) == 0, out[-3000:]
    try:
        produced = [json.loads(line)["item"] for line in record.read_text().splitlines()]
        want = expected(produced) + expected(
            [{"kind": i.kind, "dev": i.dev, "t": i.t} for i in load_items]
        )

        def all_written() -> bool:
            health = get(f"{srv.url}/healthz")["influx"]
            return health["spool_lines"] == 0 and stored(influxd).total() >= want.total()

        # Missing items are reported below, by key, rather than as a timeout.
        with contextlib.suppress(AssertionError):
            wait_for(all_written, timeout=120, what="every item in InfluxDB")
        have = stored(influxd)
        missing, extra = want - have, have - want
        assert not missing, (
            sum(missing.values()),
            sorted(missing)[:5],
            get(f"{srv.url}/healthz"),
            get(f"{srv.url}/api/ingest")["gateways"],
        )
        assert not extra, (sum(extra.values()), list(extra)[:5])
        ingest = get(f"{srv.url}/api/ingest")
        assert ingest["gaps"] == 0, ingest["gateways"]
    finally:
        rss.stop()
        assert stop(srv.proc) == 0, srv.log.read_text()[-3000:]
    assert rss.max_kb < RSS_BOUND_MB * 1024, f"server RSS peaked at {rss.max_kb // 1024} MB"
    print(f"offered {offered:.0f}/s, sustained {sustained:.0f}/s, RSS max {rss.max_kb // 1024} MB")
