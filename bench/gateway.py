"""The gateway (issue 4): how fast a backlog drains, its memory and CPU with 200 devices.

    .venv/bin/python bench/gateway.py [--quick]

Setup: a real mosquitto (Debian's) on a free loopback port, started by this script, and
the gateway's own code; every figure of a comparison comes from this one run.

1. **Drain after a 10-minute outage at 200 devices.** A fresh disk queue is filled with
   what 200 devices report in 10 minutes at one reading per second each (120,000 readings,
   about 220 bytes each, 1 in 100 an event), through ``DiskQueue.put`` as the collectors
   do. Then the uplink connects and drains it: items per second until the queue is empty
   (every batch acknowledged and deleted). *Baseline*: the same envelopes, encoded
   beforehand, published with QoS 1 by a bare aiomqtt client to the same broker, awaiting
   each PUBACK with the same window of 4. Run A-B-B-A; the ratio is of summed rates'
   times. Aim ≥ 0.7.
2. **Memory and CPU with 200 devices.** ``linli gateway`` as its own process with 200
   simulated devices (100 elevators, 60 fire lanes, 40 gates), its uplink on the broker,
   for 60 s (20 s with ``--quick``): resident memory (VmRSS, VmHWM) at the end, and CPU
   seconds (user + system, start-up and the simulators' own stepping included) per 10,000
   items produced.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

import aiomqtt
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collectors.wire import Event, Item, Reading  # noqa: E402
from gateway.queue import Batch, DiskQueue  # noqa: E402
from gateway.site import SimDeviceConfig, SimulatorConfig, SiteConfig, UplinkConfig  # noqa: E402
from gateway.uplink import Uplink  # noqa: E402

T0 = 1_795_300_000_000
DEVICES = 200
WINDOW = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.DEVNULL)
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def outage_items(seconds: int) -> list[Item]:
    rng = random.Random(4)
    items: list[Item] = []
    for s in range(seconds):
        for d in range(DEVICES):
            t = T0 + s * 1000 + d
            if rng.random() < 0.01:
                items.append(Event(t, f"el-{d}", "elevator", "door_close_fault", "start",
                                   {"code": 2}))  # fmt: skip
            else:
                items.append(
                    Reading(t, f"el-{d}", "elevator",
                            {"running": True, "direction": "up", "floor": s % 30,
                             "door_zone": False, "door": "closed", "occupied": True,
                             "service_mode": "normal", "power": "mains"})
                )  # fmt: skip
    return items


def site(tmp: Path, port: int) -> SiteConfig:
    return SiteConfig(
        version=1,
        gateway="gw-1",
        community="c-1",
        uplink=UplinkConfig(f"mqtt://127.0.0.1:{port}"),
        state_dir=str(tmp),
        collectors=[SimulatorConfig(devices=[SimDeviceConfig("el-0", "elevator")])],
    )


async def fill(queue: DiskQueue, items: list[Item]) -> float:
    start = time.perf_counter()
    # Many collectors put at once; each put returns when its group commit is durable.
    chunk = 200
    for i in range(0, len(items), chunk):
        await asyncio.gather(*(queue.put(it) for it in items[i : i + chunk]))
    return time.perf_counter() - start


async def drain(
    tmp: Path, port: int, items: list[Item], run: int, sync: Literal["full", "normal"]
) -> float:
    qdir = tmp / f"drain-{sync}-{run}"
    queue = DiskQueue(qdir / "q.sqlite3", gateway="gw-1", community="c-1", synchronous=sync)
    await queue.open()
    filled = await fill(queue, items)
    print(f"  filled {len(items):,} items in {filled:.1f} s "
          f"({len(items) / filled:,.0f} commits of items/s)")  # fmt: skip
    # The uplink would start publishing as soon as it connects: hold the queue's first cut
    # until the connection is up, so that connecting is not timed.
    uplink = Uplink(site(qdir, port), queue, window=WINDOW)
    gate = asyncio.Event()
    cut = queue.next_batch

    async def held(*args: int) -> Batch | None:
        await gate.wait()
        return await cut(*args)

    queue.next_batch = held  # type: ignore[method-assign]
    task = asyncio.create_task(uplink.run())
    await uplink.connected.wait()
    start = time.perf_counter()
    gate.set()
    while uplink.published_items < len(items):  # noqa: ASYNC110 (a counter, polled)
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - start
    batches = await queue.inflight()
    assert not batches
    assert queue.pending == 0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await queue.close()
    return elapsed


async def envelopes(tmp: Path, items: list[Item]) -> list[Batch]:
    queue = DiskQueue(tmp / "envelopes" / "q.sqlite3", gateway="gw-1", community="c-1")
    await queue.open()
    await fill(queue, items)
    out: list[Batch] = []
    while queue.pending:
        batch = await queue.next_batch(500, 128 * 1024, T0)
        assert batch is not None
        out.append(batch)
    await queue.close()
    return out


async def raw_publish(port: int, batches: list[Batch]) -> float:
    window = asyncio.Semaphore(WINDOW)
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-raw") as client:

        async def one(b: Batch) -> None:
            try:
                await client.publish("linli/v1/c-1/gw-raw/up", b.payload, qos=1)
            finally:
                window.release()

        start = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for b in batches:
                await window.acquire()
                tg.create_task(one(b))
        return time.perf_counter() - start


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = 100  # os.sysconf("SC_CLK_TCK") on Linux
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_mem_kb(pid: int) -> dict[str, int]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: int(v) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M)}


def gateway_process(tmp: Path, port: int, seconds: float) -> None:
    devices = (
        [{"id": f"el-{i}", "kind": "elevator", "floors": 30} for i in range(100)]
        + [{"id": f"fl-{i}", "kind": "fire_lane"} for i in range(60)]
        + [{"id": f"gt-{i}", "kind": "gate"} for i in range(40)]
    )
    conf = {
        "version": 1,
        "gateway": "gw-1",
        "community": "c-1",
        "state_dir": str(tmp / "gw-state"),
        "uplink": {"url": f"mqtt://127.0.0.1:{port}"},
        "health_interval_s": 10,
        "collectors": [{"type": "simulator", "seed": 1, "devices": devices}],
        # Speakers on the lanes, as a real site has them (the site check requires them).
        "outputs": [
            {
                "device": d["id"],
                "action": "voice_warning",
                "mqtt": {
                    "url": f"mqtt://127.0.0.1:{port}",
                    "topic": f"speaker/{d['id']}",
                    "payload": "play",
                },
            }
            for d in devices
            if d["kind"] == "fire_lane"
        ],
    }
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(conf))
    log = tmp / "gateway.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from server.cli import main; import sys; sys.exit(main())",
             "gateway", "--config", str(path)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    time.sleep(seconds)
    cpu = proc_cpu_s(proc.pid)
    mem = proc_mem_kb(proc.pid)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    match = re.search(r"stopped: (\d+) items produced", log.read_text())
    assert match, log.read_text()[-2000:]
    produced = int(match.group(1))
    print(f"gateway, {DEVICES} simulated devices, {seconds:.0f} s:")
    print(f"  produced {produced:,} items ({produced / seconds:,.0f}/s)")
    print(f"  RSS {mem['VmRSS'] / 1024:.1f} MB (peak {mem['VmHWM'] / 1024:.1f} MB; aim <= 80)")
    print(f"  CPU {cpu:.2f} s = {cpu / produced * 10_000:.2f} s per 10,000 items")


async def main(quick: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="linli-bench-gw-"))
    broker, port = start_broker(tmp)
    try:
        seconds = 120 if quick else 600
        items = outage_items(seconds)
        print(f"backlog: {seconds} s at {DEVICES} devices = {len(items):,} items")
        batches = await envelopes(tmp, items)
        print(f"  {len(batches)} envelopes, {sum(len(b.payload) for b in batches) / 1e6:.1f} MB")
        for sync in ("full", "normal"):
            drain_s: list[float] = []
            raw_s: list[float] = []
            for run, kind in enumerate(("raw", "drain", "drain", "raw")):
                if kind == "raw":
                    raw_s.append(await raw_publish(port, batches))
                    print(f"  raw QoS 1 publish: {len(items) / raw_s[-1]:,.0f} items/s")
                else:
                    elapsed = await drain(tmp, port, items, run, sync)
                    drain_s.append(elapsed)
                    print(f"  gateway drain (synchronous={sync}): "
                          f"{len(items) / elapsed:,.0f} items/s")  # fmt: skip
            ratio = sum(raw_s) / sum(drain_s)
            print(f"synchronous={sync}: drain rate / raw publish rate = {ratio:.2f} (aim >= 0.7)")
        gateway_process(tmp, port, 20 if quick else 60)
    finally:
        broker.terminate()
        broker.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 2-minute backlog, 20 s run")
    asyncio.run(main(parser.parse_args().quick))
