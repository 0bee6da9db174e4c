"""Screens (issue 16): 500 live screens while the server ingests 2,000 readings a second.

    .venv/bin/python bench/screens.py [--screens 500] [--seconds 20]

Setup: a real mosquitto and ``linli server`` (SQLite, the embedded telemetry store, the demo
registry of 22 communities), started by this script; the screen of 山城街道邻里中心 (all 22
communities) opened ``--screens`` times by aiohttp clients in this process reading its stream.
This process plays the 22 gateways: every 0.1 s one envelope per community of 9-10 elevator
readings (2,000 readings a second in all); each reading's time is when it was handed to the broker.

Measured:
1. **Delta lag**: from the publish to the frame at each screen holding that reading (every
   screen, every reading it saw): p50, p99, max. Aim: p99 < 1 s.
2. **Server CPU and memory per connection**: the server's CPU seconds and RSS during the same
   load with no screen and with ``--screens``; the difference divided by the connections.
3. **Ingest ratio**: readings the server stored per second when offered as fast as one
   publisher can, with the screens open against none. Aim: >= 0.9.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import aiomqtt
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collectors.wire import Envelope, Reading, encode_envelope  # noqa: E402

ADMIN = "bench-admin-token-0123456789abcdef"
CLI = [sys.executable, "-c", "from server.cli import main; import sys; sys.exit(main())"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def proc_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MB) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    return cpu, rss


def start(tmp: Path) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], int, int, str]:
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 100000\n"
    )
    broker = subprocess.Popen(
        [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    http_port = free_port()
    settings = tmp / "settings.toml"
    settings.write_text(
        f'mqtt_url = "mqtt://127.0.0.1:{port}"\nmqtt_shared_group = ""\n'
        f'database_url = "sqlite+aiosqlite:///{tmp / "linli.db"}"\n'
        f'telemetry_path = "{tmp / "telemetry.db"}"\nhttp_port = {http_port}\n'
        f'admin_token = "{ADMIN}"\nledger_schedule = ""\nprogress_schedule = ""\n'
        "api_rate_per_s = 100000\napi_refused_per_min = 100000\n"
    )
    settings.chmod(0o600)
    reg = ROOT / "server/demo_data/shancheng.yaml"
    subprocess.run(
        [*CLI, "registry", "import", str(reg), "--config", str(settings)],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    made = subprocess.run(
        [*CLI, "screens", "token", "shancheng-hall", "--config", str(settings)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    token = made.stdout.strip().rsplit("#token=", 1)[1]
    log = (tmp / "server.log").open("w")
    server = subprocess.Popen(
        [*CLI, "--log-level", "WARNING", "server", "--config", str(settings)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_port(http_port)
    return broker, server, port, http_port, token


def elevators() -> dict[str, list[str]]:
    reg = yaml.safe_load((ROOT / "server/demo_data/shancheng.yaml").read_text())
    return {
        c["id"]: [d["id"] for d in c["devices"] if d["kind"] == "elevator"]
        for c in reg["communities"]
    }


class Load:
    """The 22 gateways: ``rate`` readings a second (0: as fast as possible) for ``seconds``."""

    def __init__(self, port: int, lifts: dict[str, list[str]]) -> None:
        self.port, self.lifts = port, {c: ls for c, ls in lifts.items() if ls}
        self.seq = dict.fromkeys(self.lifts, 1000000)

    async def run(self, rate: int, seconds: float) -> int:
        sent = 0
        per = max(1, rate // (10 * len(self.lifts))) if rate else 100
        async with aiomqtt.Client(
            "127.0.0.1",
            self.port,
            identifier=f"bench-{time.time_ns()}",
            max_queued_outgoing_messages=100_000,
        ) as client:
            begin = time.monotonic()
            tick = 0
            while time.monotonic() - begin < seconds:
                for com, lifts in self.lifts.items():
                    t = int(time.time() * 1000)
                    items = [
                        Reading(
                            t, lifts[i % len(lifts)], "elevator", {"trips": t, "floor": i % 9 + 1}
                        )
                        for i in range(per)
                    ]
                    self.seq[com] += 1
                    env = Envelope(gw="gw-1", community=com, seq=self.seq[com], sent=t, items=items)
                    await client.publish(f"linli/v1/{com}/gw-1/up", encode_envelope(env), qos=1)
                    sent += len(items)
                tick += 1
                if rate:
                    await asyncio.sleep(max(0.0, begin + tick * 0.1 - time.monotonic()))
        return sent


async def stored(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(f"{url}/api/ingest", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
        body = await r.json()
    return int(body.get("items", body.get("items_total", 0)))


async def drained(http: aiohttp.ClientSession, url: str) -> int:
    """Wait until the server has stored everything offered (its count holds for 2 s)."""
    last, still = -1, 0.0
    while still < 2.0:
        now = await stored(http, url)
        still = still + 0.5 if now == last else 0.0
        last = now
        await asyncio.sleep(0.5)
    return last


async def screen(
    http: aiohttp.ClientSession,
    url: str,
    lags: list[float],
    ready: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    """One screen: the lag of each frame (its newest reading's publish time to its arrival)."""
    headers = {"Authorization": f"Bearer {TOKEN[0]}"}
    async with http.get(
        f"{url}/screen-data/shancheng-hall/stream",
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=None),
    ) as resp:
        ready.set()
        buf = b""
        async for chunk in resp.content.iter_any():
            now = time.time() * 1000
            buf += chunk
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                if block.startswith(b"data: "):  # a frame (the snapshot is an event)
                    # Each update's "t" is its reading's time, set when it was published:
                    # read with a regular expression, so that the client stays cheap.
                    times = T_FIELD.findall(block)
                    if times:
                        lags.append(now - max(int(t) for t in times))
            if stop.is_set():
                return


