"""Alerts (issue 5): event-to-webhook latency under ingest load, and transitions per second.

    .venv/bin/python bench/alerts.py [--quick]

Setup: a real mosquitto on a free loopback port and ``linli server`` as its own process
(SQLite, the embedded telemetry store), both started by this script; a webhook receiver
(aiohttp) for the company of 梅花园 in this process.

1. **Latency.** This process plays 梅花园's gateway: a background load of 5,000 readings/s
   (10 envelopes of 500 elevator readings per second), and every 0.3 s an e-bike event on
   one of the three cars (start, then its end 0.15 s later; the flapping window is 0 here, so
   the next start on that car opens a new alert). Latency is from the moment the envelope
   carrying the start is handed to the broker to the moment the webhook receives the
   signed "opened" delivery: p50, p99, max. *Baseline*: the same receiver timing a bare
   HTTP POST from this process (the floor of one webhook hop). Aim: p99 < 250 ms.
2. **Transitions per second.** In this process, ``AlertService.transition`` on a SQLite file
   (acknowledge, then resolve, N alerts: read the alert and its timeline, check the step,
   write the state, the timeline and one outbox row per channel, commit) against a
   *baseline* of the bare SQL work of the same shape (one UPDATE and two INSERTs per
   commit) on the same engine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import yaml
from aiohttp import web
from sqlalchemy import insert, select, update

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alerts.ladders import default_ladders  # noqa: E402
from collectors.wire import Envelope, Event, Reading, encode_envelope  # noqa: E402
from server.alerting.service import AlertService  # noqa: E402
from server.store import models  # noqa: E402
from server.store.db import open_database  # noqa: E402
from server.store.registry import import_registry, load_registry  # noqa: E402

SECRET = "bench-secret-0123456789"
COMMUNITY = "meihuayuan"
CARS = ["el-1-1", "el-2-1", "el-3-1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int) -> None:
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def now_ms() -> float:
    return time.time() * 1000


class Receiver:
    def __init__(self) -> None:
        self.arrivals: dict[int, float] = {}  # alert id -> arrival ms
        self.bodies: dict[int, dict[str, Any]] = {}
        self.bare: list[float] = []

    async def hook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        want = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        assert request.headers["X-Linli-Signature"] == want
        body = json.loads(raw)
        if body["change"] == "opened":
            self.arrivals[body["id"]] = now_ms()
            self.bodies[body["id"]] = body
        return web.Response(status=204)

    async def bare_hook(self, request: web.Request) -> web.Response:
        sent = float((await request.read()).decode())
        self.bare.append(now_ms() - sent)
        return web.Response(status=204)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def start_processes(
    tmp: Path, port: int, hook_port: int
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """mosquitto, the registry with the company's webhook, and ``linli server``."""
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    broker = subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.DEVNULL)
    wait_port(port)
    reg = yaml.safe_load((ROOT / "server/demo_data/shancheng.yaml").read_text())
    for org in reg["organisations"]:
        if org["id"] == "pc-anju":
            org["channels"] = [{"kind": "webhook", "url": f"http://127.0.0.1:{hook_port}/hook",
                                "secret": SECRET}]  # fmt: skip
    (tmp / "registry.yaml").write_text(yaml.safe_dump(reg, allow_unicode=True))
    (tmp / "thresholds.yaml").write_text("defaults: {flap_s: 0}\n")
    http_port = free_port()
    settings = tmp / "settings.toml"
    settings.write_text(
        f'mqtt_url = "mqtt://127.0.0.1:{port}"\n'
        f'database_url = "sqlite+aiosqlite:///{tmp / "linli.db"}"\n'
        f'telemetry_path = "{tmp / "telemetry.db"}"\nhttp_port = {http_port}\n'
        f'alert_thresholds = "{tmp / "thresholds.yaml"}"\nmqtt_shared_group = ""\n'
    )
    cli = [sys.executable, "-c", "from server.cli import main; import sys; sys.exit(main())"]
    imported = [*cli, "registry", "import", str(tmp / "registry.yaml"), "--config", str(settings)]
    subprocess.run(imported, check=True, capture_output=True, cwd=ROOT)
    log = (tmp / "server.log").open("w")
    server = subprocess.Popen(
        [*cli, "--log-level", "WARNING", "server", "--config", str(settings)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_port(http_port)
    return broker, server


async def latency(tmp: Path, seconds: float) -> None:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.hook)
    app.router.add_post("/bare", receiver.bare_hook)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    port = free_port()
    broker, server = start_processes(tmp, port, hook_port)
    await asyncio.sleep(1.0)
    sent_at: dict[str, list[float]] = {car: [] for car in CARS}
    seq = 0
    try:
        async with aiomqtt.Client("127.0.0.1", port, identifier="bench-gw") as client:
            topic = f"linli/v1/{COMMUNITY}/gw-1/up"

            async def publish(items: list[Any]) -> float:
                nonlocal seq
                env = Envelope(gw="gw-1", community=COMMUNITY, seq=seq,
                               sent=int(now_ms()), items=items)  # fmt: skip
                seq += 1
                payload = encode_envelope(env)
                at = now_ms()
                await client.publish(topic, payload, qos=1)
                return at

            async def background(stop: asyncio.Event) -> int:
                sent = 0
                tick = 0
                begin = time.monotonic()
                while not stop.is_set():
                    t = int(now_ms())
                    items = [Reading(t, CARS[i % 3], "elevator",
                                     {"floor": (tick + i) % 11 + 1, "running": i % 2 == 0})
                             for i in range(500)]  # fmt: skip
                    await publish(items)
                    sent += len(items)
                    tick += 1
                    await asyncio.sleep(max(0.0, begin + tick * 0.1 - time.monotonic()))
                return sent

            async def events(stop: asyncio.Event) -> int:
                n = 0
                while not stop.is_set():
                    car = CARS[n % 3]
                    t = int(now_ms())
                    at = await publish([Event(t, car, "elevator", "ebike_detected", "start")])
                    sent_at[car].append(at)
                    await asyncio.sleep(0.15)
                    await publish([Event(int(now_ms()), car, "elevator", "ebike_detected",
                                         "end")])  # fmt: skip
                    await asyncio.sleep(0.15)
                    n += 1
                return n

            stop = asyncio.Event()
            start = time.perf_counter()
            bg = asyncio.create_task(background(stop))
            ev = asyncio.create_task(events(stop))
            await asyncio.sleep(seconds)
            stop.set()
            readings, n_events = await bg, await ev
            elapsed = time.perf_counter() - start
            await asyncio.sleep(3)
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                await http.post(f"http://127.0.0.1:{hook_port}/bare", data=str(now_ms()))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        broker.terminate()
        broker.wait(timeout=10)
        await runner.cleanup()
    # Match each opened alert to the start that raised it, by car and order.
    by_car: dict[str, list[tuple[int, float]]] = {car: [] for car in CARS}
    for alert_id, arrived in sorted(receiver.arrivals.items()):
        by_car[receiver.bodies[alert_id]["device"]].append((alert_id, arrived))
    lat: list[float] = []
    for car in CARS:
        for (_, arrived), sent in zip(by_car[car], sent_at[car], strict=False):
            lat.append(arrived - sent)
    opened = len(receiver.arrivals)
    print(f"latency: {readings / elapsed:,.0f} readings/s background for {elapsed:.0f} s, "
          f"{n_events} e-bike events, {opened} alerts opened and delivered")  # fmt: skip
    print(f"  event -> webhook: p50 {statistics.median(lat):.0f} ms, p99 {pct(lat, 99):.0f} ms, "
          f"max {max(lat):.0f} ms (aim p99 < 250)")  # fmt: skip
    print(f"  baseline bare POST: p50 {statistics.median(receiver.bare):.1f} ms, "
          f"p99 {pct(receiver.bare, 99):.1f} ms")  # fmt: skip
    if opened < n_events:
        print(f"  note: {n_events - opened} starts did not open a new alert (repeats)")


async def transitions(tmp: Path, n: int) -> None:
    url = f"sqlite+aiosqlite:///{tmp / 'transitions.db'}"
    async with open_database(url) as db:
        async with db.session() as s:
            await import_registry(s, load_registry(ROOT / "server/demo_data/shancheng.yaml"))
            s.add(models.OrgChannel(org_id="pc-anju", kind="webhook", target="http://x",
                                    secret="s" * 16))  # fmt: skip
        svc = AlertService(db, default_ladders())
        gates = [f"g-{i}" for i in range(n)]
        t0 = int(now_ms())
        for i, gate in enumerate(gates):
            await svc.on_items(COMMUNITY, [Event(t0 + i, gate, "gate", "forced_open", "instant")])
        async with db.session() as s:
            ids = list((await s.scalars(select(models.Alert.id))).all())
        start = time.perf_counter()
        for alert_id in ids:
            await svc.transition(alert_id, "acknowledged", "pc-anju")
            await svc.transition(alert_id, "resolved", "pc-anju", note="门已关好")
        took = time.perf_counter() - start
        base_start = time.perf_counter()
        for alert_id in ids:
            for state in ("acknowledged", "resolved"):
                async with db.session() as s:
                    await s.execute(update(models.Alert).where(models.Alert.id == alert_id)
                                    .values(state=state))  # fmt: skip
                    step = {"alert_id": alert_id, "t": 1, "to_state": state, "by": "x"}
                    await s.execute(insert(models.AlertTransition).values(**step))
                    await s.execute(insert(models.AlertTimer).values(
                        key=f"b:{alert_id}:{state}", due_t=1, payload="{}"))  # fmt: skip
        base = time.perf_counter() - base_start
    rate, base_rate = 2 * len(ids) / took, 2 * len(ids) / base
    print(f"transitions: {2 * len(ids)} on {len(ids)} alerts: {rate:,.0f}/s; bare SQL of the "
          f"same shape {base_rate:,.0f}/s; ratio {rate / base_rate:.2f}")  # fmt: skip


async def main(quick: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="linli-bench-alerts-"))
    try:
        await latency(tmp, 20 if quick else 60)
        await transitions(tmp, 200 if quick else 1000)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 s of load, 200 alerts")
    asyncio.run(main(parser.parse_args().quick))
