"""Helpers for tests that run gateways and servers as processes and count what arrives."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT, Broker, ServerProc, api_json, linli, server_public_key

COMMUNITY = "meihuayuan"


def get_json(url: str) -> Any:
    """GET an API url as the operator."""
    return api_json(url)


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def speakers(devices: list[dict[str, Any]], broker: Broker) -> list[dict[str, Any]]:
    """A voice_warning output per fire lane, as a real site has (the site check wants one):
    a speaker that listens on the test broker."""
    return [
        {"device": d["id"], "action": "voice_warning",
         "mqtt": {"url": broker.url, "topic": f"test/speaker/{d['id']}", "payload": "play"}}
        for d in devices if d["kind"] == "fire_lane"
    ]  # fmt: skip


def site_for(tmp: Path, broker: Broker, seed: int = 3, **extra: Any) -> Path:
    """A site config for gateway gw-1 of the demo community, its devices simulated;
    ``extra`` keys are added to (or replace) the top level."""
    reg = yaml.safe_load((ROOT / "server/demo_data/shancheng.yaml").read_text())
    com = next(c for c in reg["communities"] if c["id"] == COMMUNITY)
    site = {
        "version": 1,
        "gateway": "gw-1",
        "community": COMMUNITY,
        "state_dir": str(tmp / "gw-state"),
        "uplink": {"url": broker.url, "server_keys": [server_public_key()]},
        "batch": {"max_age_ms": 300},
        "collectors": [
            {
                "type": "simulator",
                "seed": seed,
                "devices": [
                    {
                        "id": d["id"],
                        "kind": d["kind"],
                        **({"floors": d["floors"]} if "floors" in d else {}),
                    }
                    for d in com["devices"]
                ],
            }
        ],
        "outputs": speakers(com["devices"], broker),
    }
    site.update(extra)
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    return path


def run_gateway(site: Path, record: Path, seconds: float) -> None:
    proc = subprocess.Popen(
        linli("gateway", "--config", str(site), "--record", str(record)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(seconds)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


def next_seq(state_dir: Path) -> int:
    """The next envelope number the gateway's queue will use."""
    db = sqlite3.connect(state_dir / "queue.sqlite3")
    try:
        return int(db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0])
    finally:
        db.close()


def stored_items(server: ServerProc, devices: set[str]) -> Counter[str]:
    out: Counter[str] = Counter()
    for dev in devices:
        body = get_json(f"{server.url}/api/devices/{COMMUNITY}/{dev}/history?since=0&limit=10000")
        for stored in body["items"]:
            row = {"dev": dev, **stored}
            out[json.dumps(row, sort_keys=True)] += 1
    return out


def produced_items(record: Path) -> Counter[str]:
    out: Counter[str] = Counter()
    for line in record.read_text().splitlines():
        item = json.loads(line)["item"]
        row: dict[str, Any] = {"t": item["t"], "dev": item["dev"]}
        if "fields" in item:
            row["fields"] = item["fields"]
        else:
            row.update(event=item["event"], state=item["state"], data=item.get("data", {}))
        out[json.dumps(row, sort_keys=True)] += 1
    return out


def assert_all_stored(server: ServerProc, record: Path, timeout: float = 20.0) -> int:
    """Wait until the server's embedded store holds as many items as the gateway recorded,
    then check they are the same, field by field (none missing, none twice); the count."""
    produced = produced_items(record)
    devices = {json.loads(k)["dev"] for k in produced}

    def stored_total() -> int:
        counts = get_json(f"{server.url}/api/telemetry/counts?community={COMMUNITY}&flush=1")
        return sum(c["readings"] + c["events"] for c in counts.values())

    wait_for(lambda: stored_total() >= sum(produced.values()), timeout, "all items stored")
    assert stored_items(server, devices) == produced
    return sum(produced.values())
