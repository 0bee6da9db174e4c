"""The product's telemetry figures from both stores: the embedded SQLite store and a real
influxd (1.x, over InfluxQL). One known dataset goes into each; every figure must equal the
value worked out by hand below, from either store.

The dataset covers two local days (Asia/Shanghai) from D0 = 2026-11-02 00:00 +08:00, with
conditions that began before the range (a trapped passenger, an occupied lane, a gateway
online), a counter restart, a terminal offline, a sensor fault, and a device with no data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from collectors.wire import Event, Item, Reading
from server.telemetry.influx import InfluxTarget, open_influx_writer
from server.telemetry.influxql import InfluxQLReader
from server.telemetry.queries import (
    TelemetryReader,
    bucket_rows,
    elevator_availability,
    fire_lane_occupancy,
    gateway_uptime,
    trips_per_day,
)
from server.telemetry.sqlite_store import open_sqlite_store
from server.telemetry.timeline import nice_interval_ms
from tests.conftest import Influxd

pytestmark = pytest.mark.functional

H = 3_600_000
M = 60_000
D0 = 1_793_548_800_000  # 2026-11-02 00:00 Asia/Shanghai
D1 = D0 + 24 * H
END = D0 + 48 * H
C = "meihuayuan"
TZ = "Asia/Shanghai"
LOOKBACK = 90 * 24 * H


def ev(t: int, dev: str, kind: str, name: str, state: str, **data: Any) -> Event:
    return Event(t, dev, kind, name, state, data)  # type: ignore[arg-type]


def el(t: int, dev: str, **fields: Any) -> Reading:
    return Reading(t, dev, "elevator", fields)


def lane(t: int, occupied: bool) -> Reading:
    return Reading(t, "fl-1", "fire_lane", {"occupied": occupied})


MODE_TO_INSPECTION = {"from": "normal", "to": "inspection"}
MODE_TO_NORMAL = {"from": "inspection", "to": "normal"}

DATA: list[Item] = [
    # el-1-1: normal since long ago; trapped from before the range to D0+1h.
    el(D0 - 10 * H, "el-1-1", service_mode="normal", trips=100),
    ev(D0 - 2 * H, "el-1-1", "elevator", "trapped", "start"),
    ev(D0 + 1 * H, "el-1-1", "elevator", "trapped", "end"),
    el(D0 + 2 * H, "el-1-1", service_mode="normal", trips=110),
    Event(D0 + 5 * H, "el-1-1", "elevator", "service_mode_changed", "instant", MODE_TO_INSPECTION),
    Event(D0 + 7 * H, "el-1-1", "elevator", "service_mode_changed", "instant", MODE_TO_NORMAL),
    el(D0 + 12 * H, "el-1-1", trips=150),
    ev(D0 + 20 * H, "el-1-1", "elevator", "terminal_offline", "start"),
    ev(D0 + 22 * H, "el-1-1", "elevator", "terminal_offline", "end"),
    el(D0 + 26 * H, "el-1-1", trips=160),
    ev(D0 + 30 * H, "el-1-1", "elevator", "safety_circuit_open", "start", code=1),
    ev(D0 + 30 * H + 30 * M, "el-1-1", "elevator", "safety_circuit_open", "end", code=1),
    ev(D0 + 40 * H, "el-1-1", "elevator", "door_open_while_running", "start"),  # does not stop it
    ev(D0 + 41 * H, "el-1-1", "elevator", "door_open_while_running", "end"),
    el(D0 + 47 * H, "el-1-1", trips=200),
    # el-2-1: no events ever; first report at D0+6h; its counter restarts on day 1.
    el(D0 + 6 * H, "el-2-1", service_mode="normal", trips=5),
    el(D0 + 8 * H, "el-2-1", trips=9),
    el(D0 + 30 * H, "el-2-1", trips=3),
    el(D0 + 31 * H, "el-2-1", trips=7),
    # fl-1: occupied from before the range; a sensor fault for an hour.
    lane(D0 - 1 * H, True),
    lane(D0 + 30 * M, False),
    lane(D0 + 3 * H, True),
    lane(D0 + 3 * H + 10 * M, True),  # a heartbeat while still occupied
    lane(D0 + 3 * H + 45 * M, False),
    ev(D0 + 10 * H, "fl-1", "fire_lane", "sensor_fault", "start", reason="no_response"),
    ev(D0 + 11 * H, "fl-1", "fire_lane", "sensor_fault", "end", reason="no_response"),
    lane(D0 + 23 * H + 50 * M, True),
    lane(D0 + 24 * H + 10 * M, False),
]
STATUS = [(D0 - 24 * H, "online"), (D0 + 12 * H, "offline"), (D0 + 13 * H, "online")]

# A chart: el-3-1 reports every 40 s for a day (2,160 readings).
CHART = [
    el(D0 + i * 40_000, "el-3-1", floor=i % 7, running=i % 3 == 0, door="closed")
    for i in range(2160)
]


@pytest.fixture
async def sqlite_reader(tmp_path: Path) -> AsyncIterator[TelemetryReader]:
    async with open_sqlite_store(tmp_path / "telemetry.db") as store:
        await store.write(C, "gw-1", [*DATA, *CHART])
        for t, status in STATUS:
            await store.write_status(C, "gw-1", status, t)
        await store.flush()
        yield store


@pytest.fixture
async def influx_reader(influxd: Influxd, tmp_path: Path) -> AsyncIterator[TelemetryReader]:
    target = InfluxTarget(url=influxd.url, database="q")
    async with open_influx_writer(
        target, tmp_path / "spool.db", spool_max_bytes=1 << 26, backoff=False
    ) as writer:
        await writer.write(C, "gw-1", [*DATA, *CHART])
        for t, status in STATUS:
            await writer.write_status(C, "gw-1", status, t)
        await writer.flush()
        assert writer.counts["lines_written"] == len(DATA) + len(CHART) + len(STATUS)
        yield InfluxQLReader(writer)


@pytest.fixture(params=["sqlite", "influxdb"])
def reader(request: pytest.FixtureRequest) -> TelemetryReader:
    name = "sqlite_reader" if request.param == "sqlite" else "influx_reader"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def hours(**cats: float) -> dict[str, float]:
    return {f"{k}_s": v * 3600 for k, v in cats.items()}


async def test_elevator_availability(reader: TelemetryReader) -> None:
    got = await elevator_availability(
        reader, C, ["el-1-1", "el-2-1", "el-9-9"], since=D0, until=END, tz=TZ, lookback_ms=LOOKBACK
    )
    e1 = got["el-1-1"]
    # Day 0: trapped 0-1 h and inspection 5-7 h: 3 h out; offline 20-22 h: 2 h unknown.
    assert e1["days"]["2026-11-02"] == {
        **hours(available=19, unavailable=3, unknown=2),
        "ratio": round(19 / 22, 6),
    }
    # Day 1: the safety circuit for 30 min; door_open_while_running does not stop the car.
    assert e1["days"]["2026-11-03"] == {
        **hours(available=23.5, unavailable=0.5),
        "ratio": round(23.5 / 24, 6),
    }
    assert (e1["available_s"], e1["unavailable_s"], e1["unknown_s"]) == (
        42.5 * 3600,
        3.5 * 3600,
        2 * 3600,
    )
    assert e1["ratio"] == round(42.5 / 46, 6)
    assert e1["observed"] == round(46 / 48, 6)
    # el-2-1 is unknown until its first report at 6 h, available after.
    e2 = got["el-2-1"]
    assert e2["days"]["2026-11-02"] == {**hours(available=18, unknown=6), "ratio": 1.0}
    assert e2["ratio"] == 1.0
    # A registered elevator with no data at all: unknown, no ratio.
    assert got["el-9-9"]["ratio"] is None
    assert got["el-9-9"]["unknown_s"] == 48 * 3600
    assert got["el-9-9"]["observed"] == 0.0


async def test_elevator_availability_of_part_of_a_day(reader: TelemetryReader) -> None:
    # From 4 h to 6 h on day 0: normal until 5 h, inspection after (seeded by the change's
    # 'from', since no change happened before 4 h within the look-back).
    got = await elevator_availability(
        reader, C, ["el-1-1"], since=D0 + 4 * H, until=D0 + 6 * H, tz=TZ, lookback_ms=H
    )
    assert got["el-1-1"]["days"] == {
        "2026-11-02": {**hours(available=1, unavailable=1), "ratio": 0.5}
    }


async def test_trips_per_day(reader: TelemetryReader) -> None:
    got = await trips_per_day(reader, C, ["el-1-1", "el-2-1", "el-9-9"], since=D0, until=END, tz=TZ)
    # el-1-1: 150 - 100 (the day before's max), then 200 - 150.
    assert got["el-1-1"] == {"2026-11-02": 50, "2026-11-03": 50}
    # el-2-1: no earlier day, 9 - 5; then the counter restarted (3 < 9): 7 - 3.
    assert got["el-2-1"] == {"2026-11-02": 4, "2026-11-03": 4}
    assert got["el-9-9"] == {"2026-11-02": None, "2026-11-03": None}


async def test_fire_lane_occupied_minutes(reader: TelemetryReader) -> None:
    got = await fire_lane_occupancy(reader, C, ["fl-1"], since=D0, until=END, tz=TZ, lookback_ms=H)
    lane_ = got["fl-1"]
    # Day 0: 0-30 min (occupied since before the range), 3:00-3:45, 23:50-24:00.
    assert lane_["days"]["2026-11-02"]["occupied_min"] == 30 + 45 + 10
    assert lane_["days"]["2026-11-02"]["unknown_s"] == 3600  # the sensor fault
    assert lane_["days"]["2026-11-03"]["occupied_min"] == 10
    assert lane_["occupied_min"] == 95
    assert lane_["observed"] == round(47 / 48, 6)


async def test_gateway_uptime(reader: TelemetryReader) -> None:
    got = await gateway_uptime(
        reader, C, ["gw-1", "gw-9"], since=D0, until=END, tz=TZ, lookback_ms=LOOKBACK
    )
    assert got["gw-1"]["days"]["2026-11-02"] == {
        **hours(offline=1, online=23),
        "ratio": round(23 / 24, 6),
    }
    assert got["gw-1"]["days"]["2026-11-03"] == {**hours(online=24), "ratio": 1.0}
    assert got["gw-9"]["ratio"] is None


async def test_chart_is_downsampled_to_round_buckets(reader: TelemetryReader) -> None:
    interval = nice_interval_ms(D0, D1, 500)
    assert interval == 300_000  # 24 h / 500 = 172.8 s: the next round width is 5 min
    got = await reader.series(C, "el-3-1", "elevator", since=D0, until=D1, interval=interval)
    assert len(got) == 288 <= 500
    # The reference: bucket the raw readings in Python.
    rows = [(r.t, r.fields) for r in CHART]
    assert got == bucket_rows(rows, since=D0, interval=interval, kind="elevator")
    # By hand, the first bucket: readings 0..7 (0 s .. 280 s): floors 0..6, 0.
    assert got[0] == {
        "t": D0,
        "fields": {"floor": 0, "running": False, "door": "closed"},
        "min": {"floor": 0},
        "max": {"floor": 6},
    }


async def test_raw_items_and_events_of_one_device(reader: TelemetryReader) -> None:
    items = await reader.items(C, "el-2-1", "elevator", since=D0, until=END, limit=10)
    assert items == [
        {"t": D0 + 6 * H, "fields": {"service_mode": "normal", "trips": 5}},
        {"t": D0 + 8 * H, "fields": {"trips": 9}},
        {"t": D0 + 30 * H, "fields": {"trips": 3}},
        {"t": D0 + 31 * H, "fields": {"trips": 7}},
    ]
    events = await reader.events(
        C, "elevator", {"trapped", "safety_circuit_open"}, since=D0, until=END, dev="el-1-1"
    )
    assert [(e.t, e.event, e.state, e.data) for e in events] == [
        (D0 + 1 * H, "trapped", "end", {}),
        (D0 + 30 * H, "safety_circuit_open", "start", {"code": 1}),
        (D0 + 30 * H + 30 * M, "safety_circuit_open", "end", {"code": 1}),
    ]
