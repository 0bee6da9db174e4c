"""Edge rules on site with the uplink cut: a real gateway process, its uplink pointing at a
port where no broker listens, and the community's own mosquitto carrying a camera box's
fire-lane reports, a fire-alarm link's state, and the outputs (the box's speaker, the gate
controller's release) that the gateway drives."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml

from tests.conftest import ROOT, Broker, free_port, linli, stop

pytestmark = pytest.mark.functional


def write_site(tmp: Path, local: Broker) -> Path:
    speaker = {"url": local.url, "topic": "aibox/box-01/speaker",
               "payload": '{"play": "fire_lane_warning"}'}  # fmt: skip
    # fmt: off
    site = {
        "version": 1,
        "gateway": "gw-1",
        "community": "meihuayuan",
        "state_dir": str(tmp / "gw-state"),
        "uplink": {"url": f"mqtt://127.0.0.1:{free_port()}"},  # nothing listens: cut
        "profile_dirs": [str(ROOT / "firmware_configs")],
        "health_interval_s": 0,
        "edge": {
            "fire_lane": {"dwell_s": 2, "repeat_s": 2},
            "fire_release": {"gates": ["gt-north"]},
        },
        "outputs": [
            {"device": "fl-2", "action": "voice_warning", "mqtt": speaker},
            {"device": "gt-north", "action": "unlock",
             "mqtt": {"url": local.url, "topic": "gates/gt-north/cmd", "payload": "unlock"}},
            {"device": "gt-north", "action": "lock",
             "mqtt": {"url": local.url, "topic": "gates/gt-north/cmd", "payload": "lock"}},
        ],
        "collectors": [
            {"type": "mqtt", "name": "local", "url": local.url,
             "devices": [{"id": "fl-2", "profile": "aibox-lane", "address": "B"},
                         {"id": "fp-1", "profile": "xf-ui30", "address": "p1"}]},
            {"type": "simulator", "devices": [{"id": "gt-north", "kind": "gate"}]},
        ],
    }
    # fmt: on
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    return path


async def test_voice_warning_and_fire_release_happen_with_the_uplink_cut(
    tmp_path: Path, mosquitto: Broker
) -> None:
    site = write_site(tmp_path, mosquitto)
    record = tmp_path / "produced.jsonl"
    log = tmp_path / "gateway.log"
    with log.open("w") as out:
        gw = subprocess.Popen(
            linli("gateway", "--config", str(site), "--record", str(record)),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    seen: list[tuple[float, str, str]] = []
    try:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="test-site") as site_bus:
            await site_bus.subscribe("aibox/box-01/speaker", qos=1)
            await site_bus.subscribe("gates/#", qos=1)

            async def collect() -> None:
                async for message in site_bus.messages:
                    body = message.payload
                    text = body.decode() if isinstance(body, bytes) else str(body)
                    seen.append((time.monotonic(), str(message.topic), text))

            collector = asyncio.create_task(collect())
            await asyncio.sleep(3)  # the gateway starts and subscribes on the local broker
            occupied_at = time.monotonic()
            lane = {"ts": int(time.time() * 1000), "zone": "B", "occupied": True, "dwell": 0,
                    "cls": "car", "snapshot": "snap/box-01/a.jpg"}  # fmt: skip
            await site_bus.publish("aibox/box-01/firelane", json.dumps(lane), qos=1)
            await asyncio.sleep(5)
            alarm_at = time.monotonic()
            panel = {"ts": int(time.time() * 1000), "panel": "p1", "alarm": 1, "loop": 3,
                     "point": 17}  # fmt: skip
            await site_bus.publish("fire/ui30-01/state", json.dumps(panel), qos=1)
            await asyncio.sleep(2)
            cleared_at = time.monotonic()
            panel.update(ts=int(time.time() * 1000), alarm=0)
            await site_bus.publish("fire/ui30-01/state", json.dumps(panel), qos=1)
            await asyncio.sleep(2)
            collector.cancel()
    finally:
        assert stop(gw) == 0, log.read_text()[-3000:]

    speaker = [t - occupied_at for t, topic, _ in seen if topic == "aibox/box-01/speaker"]
    # Warned after the 2 s dwell, then every 2 s while the car stayed.
    assert len(speaker) >= 2, seen
    assert 1.5 <= speaker[0] <= 4.0
    assert 1.5 <= speaker[1] - speaker[0] <= 3.5
    gates = [(t, payload) for t, topic, payload in seen if topic == "gates/gt-north/cmd"]
    assert [p for _, p in gates] == ["unlock", "lock"]
    assert gates[0][0] - alarm_at < 2.0  # released within two seconds of the alarm
    assert gates[1][0] > cleared_at

    lines = record.read_text().splitlines()
    rows: list[dict[str, Any]] = [json.loads(line)["item"] for line in lines]
    events = [(r["dev"], r["event"], r["state"], r.get("data", {})) for r in rows if "event" in r]
    names = [(dev, ev, st) for dev, ev, st, _ in events]
    assert ("fl-2", "obstruction", "start") in names
    assert ("fp-1", "fire_alarm", "start") in names
    assert ("fp-1", "fire_alarm", "end") in names
    release = [(st, data) for dev, ev, st, data in events if ev == "fire_release"]
    assert [st for st, _ in release] == ["start", "end"]
    assert all(data["done"] and data["by"] == "edge" for _, data in release)
    warnings = [data for _, ev, _, data in events if ev == "voice_warning"]
    assert len(warnings) == len(speaker)
    assert all(w["done"] for w in warnings)
    # Nothing went anywhere: it is all waiting in the queue for the uplink.
    assert "uplink down" in log.read_text()
