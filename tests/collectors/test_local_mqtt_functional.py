"""The local-MQTT collector against a real mosquitto: camera-AI boxes publish JSON, the
collector emits exactly the items their profiles say, and survives a broker restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from collectors.local_mqtt import LocalMqttCollector, MqttDevice
from collectors.wire import Event, Item, Reading
from tests.collectors.profiles import CAMERA_EBIKE, CAMERA_LANE
from tests.conftest import Broker, _start_mosquitto

pytestmark = pytest.mark.functional

T = 1_795_300_000_000


async def wait_for(cond: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def publish(broker: Broker, topic: str, body: object) -> None:
    payload = body if isinstance(body, bytes) else msgspec.json.encode(body)
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="test-aibox") as client:
        await client.publish(topic, payload, qos=1)


async def test_camera_boxes_through_the_local_broker(mosquitto: Broker, tmp_path: Path) -> None:
    collector = LocalMqttCollector(
        "aibox",
        mosquitto.url,
        [MqttDevice("fl-2", CAMERA_LANE, "B"), MqttDevice("el-2-1", CAMERA_EBIKE, "cam-3")],
        client_id="linli-test-local",
        clock=lambda: T,
        backoff=False,
    )
    items: list[Item] = []

    async def emit(item: Item) -> None:
        items.append(item)

    task = asyncio.create_task(collector.run(emit))
    try:
        await wait_for(lambda: collector.counts["connects"] == 1)
        lane = {
            "ts": T - 500,
            "zone": "B",
            "occupied": True,
            "dwell": 312,
            "cls": "car",
            "plate": "浙A12345",
            "snapshot": "snap/b.jpg",
        }
        await publish(mosquitto, "aibox/box-01/firelane", lane)
        await publish(mosquitto, "aibox/box-01/firelane", {**lane, "zone": "C"})  # not ours
        await publish(mosquitto, "aibox/box-01/firelane", b"{not json")
        await publish(
            mosquitto,
            "aibox/box-02/elevator/cam-3/ebike",
            {"ts": 1_795_300_010, "state": "enter", "confidence": 0.9, "snapshot": "e.jpg"},
        )
        await wait_for(lambda: len(items) == 2)
        assert items == [
            Reading(
                T - 500,
                "fl-2",
                "fire_lane",
                {"occupied": True, "dwell_s": 312.0, "object": "vehicle", "evidence": "snap/b.jpg"},
            ),
            Event(
                1_795_300_010_000,
                "el-2-1",
                "elevator",
                "ebike_detected",
                "start",
                {"snapshot": "e.jpg", "confidence": 0.9},
            ),
        ]
        assert collector.session.counts["refused"] == 1

        # The broker restarts; the collector reconnects, subscribes again and goes on.
        mosquitto.proc.terminate()
        mosquitto.proc.wait(timeout=10)
        await wait_for(lambda: collector.counts["disconnects"] >= 1)
        mosquitto.proc = _start_mosquitto(tmp_path, mosquitto.port)
        await wait_for(lambda: collector.counts["connects"] == 2)
        await publish(
            mosquitto,
            "aibox/box-02/elevator/cam-3/ebike",
            {"ts": 1_795_300_040, "state": "leave", "confidence": 0.9, "snapshot": "f.jpg"},
        )
        await wait_for(lambda: len(items) == 3)
        # The end carries the clearing message's own picture, not the start's (issue 14).
        assert items[2] == Event(
            1_795_300_040_000,
            "el-2-1",
            "elevator",
            "ebike_detected",
            "end",
            {"snapshot": "f.jpg", "confidence": 0.9},
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
