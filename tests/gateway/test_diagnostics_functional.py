"""Device diagnostics where an operator sees them (issue 14, item 3): a framed serial line fed
with noise, a bad checksum and a torn frame by a test, read by ``linli gateway``; its error
counters travel in the gateway's health item to ``linli server`` and are served by the
device's diagnostics API, and the gateway logs them once per health interval."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import serial
import yaml

from collectors.framing import FrameCodec, FrameParser
from tests.collectors.profiles import FIRMWARE, LANE, lane_status
from tests.conftest import ROOT, Broker, ServerProc, api_json, start_pty_pair
from tests.pipeline import COMMUNITY, speakers

pytestmark = pytest.mark.functional


def line_bytes() -> tuple[bytes, dict[str, int]]:
    """What the sensor end writes, and the counters the profile's own parser makes of it."""
    codec = FrameCodec(LANE.frame)
    bad = bytearray(codec.encode(lane_status(1, 1, 80, 1)))
    bad[-1] ^= 0xFF  # a flipped checksum byte
    torn = codec.encode(lane_status(1, 1, 9, 1))[:6]  # half a frame, then the line is quiet
    good = codec.encode(lane_status(1, 1, 75, 1)), codec.encode(lane_status(1, 0, 0, 0))
    data = b"\x00\x13noise" + good[0] + bytes(bad) + good[1] + torn
    parser = FrameParser(LANE.frame)
    parser.feed(data)
    while parser.next_frame() is not None:
        pass
    parser.idle()  # the pause after the last write: the half frame is torn there
    counts = parser.counts
    want = {"checksum_errors": counts["checksum"], "stray_bytes": counts["garbage_bytes"],
            "torn_frames": counts["torn"]}  # fmt: skip
    return data, want


async def test_line_errors_reach_the_server_and_the_log(
    tmp_path: Path, mosquitto: Broker, server: ServerProc
) -> None:
    data, want = line_bytes()
    assert want["checksum_errors"] == 1
    assert want["torn_frames"] == 1
    assert want["stray_bytes"] >= 7
    lane_line = start_pty_pair(tmp_path, "lane")
    site = {
        "version": 1, "gateway": "gw-1", "community": COMMUNITY,
        "state_dir": str(tmp_path / "gw-state"), "uplink": {"url": mosquitto.url},
        "batch": {"max_age_ms": 200}, "health_interval_s": 1,
        "profile_dirs": [str(FIRMWARE)],
        "collectors": [{"type": "serial", "name": "rs485-2", "port": lane_line.host,
                        "profile": "lk-fl200", "devices": [{"id": "fl-1", "address": 1}]}],
        "outputs": speakers([{"id": "fl-1", "kind": "fire_lane"}], mosquitto),
    }  # fmt: skip
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    log = tmp_path / "gateway.log"
    with log.open("w") as out:
        gateway = subprocess.Popen(
            [sys.executable, "-c", "from server.cli import main; import sys; sys.exit(main())",
             "gateway", "--config", str(path)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    sensor = serial.Serial(lane_line.device, baudrate=9600, timeout=1)
    url = f"{server.url}/api/devices/{COMMUNITY}/fl-1/diagnostics"
    try:
        # Written once the gateway reports (its port is open by then: bytes sent to a pty
        # nobody holds open are lost).
        deadline = time.monotonic() + 20
        while api_json(url)["reported_t"] is None:
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        sensor.write(data)
        sensor.flush()
        deadline = time.monotonic() + 20
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline:
            seen = api_json(url)
            line = seen.get("lines", {}).get("rs485-2", {})
            if line.get("torn_frames") and line.get("checksum_errors"):
                break
            time.sleep(0.3)
    finally:
        sensor.close()
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=30)
        lane_line.proc.terminate()
        lane_line.proc.wait(timeout=10)
    line = seen["lines"]["rs485-2"]
    assert {k: line.get(k, 0) for k in want} == want, seen
    assert seen["gateway"] == "gw-1"
    assert seen["reported_t"] is not None
    assert seen["poll_ok"] is not None
    text = log.read_text()
    assert "rs485-2: 1 checksum errors" in text or "rs485-2: " in text, text[-2000:]
    assert "checksum errors" in text
    assert "torn frames" in text