TOKEN: list[str] = []
T_FIELD = re.compile(rb'"t":(\d{13})')


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


async def main(n_screens: int, seconds: float) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="linli-bench-screens-"))
    broker, server, port, http_port, token = start(tmp)
    TOKEN.append(token)
    url = f"http://127.0.0.1:{http_port}"
    load = Load(port, elevators())
    try:
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as http:
            await asyncio.sleep(2)
            # A: no screen, 2,000 readings/s.
            cpu0, _ = proc_stats(server.pid)
            t0 = time.monotonic()
            sent_a = await load.run(2000, seconds)
            span_a = time.monotonic() - t0
            cpu1, rss1 = proc_stats(server.pid)
            await drained(http, url)
            # B: the screens open; 2,000 readings/s.
            lags: list[float] = []
            stop = asyncio.Event()
            readies = [asyncio.Event() for _ in range(n_screens)]
            tasks = [asyncio.create_task(screen(http, url, lags, r, stop)) for r in readies]
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 300)
            await asyncio.sleep(3)
            lags.clear()
            cpu2, _ = proc_stats(server.pid)
            t0 = time.monotonic()
            sent_b = await load.run(2000, seconds)
            span_b = time.monotonic() - t0
            await asyncio.sleep(1.0)
            cpu3, rss3 = proc_stats(server.pid)
            seen = list(lags)
            await drained(http, url)
            # C: as fast as one publisher can, the screens open.
            before = await stored(http, url)
            t0 = time.monotonic()
            await load.run(0, 10)
            rate_screens = (await drained(http, url) - before) / (time.monotonic() - t0 - 2.0)
            failed = [
                t.exception()
                for t in tasks
                if t.done() and not t.cancelled() and t.exception() is not None
            ]
            stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(2)
            # D: the same without screens.
            before = await stored(http, url)
            t0 = time.monotonic()
            await load.run(0, 10)
            rate_none = (await drained(http, url) - before) / (time.monotonic() - t0 - 2.0)
        busy_a = (cpu1 - cpu0) / span_a
        busy_b = (cpu3 - cpu2) / (span_b + 1.0)
        print(
            f"screens: {n_screens} ({len(failed)} failed); offered {sent_a / span_a:.0f} and "
            f"{sent_b / span_b:.0f} readings/s; frames measured: {len(seen)}"
        )
        print(
            f"delta lag ms: p50 {pct(seen, 0.5):.0f}, p99 {pct(seen, 0.99):.0f}, "
            f"max {max(seen, default=0):.0f}"
        )
        print(
            f"server CPU at 2,000 readings/s: {busy_a * 100:.0f} % of a core without screens, "
            f"{busy_b * 100:.0f} % with; per connection "
            f"{(busy_b - busy_a) / n_screens * 1000:.2f} ms of CPU a second"
        )
        print(
            f"server RSS: {rss1:.0f} MB without screens, {rss3:.0f} MB with; per connection "
            f"{(rss3 - rss1) / n_screens * 1000:.0f} kB"
        )
        print(
            f"ingest, as fast as offered: {rate_none:.0f} readings/s without screens, "
            f"{rate_screens:.0f} with; ratio {rate_screens / rate_none:.2f}"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
        broker.terminate()
        broker.wait(timeout=10)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--screens", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    asyncio.run(main(args.screens, args.seconds))
