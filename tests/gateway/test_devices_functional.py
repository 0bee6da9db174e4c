"""Real devices to the server, with real processes: a Modbus elevator terminal (pymodbus's
server on a pty), a framed fire-lane sensor (a frame writer on another pty) and a camera-AI
box (JSON on mosquitto) read by ``linli gateway`` from a site config with profiles, and
stored by ``linli server``. What the gateway produced is exactly what the server holds."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import signal
import sys
from pathlib import Path

import aiomqtt
import pytest
import serial
import yaml
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from collectors.framing import FrameCodec
from tests.collectors.profiles import FIRMWARE, LANE, lane_status
from tests.conftest import ROOT, Broker, ServerProc, start_pty_pair
from tests.pipeline import COMMUNITY, get_json, produced_items, speakers, stored_items

pytestmark = pytest.mark.functional


def write_site(tmp: Path, broker: Broker, modbus_port: str, serial_port: str) -> Path:
    site = {
        "version": 1,
        "gateway": "gw-1",
        "community": COMMUNITY,
        "state_dir": str(tmp / "gw-state"),
        "uplink": {"url": broker.url},
        "batch": {"max_age_ms": 200},
        "profile_dirs": [str(FIRMWARE)],
        "collectors": [
            {
                "type": "modbus",
                "name": "rs485-1",
                "port": modbus_port,
                "serial": {"baudrate": 9600, "parity": "N"},  # ptys take no parity
                "devices": [{"id": "el-1-1", "unit": 1, "profile": "hx-em100"}],
            },
            {
                "type": "serial",
                "name": "rs485-2",
                "port": serial_port,
                "profile": "lk-fl200",
                "devices": [{"id": "fl-1", "address": 1}],
            },
            {
                "type": "mqtt",
                "name": "aibox",
                "url": broker.url,
                "devices": [{"id": "fl-2", "profile": "aibox-lane", "address": "B"}],
            },
        ],
        "outputs": speakers(
            [{"id": "fl-1", "kind": "fire_lane"}, {"id": "fl-2", "kind": "fire_lane"}], broker
        ),
    }
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(site, allow_unicode=True))
    return path


async def test_devices_through_gateway_to_server(
    tmp_path: Path, mosquitto: Broker, server: ServerProc
) -> None:
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    modbus_line = start_pty_pair(tmp_path, "modbus")
    lane_line = start_pty_pair(tmp_path, "lane")
    regs = [0] * 16
    regs[1], regs[4] = 5, 1  # floor 5, service mode normal

    async def serve_registers(
        fc: int, start: int, addr: int, count: int, current: list[int], sv: object
    ) -> None:
        current[:] = regs[start : start + len(current)]

    terminal = ModbusSerialServer(
        [
            SimDevice(
                id=1,
                simdata=[SimData(0, count=16, values=0, datatype=DataType.REGISTERS)],
                action=functools.partial(serve_registers),
            )
        ],
        port=modbus_line.device,
        baudrate=9600,
    )
    await terminal.serve_forever(background=True)
    sensor = serial.Serial(lane_line.device, baudrate=9600, timeout=1)
    site = write_site(tmp_path, mosquitto, modbus_line.host, lane_line.host)
    record = tmp_path / "produced.jsonl"
    gateway = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from server.cli import main; import sys; sys.exit(main())",
        "gateway",
        "--config",
        str(site),
        "--record",
        str(record),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    codec = FrameCodec(LANE.frame)
    try:
        await asyncio.sleep(2.0)  # the gateway starts and polls
        regs[0] = 0b1110  # trapped passengers, at a landing, occupied
        sensor.write(b"\x00noise" + codec.encode(lane_status(1, 1, 75, 1)))
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="test-aibox") as box:
            await box.publish(
                "aibox/box-01/firelane",
                json.dumps(
                    {
                        "ts": 1_795_300_000_000,
                        "zone": "B",
                        "occupied": True,
                        "dwell": 30,
                        "cls": "ebike",
                    }
                ),
                qos=1,
            )
        await asyncio.sleep(2.0)
        regs[0] = 0b0110  # released
        sensor.write(codec.encode(lane_status(1, 0, 0, 0)))
        await asyncio.sleep(2.0)
    finally:
        gateway.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(gateway.communicate(), 30)
        sensor.close()
        await terminal.shutdown()
        for line in (modbus_line, lane_line):
            line.proc.terminate()
            line.proc.wait(timeout=10)
    assert gateway.returncode == 0, out.decode()

    produced = produced_items(record)
    rows = [json.loads(k) for k in produced]
    events = sorted((r["dev"], r["event"], r["state"]) for r in rows if "event" in r)
    # The radar said the vehicle had been there 75 s: past the 60 s dwell, so the edge rule
    # reported the blockage at once and played the voice warning on the lane's speaker.
    assert events == [
        ("el-1-1", "trapped", "end"),
        ("el-1-1", "trapped", "start"),
        ("fl-1", "obstruction", "end"),
        ("fl-1", "obstruction", "start"),
        ("fl-1", "voice_warning", "instant"),
    ]
    [warning] = [r for r in rows if r.get("event") == "voice_warning"]
    assert warning["data"]["done"] is True, warning
    lane = [r["fields"] for r in rows if r["dev"] == "fl-1" and "fields" in r]
    assert lane == [
        {"occupied": True, "dwell_s": 75.0, "object": "vehicle"},
        {"occupied": False, "dwell_s": 0.0, "object": "unknown"},
    ]
    assert [r for r in rows if r["dev"] == "fl-2"] == [
        {
            "t": 1_795_300_000_000,
            "dev": "fl-2",
            "fields": {"occupied": True, "dwell_s": 30.0, "object": "ebike"},
        }
    ]
    assert {"dev": "el-1-1"}.items() <= rows[0].items()
    assert rows[0]["fields"]["floor"] == 5

    def stored_total() -> int:
        counts = get_json(f"{server.url}/api/telemetry/counts?community={COMMUNITY}&flush=1")
        return sum(c["readings"] + c["events"] for c in counts.values())

    deadline = asyncio.get_running_loop().time() + 20
    while stored_total() < sum(produced.values()):
        assert asyncio.get_running_loop().time() < deadline, "items did not all arrive"
        await asyncio.sleep(0.2)
    assert stored_items(server, {"el-1-1", "fl-1", "fl-2"}) == produced
    stats = get_json(f"{server.url}/api/ingest")
    assert (stats["duplicates"], stats["gaps"], stats["rejected_total"]) == (0, 0, 0)
