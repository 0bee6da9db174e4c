"""``linli influx setup``: retention policies and continuous queries on a real influxd (1.x),
roll-ups recomputed by ``--backfill-days`` and checked by hand, the 2.x bucket and DBRP
calls against a recording server, and bad settings refused with a clear message."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from collectors.wire import Event, Item, Reading
from server.telemetry.influx import InfluxTarget, open_influx_writer
from tests.conftest import ROOT, Influxd, free_port, run_linli
from tests.server.telemetry.test_influx_functional import influxql

pytestmark = pytest.mark.functional

HOUR = 3_600_000


async def write_through_writer(
    influxd: Influxd, tmp: Path, items: list[Item], offline_at: int | None = None
) -> None:
    """Items (and gw-1 going offline) into database linli, as the server writes them."""
    async with open_influx_writer(
        InfluxTarget(url=influxd.url, database="linli"),
        tmp / "spool.db",
        spool_max_bytes=1 << 24,
        backoff=False,
    ) as writer:
        await writer.write("meihuayuan", "gw-1", items)
        if offline_at is not None:
            await writer.write_status("meihuayuan", "gw-1", "offline", offline_at)
        await writer.flush()


def run_setup(url: str, *args: str, **env: str) -> tuple[int, str, str]:
    done = run_linli("influx", "setup", *args, env={"LINLI_INFLUX_URL": url, **env})
    return done.returncode, done.stdout, done.stderr


async def test_v1_retention_continuous_queries_and_backfill(
    influxd: Influxd, tmp_path: Path
) -> None:
    code, out, err = run_setup(influxd.url, "--backfill-days", "1")
    assert code == 0, err
    assert "retention policy raw: 90 days (default)" in out
    rps = {r["name"]: r for r in influxql(influxd, "linli", "SHOW RETENTION POLICIES")}
    assert (rps["raw"]["duration"], rps["raw"]["default"]) == ("2160h0m0s", True)
    assert (rps["rollup"]["duration"], rps["rollup"]["default"]) == ("26280h0m0s", False)
    cqs = [r["name"] for r in influxql(influxd, "linli", "SHOW CONTINUOUS QUERIES")]
    assert sorted(cqs) == sorted(
        f"linli_{m}_1h"
        for m in ("elevator", "fire_lane", "gate", "fire_panel", "gateway", "events")
    )
    # Again with another raw retention: the policy is altered, the CQs are left alone.
    code, out, err = run_setup(influxd.url, LINLI_INFLUX_RAW_DAYS="30")
    assert code == 0, err
    assert out.count(": unchanged") == 6, out
    rps = {r["name"]: r for r in influxql(influxd, "linli", "SHOW RETENTION POLICIES")}
    assert rps["raw"]["duration"] == "720h0m0s"

    # Points in the last full hour, through the writer (so into the default policy 'raw').
    h0 = time.time_ns() // 1_000_000 // HOUR * HOUR - HOUR
    items: list[Item] = [
        Reading(h0 + i * 60_000, "el-1-1", "elevator", {"floor": f, "trips": 100 + i})
        for i, f in enumerate([3, 9, 1, 4])
    ]
    items += [
        Event(h0 + 5, "el-1-1", "elevator", "trapped", "start", {}),
        Event(h0 + 9, "el-1-1", "elevator", "trapped", "end", {}),
        Event(h0 + 10, "el-1-1", "elevator", "trapped", "start", {}),
    ]
    await write_through_writer(influxd, tmp_path, items)
    code, out, err = run_setup(influxd.url, "--backfill-days", "1")
    assert code == 0, err
    assert 'backfill "linli"."rollup"."elevator_1h": 1 points' in out
    rows = influxql(
        influxd, "linli", 'SELECT * FROM "linli"."rollup"."elevator_1h" WHERE device = \'el-1-1\''
    )
    assert len(rows) == 1
    row = rows[0]
    assert row["time"] == h0
    assert (row["floor"], row["floor_min"], row["floor_max"], row["floor_mean"]) == (4, 1, 9, 4.25)
    assert (row["trips"], row["trips_min"], row["trips_max"]) == (103, 100, 103)
    assert (row["community"], row["gateway"]) == ("meihuayuan", "gw-1")  # GROUP BY * keeps tags
    events = influxql(
        influxd,
        "linli",
        'SELECT n, state FROM "linli"."rollup"."events_1h" WHERE event = \'trapped\'',
    )
    assert sorted((r["state"], r["n"]) for r in events) == [("end", 1), ("start", 2)]


class RecordingInflux2Admin:
    """NOT a real InfluxDB: the documented v2 admin API for orgs, buckets and DBRPs
    (GET/POST /api/v2/buckets, PATCH /api/v2/buckets/{id}, GET/POST /api/v2/dbrps,
    GET /api/v2/orgs), keeping state in memory and recording every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.buckets: dict[str, dict[str, Any]] = {}
        self.dbrps: list[dict[str, Any]] = []

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.record])
        app.router.add_get("/ping", self.ping)
        app.router.add_get("/api/v2/orgs", self.orgs)
        app.router.add_get("/api/v2/buckets", self.list_buckets)
        app.router.add_post("/api/v2/buckets", self.create_bucket)
        app.router.add_patch("/api/v2/buckets/{id}", self.patch_bucket)
        app.router.add_get("/api/v2/dbrps", self.list_dbrps)
        app.router.add_post("/api/v2/dbrps", self.create_dbrp)
        return app

    @web.middleware
    async def record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Token s3cret" and request.path != "/ping":
            return web.json_response({"message": "unauthorized access"}, status=401)
        body = await request.json() if request.can_read_body else None
        self.calls.append((request.method, request.path, body))
        return await handler(request)  # type: ignore[no-any-return]

    async def ping(self, _: web.Request) -> web.Response:
        return web.Response(status=204, headers={"X-Influxdb-Version": "v2.7.11"})

    async def orgs(self, request: web.Request) -> web.Response:
        found = request.query.get("org") == "linli-org"
        return web.json_response({"orgs": [{"id": "o1", "name": "linli-org"}] if found else []})

    async def list_buckets(self, request: web.Request) -> web.Response:
        b = self.buckets.get(request.query["name"])
        return web.json_response({"buckets": [b] if b else []})

    async def create_bucket(self, request: web.Request) -> web.Response:
        body = await request.json()
        b = {**body, "id": f"b{len(self.buckets) + 1}"}
        self.buckets[body["name"]] = b
        return web.json_response(b, status=201)

    async def patch_bucket(self, request: web.Request) -> web.Response:
        b = next(b for b in self.buckets.values() if b["id"] == request.match_info["id"])
        b.update(await request.json())
        return web.json_response(b)

    async def list_dbrps(self, request: web.Request) -> web.Response:
        db = request.query["db"]
        return web.json_response({"content": [m for m in self.dbrps if m["database"] == db]})

    async def create_dbrp(self, request: web.Request) -> web.Response:
        self.dbrps.append(await request.json())
        return web.json_response({"content": self.dbrps[-1]}, status=201)


