"""The telemetry query API through a real server process: data in over MQTT (real
mosquitto), figures out over HTTP, from InfluxDB (a real influxd) and from the embedded
store; bad parameters and an InfluxDB outage get clear errors."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from collectors.wire import Envelope, GatewayStatus, encode_envelope, encode_status
from tests.conftest import (
    DEMO_REGISTRY,
    Broker,
    Influxd,
    ServerProc,
    api_json,
    free_port,
    run_linli,
    start_server,
    stop,
    write_settings,
)
from tests.server.telemetry.test_influx_functional import influxql
from tests.server.telemetry.test_telemetry_queries import CHART, D0, D1, DATA, END, STATUS, H

pytestmark = pytest.mark.functional

C = "meihuayuan"


def get(url: str) -> dict[str, Any]:
    return api_json(url, timeout=30)  # type: ignore[no-any-return]


def get_error(url: str) -> tuple[int, str]:
    with pytest.raises(urllib.error.HTTPError) as info:
        get(url)
    return info.value.code, json.loads(info.value.read())["error"]


async def publish_dataset(broker: Broker) -> int:
    """DATA, CHART and the gateway's status changes through the broker, as a gateway would."""
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="test-gw") as client:
        items = [*DATA, *CHART]
        for seq, i in enumerate(range(0, len(items), 200)):
            env = Envelope("gw-1", C, seq, D0, items[i : i + 200])
            await client.publish(f"linli/v1/{C}/gw-1/up", encode_envelope(env), qos=1)
        for t, status in STATUS:
            payload = encode_status(GatewayStatus(status, "gw-1", C, t))  # type: ignore[arg-type]
            await client.publish(f"linli/v1/{C}/gw-1/status", payload, qos=1)
    return len(items) + len(STATUS)


def wait_ingested(server: ServerProc, n_envelopes: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = get(f"{server.url}/api/ingest")
        if stats["envelopes"] >= n_envelopes and stats["status_messages"] >= len(STATUS):
            return
        time.sleep(0.1)
    raise AssertionError(f"not ingested: {stats}")


def figures(server: ServerProc) -> dict[str, Any]:
    q = f"since={D0}&until={END}"
    base = f"{server.url}/api/communities/{C}"
    return {
        "availability": get(f"{base}/elevators/availability?{q}")["elevators"],
        "trips": get(f"{base}/elevators/trips?{q}")["elevators"],
        "occupancy": get(f"{base}/fire-lanes/occupancy?{q}")["fire_lanes"],
        "uptime": get(f"{base}/gateways/uptime?{q}")["gateways"],
        "chart": get(f"{server.url}/api/devices/{C}/el-3-1/series?since={D0}&until={D1}"),
    }


def check_figures(got: dict[str, Any]) -> None:
    """The same values test_telemetry_queries works out by hand."""
    assert got["availability"]["el-1-1"]["ratio"] == round(42.5 / 46, 6)
    # el-3-1 reports no service mode at all: its availability is unknown, not 100 %.
    assert got["availability"]["el-3-1"]["days"]["2026-11-02"]["ratio"] is None
    assert got["trips"]["el-1-1"] == {"2026-11-02": 50, "2026-11-03": 50}
    assert got["occupancy"]["fl-1"]["occupied_min"] == 95
    assert set(got["occupancy"]) == {"fl-1", "fl-2"}  # every registered lane, data or not
    assert got["occupancy"]["fl-2"]["ratio"] is None
    assert got["uptime"]["gw-1"]["days"]["2026-11-02"]["ratio"] == round(23 / 24, 6)
    chart = got["chart"]
    assert chart["interval_ms"] == 300_000
    assert len(chart["points"]) == 288
    assert chart["points"][0]["max"] == {"floor": 6}


async def test_figures_from_influxdb_and_from_the_embedded_store_agree(
    tmp_path: Path, mosquitto: Broker, influxd: Influxd
) -> None:
    results = []
    for store in ("sqlite", "influxdb"):
        root = tmp_path / f"server-{store}"
        root.mkdir()
        settings = write_settings(root, mosquitto, free_port())
        # Each server its own shared group: the stopped one's persistent session would
        # otherwise keep taking its share of the group's messages.
        settings.write_text(settings.read_text() + f'mqtt_shared_group = "g-{store}"\n')
        if store == "influxdb":
            settings.write_text(
                settings.read_text()
                + f'influx_url = "{influxd.url}"\n'
                + f'influx_spool_path = "{root / "spool.db"}"\n'
            )
        done = run_linli("registry", "import", str(DEMO_REGISTRY), "--config", str(settings))
        assert done.returncode == 0, done.stderr
        port = int(settings.read_text().split("http_port = ")[1].split()[0])
        srv = start_server(root, settings, port)
        try:
            for _ in range(100):
                if get(f"{srv.url}/healthz")["mqtt_connected"]:
                    break
                await asyncio.sleep(0.1)
            n = await publish_dataset(mosquitto)
            wait_ingested(srv, -(-(len(DATA) + len(CHART)) // 200))
            if store == "sqlite":  # what ingest counted is committed before it is queried
                get(f"{srv.url}/api/telemetry/counts?community={C}&flush=1")
            if store == "influxdb":
                for _ in range(300):
                    health = get(f"{srv.url}/healthz")["influx"]
                    if health["lines_written"] == n:
                        break
                    await asyncio.sleep(0.1)
                assert health["lines_written"] == n, health
                # The building from the registry is a tag; the gateway has none.
                rows = influxql(influxd, "linli", "SELECT trips, building FROM elevator")
                assert {r["building"] for r in rows if "trips" in r} == {"1号楼", "2号楼"}
                code, message = get_error(f"{srv.url}/api/telemetry/counts")
                assert code == 404
                assert "InfluxDB" in message
            got = figures(srv)
            check_figures(got)
            results.append(got)
            if store == "influxdb":
                influxd.stop()  # an outage: a clear 502 naming InfluxDB, no hang
                code, message = get_error(
                    f"{srv.url}/api/communities/{C}/elevators/availability?since={D0}&until={END}"
                )
                assert code == 502
                assert "InfluxDB" in message
                influxd.start()
        finally:
            assert stop(srv.proc) == 0, srv.log.read_text()[-3000:]
    assert results[0] == results[1]


def test_query_api_bad_input(server: ServerProc) -> None:
    base = f"{server.url}/api/communities"
    cases = {
        f"{base}/nope/elevators/availability": (404, "no community 'nope'"),
        f"{base}/{C}/elevators/trips?since=abc": (400, "since='abc' is not an integer"),
        f"{base}/{C}/fire-lanes/occupancy?since=10&until=5": (400, "must be before"),
        f"{base}/{C}/gateways/uptime?since=0&until={500 * 24 * H}": (400, "at most 400 days"),
        f"{server.url}/api/devices/{C}/nope/series": (404, "no device 'nope'"),
        f"{server.url}/api/devices/{C}/el-1-1/series?points=5": (400, "points=5 is outside"),
        f"{server.url}/api/devices/{C}/el-1-1/series?until=-1": (400, "until=-1 is outside"),
    }
    for url, (status, message) in cases.items():
        code, error = get_error(url)
        assert (code, message in error) == (status, True), (url, error)
