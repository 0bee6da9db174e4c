"""The InfluxDB writer against a real influxd (Debian's ``influxdb``, a 1.x, on a free
loopback port with its own data directory), and the 2.x/3.x path against a recording server.

Counted, not sampled: every test compares the exact set of points that went in with what
InfluxDB holds, field by field.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from aiohttp import web
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

from collectors.wire import Envelope, Event, Item, Reading, encode_envelope
from server.telemetry.influx import BATCH_LINES, InfluxTarget, InfluxWriter, open_influx_writer
from tests.conftest import (
    DEMO_REGISTRY,
    Broker,
    Influxd,
    free_port,
    run_linli,
    start_server,
    stop,
    write_influx_settings,
)

pytestmark = pytest.mark.functional

T0 = 1_795_300_000_000
COMMUNITY = "meihuayuan"


def influxql(server: Influxd, db: str, query: str) -> list[dict[str, Any]]:
    """Rows of an InfluxQL query, times in epoch ms, null columns left out."""
    params = urllib.parse.urlencode({"db": db, "q": query, "epoch": "ms"})
    try:
        with urllib.request.urlopen(f"{server.url}/query?{params}", timeout=30) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{query}: {exc.read()!r}") from exc
    rows = []
    for series in body["results"][0].get("series", []):
        for values in series["values"]:
            row = dict(zip(series["columns"], values, strict=True))
            rows.append({k: v for k, v in row.items() if v is not None})
    return rows


def elevator_readings(n: int, dev: str = "el-1-1", start: int = T0) -> list[Item]:
    return [
        Reading(
            start + i * 1000,
            dev,
            "elevator",
            {"floor": i % 18, "running": i % 2 == 0, "run_hours": i / 10, "door": "closed"},
        )
        for i in range(n)
    ]


def expected_rows(items: list[Item]) -> Counter[str]:
    out: Counter[str] = Counter()
    for item in items:
        if isinstance(item, Reading):
            row: dict[str, Any] = {"time": item.t, "device": item.dev, **item.fields}
            if "run_hours" in row:
                row["run_hours"] = float(row["run_hours"])
        else:
            assert isinstance(item, Event)
            row = {
                "time": item.t,
                "device": item.dev,
                "event": item.event,
                "state": item.state,
                "data": json.dumps(item.data, separators=(",", ":")),
            }
        out[json.dumps(row, sort_keys=True)] += 1
    return out


def stored_rows(
    server: Influxd, db: str, measurement: str, columns: str, where: str = ""
) -> Counter[str]:
    out: Counter[str] = Counter()
    for row in influxql(server, db, f"SELECT {columns} FROM {measurement} {where}"):
        if "run_hours" in row:  # JSON writes the float 2.0 as 2
            row["run_hours"] = float(row["run_hours"])
        out[json.dumps(row, sort_keys=True)] += 1
    return out


ELEVATOR_COLUMNS = "device, floor, running, run_hours, door"
EVENT_COLUMNS = "device, event, state, data"


@pytest.fixture
async def writer(influxd: Influxd, tmp_path: Path) -> AsyncIterator[InfluxWriter]:
    target = InfluxTarget(url=influxd.url, database="t1")
    async with open_influx_writer(
        target, tmp_path / "spool.db", spool_max_bytes=64 * 1024 * 1024, backoff=False
    ) as w:
        yield w


async def test_known_set_in_same_set_out(influxd: Influxd, writer: InfluxWriter) -> None:
    readings = elevator_readings(12_000)  # more than two batches
    events: list[Item] = [
        Event(T0 + 5, "el-1-1", "elevator", "trapped", "start", {}),
        Event(T0 + 5, "el-1-1", "elevator", "door_close_fault", "end", {"code": 2}),
        Event(T0 + 5, "el-1-1", "elevator", "door_close_fault", "start", {"code": 3}),
    ]
    for i in range(0, len(readings), 500):
        await writer.write(COMMUNITY, "gw-1", readings[i : i + 500])
    await writer.write(COMMUNITY, "gw-1", events)
    await asyncio.wait_for(writer.flush(), 60)
    assert writer.version == "1"
    assert stored_rows(influxd, "t1", "elevator", ELEVATOR_COLUMNS) == expected_rows(readings)
    # The end and the start at the same millisecond are two points (state is a tag).
    assert stored_rows(influxd, "t1", "events", EVENT_COLUMNS) == expected_rows(events)
    stats = await writer.stats()
    assert stats["lines_written"] == 12_003
    assert stats["spool_lines"] == 0


async def test_outage_of_60_s_under_load_loses_nothing(
    influxd: Influxd, writer: InfluxWriter
) -> None:
    written: list[Item] = []

    async def load(seconds: float, start: int) -> None:
        # 200 readings a second from 4 devices while the test runs.
        n = 0
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            batch = [
                Reading(start + n * 10 + k, f"el-{k}-1", "elevator", {"floor": n % 30, "trips": n})
                for k in range(1, 5)
            ]
            written.extend(batch)
            await writer.write(COMMUNITY, "gw-1", batch)
            await writer.commit({})  # as ingest does after each batch of messages
            n += 1
            await asyncio.sleep(0.02)

    await load(3, T0)
    await asyncio.wait_for(writer.flush(), 30)
    influxd.stop()
    await load(60, T0 + 10_000_000)  # influxd is down for these 60 s
    stats = await writer.stats()
    assert stats["spool_lines"] > 10_000  # waiting on disk
    assert stats["retries"] > 0
    assert writer.last_error is not None
    influxd.start()
    await load(2, T0 + 20_000_000)
    await asyncio.wait_for(writer.flush(), 120)
    rows = influxql(influxd, "t1", "SELECT device, floor, trips FROM elevator")
    got = Counter((r["time"], r["device"], r["floor"], r["trips"]) for r in rows)
    want = Counter((i.t, i.dev, i.fields["floor"], i.fields["trips"]) for i in written)  # type: ignore[union-attr]
    assert got == want  # every reading, exactly once
    assert (await writer.stats())["spool_lines"] == 0


async def test_a_bad_point_is_reported_and_the_rest_of_its_batch_lands(
    influxd: Influxd, writer: InfluxWriter, caplog: pytest.LogCaptureFixture
) -> None:
    # Someone else wrote 'trips' as a string into this database (field types are per
    # measurement and shard): our integer trips conflicts with it; our other fields do not.
    influxd.query("CREATE DATABASE t1")
    influxd.write("t1", f'elevator,device=el-9-9 trips="x" {T0 - 1}')
    good = elevator_readings(10)
    bad = Reading(T0 + 500, "el-9-9", "elevator", {"trips": 5})
    await writer.write(COMMUNITY, "gw-1", [*good[:5], bad, *good[5:]])
    await asyncio.wait_for(writer.flush(), 30)
    stored = stored_rows(influxd, "t1", "elevator", ELEVATOR_COLUMNS, "WHERE device = 'el-1-1'")
    assert stored == expected_rows(good)
    assert writer.counts["lines_rejected_batches"] == 1
    assert "field type conflict" in (writer.last_error or "")
    assert any(
        "only in part" in r.message and "field type conflict" in r.message for r in caplog.records
    )


# --- 2.x / 3.x ------------------------------------------------------------------------


class RecordingInflux2:
    """NOT a real InfluxDB: an aiohttp server that speaks the documented v2 HTTP API
    (GET /ping with X-Influxdb-Version, POST /api/v2/write?org=&bucket=&precision= with
    'Authorization: Token …' and a gzip body) and records every request. ``fail`` sets the
    status it answers with instead of 204."""

    def __init__(self) -> None:
        self.writes: list[dict[str, Any]] = []
        self.fail: int | None = None

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={"X-Influxdb-Version": "v2.7.11"})

    async def write(self, request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp undoes Content-Encoding: gzip itself
        self.writes.append(
            {
                "query": dict(request.query),
                "auth": request.headers.get("Authorization"),
                "encoding": request.headers.get("Content-Encoding"),
                "lines": body.decode().splitlines(),
            }
        )
        if self.fail:
            return web.json_response(
                {"code": "unauthorized", "message": "unauthorized access"}, status=self.fail
            )
        return web.Response(status=204)


async def test_v2_write_api_with_token(tmp_path: Path) -> None:
    recorder = RecordingInflux2()
    app = web.Application()
    app.router.add_get("/ping", recorder.ping)
    app.router.add_post("/api/v2/write", recorder.write)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    target = InfluxTarget(
        url=f"http://127.0.0.1:{port}", token="s3cret", org="shanting", bucket="linli"
    )
    try:
        async with open_influx_writer(
            target, tmp_path / "spool.db", spool_max_bytes=2**26, backoff=False
        ) as w:
            items = elevator_readings(3)
            await w.write(COMMUNITY, "gw-1", items)
            await asyncio.wait_for(w.flush(), 30)
            assert w.version == "2"
            [req] = recorder.writes
            assert req["auth"] == "Token s3cret"
            assert req["encoding"] == "gzip"
            assert req["query"] == {"org": "shanting", "bucket": "linli", "precision": "ms"}
            assert req["lines"] == [
                f"elevator,community={COMMUNITY},gateway=gw-1,device=el-1-1 "
                f'door="closed",floor={i}i,run_hours={i / 10!r},'
                f"running={str(i % 2 == 0).lower()} {T0 + i * 1000}"
                for i in range(3)
            ]
            # A wrong token: the error names the cause, the data stays in the spool.
            recorder.fail = 401
            await w.write(COMMUNITY, "gw-1", elevator_readings(2, start=T0 + 10_000))
            await w.commit({})
            for _ in range(100):
                await asyncio.sleep(0.05)
                if w.last_error:
                    break
            assert "401" in (w.last_error or "")
            assert "unauthorized" in (w.last_error or "")
            assert (await w.stats())["spool_lines"] == 2
            recorder.fail = None
            await asyncio.wait_for(w.flush(), 30)
            assert (await w.stats())["spool_lines"] == 0
    finally:
        await runner.cleanup()


INFLUX2_URL = os.environ.get("LINLI_TEST_INFLUX2_URL")


@pytest.mark.skipif(
    not (INFLUX2_URL and os.environ.get("LINLI_TEST_INFLUX2_TOKEN")),
    reason="opt-in: set LINLI_TEST_INFLUX2_URL, LINLI_TEST_INFLUX2_TOKEN, _ORG and _BUCKET "
    "to run against a real InfluxDB 2.x/3.x (none can run on this machine)",
)
async def test_real_influxdb2(tmp_path: Path) -> None:
    env = os.environ
    target = InfluxTarget(
        url=env["LINLI_TEST_INFLUX2_URL"],
        token=env["LINLI_TEST_INFLUX2_TOKEN"],
        org=env.get("LINLI_TEST_INFLUX2_ORG"),
        bucket=env.get("LINLI_TEST_INFLUX2_BUCKET"),
    )
    marker = f"el-test-{os.getpid()}"
    items = elevator_readings(50, dev=marker, start=T0)
    async with open_influx_writer(target, tmp_path / "spool.db", spool_max_bytes=2**26) as w:
        await w.write(COMMUNITY, "gw-1", items)
        await asyncio.wait_for(w.flush(), 60)
    async with InfluxDBClientAsync(
        url=target.url, token=target.token or "", org=target.org or ""
    ) as client:
        query = (
            f'from(bucket: "{target.bucket}") |> range(start: 0) '
            f'|> filter(fn: (r) => r.device == "{marker}" and r._field == "floor")'
        )
        tables = await client.query_api().query(query)
        floors = sorted(
            (rec.get_time().timestamp() * 1000, rec.get_value())
            for t in tables
            for rec in t.records
        )
    assert [int(f[1]) for f in floors] == [i % 18 for i in range(50)]


async def test_server_writes_what_it_ingests_to_influxdb(
    tmp_path: Path, mosquitto: Broker, influxd: Influxd
) -> None:
    """Through the server: envelopes on the broker, points in influxd, exactly."""
    http_port = free_port()
    settings = write_influx_settings(tmp_path, mosquitto, http_port, influxd.url)
    done = run_linli("registry", "import", str(DEMO_REGISTRY), "--config", str(settings))
    assert done.returncode == 0, done.stderr
    srv = start_server(tmp_path, settings, http_port)
    try:
        sent: list[Item] = []
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="test-gw") as client:
            for seq in range(20):
                items: list[Item] = [
                    Reading(T0 + seq * 100 + k, dev, "elevator", {"floor": seq, "running": True})
                    for k, dev in enumerate(("el-1-1", "el-2-1", "el-3-1"))
                ]
                if seq == 7:
                    items.append(Event(T0 + 777, "el-2-1", "elevator", "trapped", "start", {}))
                sent.extend(items)
                payload = encode_envelope(Envelope("gw-1", COMMUNITY, seq, T0, items))
                await client.publish(f"linli/v1/{COMMUNITY}/gw-1/up", payload, qos=1)
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                async with http.get(f"{srv.url}/healthz") as resp:
                    health = await resp.json()
                if health.get("influx", {}).get("lines_written") == len(sent):
                    break
                await asyncio.sleep(0.1)
        assert health["influx"]["lines_written"] == len(sent), health
        readings = [i for i in sent if isinstance(i, Reading)]
        assert stored_rows(influxd, "linli", "elevator", "device, floor, running") == expected_rows(
            readings
        )
        rows = influxql(influxd, "linli", "SELECT * FROM events")
        assert [
            (
                r["time"],
                r["device"],
                r["event"],
                r["state"],
                r["kind"],
                r["community"],
                r["gateway"],
            )
            for r in rows
        ] == [(T0 + 777, "el-2-1", "trapped", "start", "elevator", COMMUNITY, "gw-1")]
    finally:
        assert stop(srv.proc) == 0, srv.log.read_text()[-3000:]


async def test_flush_waits_for_the_batch_the_batcher_has_in_hand(
    influxd: Influxd, writer: InfluxWriter
) -> None:
    # A full batch wakes the batcher, which takes the lines and awaits its spool insert;
    # a flush() at that moment once saw an empty buffer and returned before they were sent.
    for k in range(3):
        items = elevator_readings(BATCH_LINES, start=T0 + k * 10_000_000)
        await writer.write(COMMUNITY, "gw-1", items)
        for _ in range(10):  # until the batcher holds the lines and awaits the spool
            await asyncio.sleep(0)
        assert writer.counts["lines_written"] == k * BATCH_LINES
        await asyncio.wait_for(writer.flush(), 30)
        assert writer.counts["lines_written"] == (k + 1) * BATCH_LINES
