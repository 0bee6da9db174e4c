"""InfluxDB: the writer's throughput against plain HTTP, and the query times the product
needs (issue 6). Aims: writer ≥ 0.8× plain HTTP; say how long a 30-day chart and a month's
availability of 500 elevators take.

    .venv/bin/python bench/influx.py

Setup: a real influxd (Debian's 1.x) on a free loopback port with a fresh data directory,
started by this script; both sides of each comparison run in this one process against it.

1. **Write.** The same 200,000 elevator readings, as line protocol, posted to two fresh
   databases: (a) *baseline*: plain aiohttp POSTs of 5,000-line batches, uncompressed, one
   after another; (b) the writer: ``write()`` per 100-item envelope, ``commit()`` every 16
   envelopes (a batch of messages, as ingest commits before acknowledging), then ``flush()`` —
   encoding, spooling to disk (SQLite) and gzip included. Run A-B-B-A; the ratio is of the
   summed times, so a drift of the machine during the run cancels out.
2. **30-day chart.** One elevator reporting every 60 s for 30 days (43,200 readings): the
   chart query (downsampled to ≤ 500 buckets), against fetching every raw point.
3. **Month of availability, 500 elevators.** Each reports its full state every 15 min
   (1,440,000 readings) and has 12 events in the month (service-mode changes and faults:
   6,000 events): :func:`elevator_availability`, against the naive way of fetching every
   ``service_mode`` reading of the month.
"""

from __future__ import annotations

import asyncio
import gzip
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collectors.wire import Event, Item, Reading  # noqa: E402
from server.telemetry.influx import InfluxTarget, open_influx_writer  # noqa: E402
from server.telemetry.influxql import InfluxQLReader  # noqa: E402
from server.telemetry.lineproto import encode_items  # noqa: E402
from server.telemetry.queries import elevator_availability  # noqa: E402
from server.telemetry.timeline import nice_interval_ms  # noqa: E402