async def test_v2_buckets_and_dbrp_mappings() -> None:
    admin = RecordingInflux2Admin()
    runner = web.AppRunner(admin.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    env = {"LINLI_INFLUX_TOKEN": "s3cret", "LINLI_INFLUX_ORG": "linli-org"}
    env2 = {**env, "LINLI_INFLUX_BUCKET": "telemetry"}
    try:
        code, out, err = await asyncio.to_thread(run_setup, url, **env2)
        assert code == 0, err
        assert admin.buckets["telemetry"]["retentionRules"] == [
            {"type": "expire", "everySeconds": 90 * 86400}
        ]
        assert admin.buckets["telemetry_rollup"]["retentionRules"] == [
            {"type": "expire", "everySeconds": 1095 * 86400}
        ]
        assert sorted(
            (m["database"], m["retention_policy"], m["bucketID"], m["default"]) for m in admin.dbrps
        ) == [("linli", "raw", "b1", True), ("linli", "rollup", "b2", False)]
        assert 'option task = {name: "linli_elevator_1h"' in out  # the Flux tasks to create
        # A second run creates nothing new.
        code, out, err = await asyncio.to_thread(run_setup, url, **env2)
        assert code == 0, err
        assert len(admin.buckets) == 2
        assert len(admin.dbrps) == 2
        assert "DBRP linli/raw: present" in out
        # A wrong token: InfluxDB's message, exit 1, nothing changed.
        code, out, err = await asyncio.to_thread(
            run_setup, url, **{**env2, "LINLI_INFLUX_TOKEN": "nope"}
        )
        assert code == 1
        assert "HTTP 401: unauthorized access" in err
        code, out, err = await asyncio.to_thread(
            run_setup, url, **{**env2, "LINLI_INFLUX_ORG": "other"}
        )
        assert (code, "no organisation 'other'" in err) == (1, True)
    finally:
        await runner.cleanup()


def test_setup_bad_settings_are_refused(influxd: Influxd) -> None:
    done = run_linli("influx", "setup", env={"LINLI_INFLUX_URL": ""})
    assert done.returncode == 2
    assert "influx_url" in done.stderr
    code, _, err = run_setup(influxd.url, "--backfill-days", "0")
    assert code == 2
    assert "--backfill-days" in err
    assert "between 1 and influx_raw_days (90)" in err
    code, _, err = run_setup(f"http://127.0.0.1:{free_port()}")
    assert code == 1
    assert "did not answer" in err
    code, _, err = run_setup(influxd.url, "--backfill-days", "x")
    assert code == 2
    assert "invalid int value: 'x'" in err


async def test_grafana_dashboard_queries_run_on_influxdb(influxd: Influxd, tmp_path: Path) -> None:
    """Every query in docs/grafana's dashboard is valid InfluxQL on a set-up database, and the
    panels over raw data return what was written (Grafana's macros filled in by hand)."""
    assert run_setup(influxd.url)[0] == 0
    now = time.time_ns() // 1_000_000
    items: list[Item] = [
        Reading(now - 600_000 + i * 60_000, "el-1-1", "elevator",
                {"floor": i, "trips": 10 + i, "service_mode": "normal"})
        for i in range(5)
    ]  # fmt: skip
    items += [
        Reading(now - 300_000, "fl-1", "fire_lane", {"occupied": True, "dwell_s": 42.0}),
        Reading(now - 200_000, "gt-north", "gate", {"passages": 7}),
        Event(now - 100_000, "el-1-1", "elevator", "trapped", "start", {}),
    ]
    await write_through_writer(influxd, tmp_path, items, offline_at=now - 50_000)
    dashboard = json.loads((ROOT / "docs/grafana/linli-influxdb-dashboard.json").read_text())
    macros = {
        "$timeFilter": "time > now() - 1h",
        "$__interval": "1m",
        "$community": "meihuayuan",
        "$elevator": "el-1-1",
    }

    def fill(q: str) -> str:
        for k, v in macros.items():
            q = q.replace(k, v)
        return q

    templates = [fill(v["query"]) for v in dashboard["templating"]["list"]]
    assert influxql(influxd, "linli", templates[0]) == [{"key": "community", "value": "meihuayuan"}]
    assert influxql(influxd, "linli", templates[1]) == [{"key": "device", "value": "el-1-1"}]
    rows_by_panel = {}
    for panel in dashboard["panels"]:
        (target,) = panel["targets"]
        assert target["datasource"]["uid"] == "linli-influxdb"
        rows_by_panel[panel["id"]] = influxql(influxd, "linli", fill(target["query"]))
    assert max(r["last"] for r in rows_by_panel[1]) == 4  # floors 0..4
    assert [r["device"] for r in rows_by_panel[7]] == ["gw-1", "el-1-1"]  # newest first
    assert rows_by_panel[8] == [
        {"time": now - 50_000, "gateway": "gw-1", "state": "start", "data": "{}"}
    ]
    assert any(r.get("max") == 42.0 for r in rows_by_panel[5])
