"""Screens (issue 16): does a screen left open grow in memory? Measured in the browser.

    .venv/bin/python bench/screen_memory.py [--minutes 5]

Setup as bench/screens.py (mosquitto, ``linli server``, the demo registry), and one headless
Chromium (Debian's, through Playwright, with ``--js-flags=--expose-gc``) showing the screen of
山城街道邻里中心 at 1920×1080 while the 22 gateways send 2,000 readings a second and a
trapped-passenger alert opens and ends every 20 s. Every 30 s the page's JavaScript heap is
measured after a full garbage collection (``performance.memory.usedJSHeapSize``) with the
number of DOM nodes. A page that keeps growing would show it here within minutes: the load
is a week's worth of a real community's changes every few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt
from playwright.async_api import async_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from screens import Load, elevators, start  # noqa: E402

from collectors.wire import Envelope, Event, encode_envelope  # noqa: E402


async def alerts(port: int, stop: asyncio.Event) -> None:
    seq = 2_000_000
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-alerts") as client:
        while not stop.is_set():
            for state in ("start", "end"):
                seq += 1
                t = int(time.time() * 1000)
                env = Envelope(
                    gw="gw-1",
                    community="meihuayuan",
                    seq=seq,
                    sent=t,
                    items=[Event(t, "el-2-1", "elevator", "trapped", state)],
                )
                await client.publish("linli/v1/meihuayuan/gw-1/up", encode_envelope(env), qos=1)
                await asyncio.sleep(10)


async def main(minutes: float) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="linli-bench-screen-mem-"))
    broker, server, port, http_port, token = start(tmp)
    load = Load(port, elevators())
    stop = asyncio.Event()
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                args=["--no-sandbox", "--js-flags=--expose-gc"],
            )
            page = await browser.new_page(viewport={"width": 1920, "height": 1080})
            await page.goto(f"http://127.0.0.1:{http_port}/screen/shancheng-hall#token={token}")
            await page.wait_for_function("document.querySelector('#conn').dataset.state==='live'")
            background = [asyncio.create_task(alerts(port, stop))]
            samples = []
            begin = time.monotonic()
            while time.monotonic() - begin < minutes * 60:
                await load.run(2000, 30)
                heap = await page.evaluate(
                    "() => { window.gc(); return [performance.memory.usedJSHeapSize, "
                    "document.getElementsByTagName('*').length]; }"
                )
                samples.append((time.monotonic() - begin, heap[0] / 1e6, heap[1]))
                print(
                    f"{samples[-1][0]:5.0f} s: JS heap {samples[-1][1]:.2f} MB, "
                    f"{samples[-1][2]} DOM nodes",
                    flush=True,
                )
            stop.set()
            for t in background:
                t.cancel()
            await browser.close()
        first, last = samples[0], samples[-1]
        print(
            f"after {last[0] / 60:.1f} min at 2,000 readings/s: JS heap {first[1]:.2f} -> "
            f"{last[1]:.2f} MB ({last[1] - first[1]:+.2f}), DOM nodes {first[2]} -> {last[2]}"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
        broker.terminate()
        broker.wait(timeout=10)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=5)
    asyncio.run(main(ap.parse_args().minutes))