N_WRITE = 200_000
BATCH = 5_000
DAY = 86_400_000
T0 = 1_790_812_800_000  # 2026-10-01 00:00 +08:00
C = "meihuayuan"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_influxd(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port, rpc = free_port(), free_port()
    conf = root / "influxdb.conf"
    conf.write_text(
        f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc}"\n'
        f'[meta]\n  dir = "{root}/meta"\n'
        f'[data]\n  dir = "{root}/data"\n  wal-dir = "{root}/wal"\n  query-log-enabled = false\n'
        f'[http]\n  bind-address = "127.0.0.1:{port}"\n  log-enabled = false\n'
        "[monitor]\n  store-enabled = false\n[continuous_queries]\n  enabled = false\n"
    )
    influxd = shutil.which("influxd") or "/usr/bin/influxd"
    proc = subprocess.Popen(
        [influxd, "-config", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit("influxd did not start")


def readings(n: int, start: int, step: int, devs: list[str]) -> list[Item]:
    rng = random.Random(1)
    out: list[Item] = []
    for i in range(n):
        dev = devs[i % len(devs)]
        out.append(
            Reading(
                start + (i // len(devs)) * step,
                dev,
                "elevator",
                {
                    "floor": rng.randint(1, 30),
                    "running": rng.random() < 0.4,
                    "door": "closed",
                    "service_mode": "normal",
                    "trips": i // len(devs),
                    "run_hours": i / 3600,
                },
            )
        )
    return out


async def create_db(http: aiohttp.ClientSession, url: str, db: str) -> None:
    async with http.post(f"{url}/query", data={"q": f'CREATE DATABASE "{db}"'}) as r:
        r.raise_for_status()


async def baseline(http: aiohttp.ClientSession, url: str, db: str, lines: list[str]) -> float:
    await create_db(http, url, db)
    t = time.perf_counter()
    for i in range(0, len(lines), BATCH):
        body = ("\n".join(lines[i : i + BATCH]) + "\n").encode()
        async with http.post(f"{url}/write", params={"db": db, "precision": "ms"}, data=body) as r:
            if r.status != 204:
                raise SystemExit(f"baseline write: {r.status} {await r.text()}")
    return time.perf_counter() - t


async def through_writer(url: str, db: str, items: list[Item], tmp: Path) -> float:
    target = InfluxTarget(url=url, database=db, version="1")
    async with open_influx_writer(
        target, tmp / f"spool-{db}.db", spool_max_bytes=1 << 30
    ) as writer:
        t = time.perf_counter()
        for n, i in enumerate(range(0, len(items), 100), 1):
            await writer.write(C, "gw-1", items[i : i + 100])
            if n % 16 == 0:  # ingest commits each batch of messages before acknowledging it
                await writer.commit({})
            await asyncio.sleep(0)  # ingest awaits the next MQTT message between envelopes
        await writer.flush()
        elapsed = time.perf_counter() - t
        assert writer.counts["lines_written"] == len(items), writer.counts
    return elapsed


async def count(http: aiohttp.ClientSession, url: str, db: str) -> int:
    async with http.get(
        f"{url}/query", params={"db": db, "q": 'SELECT count("floor") FROM "elevator"'}
    ) as r:
        body = await r.json()
    return int(body["results"][0]["series"][0]["values"][0][1])


async def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="linli-bench-influx-"))
    proc, url = start_influxd(tmp)
    try:
        async with aiohttp.ClientSession() as http:
            # 1. write throughput
            devs = [f"el-{b}-{u}" for b in range(1, 21) for u in range(1, 6)]
            items = readings(N_WRITE, T0, 1000, devs)
            lines = list(encode_items(C, "gw-1", items))
            times = {"plain": 0.0, "writer": 0.0}
            for k, which in enumerate(("plain", "writer", "writer", "plain")):
                db = f"w{k}"
                if which == "plain":
                    times["plain"] += await baseline(http, url, db, lines)
                else:
                    times["writer"] += await through_writer(url, db, items, tmp)
                assert await count(http, url, db) == N_WRITE
            plain_rate = 2 * N_WRITE / times["plain"]
            writer_rate = 2 * N_WRITE / times["writer"]
            print(f"write: plain HTTP {plain_rate:,.0f} points/s, writer {writer_rate:,.0f}"
                  f" points/s, ratio {writer_rate / plain_rate:.2f} (aim >= 0.8)")  # fmt: skip
            t = time.perf_counter()
            encode_items(C, "gw-1", items)
            enc = time.perf_counter() - t
            print(f"  encoding alone (in the writer, not in the baseline): {N_WRITE / enc:,.0f}"
                  f" points/s = {enc / N_WRITE * 1e6:.1f} µs per point")  # fmt: skip
            gz = len(gzip.compress(("\n".join(lines[:BATCH]) + "\n").encode(), 1))
            print(f"  a 5,000-line batch: {len(chr(10).join(lines[:BATCH])):,} bytes, gzip {gz:,}")

            # 2. a 30-day chart of one elevator
            target = InfluxTarget(url=url, database="q", version="1")
            month = readings(30 * 1440, T0, 60_000, ["el-1-1"])
            await through_writer(url, "q", month, tmp)
            async with open_influx_writer(
                target, tmp / "spool-q2.db", spool_max_bytes=1 << 30
            ) as writer:
                reader = InfluxQLReader(writer)
                since, until = T0, T0 + 30 * DAY
                interval = nice_interval_ms(since, until, 500)
                runs = []
                for _ in range(5):
                    t = time.perf_counter()
                    pts = await reader.series(
                        C, "el-1-1", "elevator", since=since, until=until, interval=interval
                    )
                    runs.append(time.perf_counter() - t)
                chart = min(runs)
                runs = []
                for _ in range(3):
                    t = time.perf_counter()
                    raw = await reader.items(
                        C, "el-1-1", "elevator", since=since, until=until, limit=100_000
                    )
                    runs.append(time.perf_counter() - t)
                raw_t = min(runs)
                print(f"30-day chart: {len(pts)} buckets of {interval // 60_000} min in"
                      f" {chart * 1000:.0f} ms; all {len(raw):,} raw points: {raw_t * 1000:.0f} ms"
                      f" (chart = {chart / raw_t:.2f}x raw)")  # fmt: skip

                # 3. a month's availability of 500 elevators
                devs500 = [f"el-{b}-{u}" for b in range(1, 101) for u in range(1, 6)]
                fleet = readings(500 * 30 * 96, T0, 900_000, devs500)
                rng = random.Random(2)
                to_inspection = {"from": "normal", "to": "inspection"}
                to_normal = {"from": "inspection", "to": "normal"}
                for dev in devs500:
                    for _ in range(3):
                        t0 = T0 + rng.randrange(29 * DAY)
                        fleet += [
                            Event(t0, dev, "elevator", "service_mode_changed", "instant",
                                  to_inspection),
                            Event(t0 + 3_600_000, dev, "elevator", "service_mode_changed",
                                  "instant", to_normal),
                            Event(t0 + 7_200_000, dev, "elevator", "door_close_fault", "start",
                                  {"code": 2}),
                            Event(t0 + 7_500_000, dev, "elevator", "door_close_fault", "end",
                                  {"code": 2}),
                        ]  # fmt: skip
                t = time.perf_counter()
                await through_writer(url, "q", fleet, tmp)
                print(f"  (wrote {len(fleet):,} points for the fleet in"
                      f" {time.perf_counter() - t:.1f} s)")  # fmt: skip
                runs = []
                for _ in range(3):
                    t = time.perf_counter()
                    avail = await elevator_availability(
                        reader, C, devs500, since=since, until=until,
                        tz="Asia/Shanghai", lookback_ms=90 * DAY,
                    )  # fmt: skip
                    runs.append(time.perf_counter() - t)
                avail_t = min(runs)
                ratios = sorted(a["ratio"] for a in avail.values())
                assert len(avail) == 500
                t = time.perf_counter()
                naive = await reader.field_points(
                    C, "elevator", "service_mode", since=since, until=until
                )
                naive_t = time.perf_counter() - t
                print(f"month availability, 500 elevators: {avail_t * 1000:.0f} ms"
                      f" ({reader.queries} queries so far); median ratio {ratios[250]:.4f};"
                      f" fetching all {len(naive):,} service_mode readings instead:"
                      f" {naive_t * 1000:.0f} ms ({avail_t / naive_t:.3f}x)")  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
