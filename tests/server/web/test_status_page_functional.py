"""The status page in a real headless Chromium (Debian's, driven by Playwright).

A device changes (a reading published to the real broker) and its tile on the open page
changes, without a reload; the language switch turns the page to English and back.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
from playwright.async_api import Browser, async_playwright, expect

from tests.conftest import ADMIN_TOKEN, Broker, ServerProc, start_server, stop
from tests.test_pipeline_functional import envelope, get_json, wait_for

pytestmark = pytest.mark.functional

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags that keep Chromium off the network this machine does not have (see docs/testing.md).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()


async def publish_lane(broker: Broker, seq: int, occupied: bool, dwell: int) -> None:
    env = envelope(seq)
    env["items"][0]["t"] = int(time.time() * 1000)
    env["items"][0]["fields"] = {"occupied": occupied, "dwell_s": dwell}
    if occupied:
        env["items"][0]["fields"]["object"] = "vehicle"
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"page-test-{seq}") as c:
        await c.publish("linli/v1/meihuayuan/gw-1/up", json.dumps(env).encode(), qos=1)


async def test_tile_changes_live_when_the_device_changes(
    browser: Browser, mosquitto: Broker, server: ServerProc
) -> None:
    wait_for(lambda: get_json(f"{server.url}/healthz")["mqtt_connected"], what="server MQTT")
    page = await browser.new_page()
    await page.goto(server.url + f"/#token={ADMIN_TOKEN}")
    tile = page.locator('[data-dev="meihuayuan/fl-1"]')
    await expect(tile.locator(".main")).to_have_text("暂无数据")  # nothing reported yet
    await expect(page.locator("section.community")).to_have_count(22)

    await publish_lane(mosquitto, 1, occupied=True, dwell=75)
    await expect(tile.locator(".main")).to_have_text("占用", timeout=5000)
    await expect(tile.locator(".sub")).to_contain_text("车辆 已停 75 秒")
    await expect(tile).to_have_class("tile warn")

    await publish_lane(mosquitto, 2, occupied=False, dwell=0)
    await expect(tile.locator(".main")).to_have_text("畅通", timeout=5000)
    await expect(tile).to_have_class("tile ok")
    await expect(page.locator("#sum-devices")).to_have_text("设备 1/156 在线")

    await page.locator("#lang").click()
    await expect(page.locator("h1")).to_have_text("Linli · Live community safety")
    await expect(tile.locator(".main")).to_have_text("clear")
    await expect(page.locator('section[data-community="meihuayuan"] .cname')).to_have_text(
        "Meihuayuan"
    )
    # The page did not reload: the stream kept running (the connection shows live).
    await expect(page.locator("#conn")).to_have_text("live")


async def test_page_catches_up_after_a_server_restart(
    browser: Browser, mosquitto: Broker, server: ServerProc, tmp_path: Path
) -> None:
    """A change published while the server is down reaches the open page after the restart:
    the broker kept it for the server's persistent session, and the page reloads its state
    when its stream reconnects."""
    wait_for(lambda: get_json(f"{server.url}/healthz")["mqtt_connected"], what="server MQTT")
    page = await browser.new_page()
    await page.goto(server.url + f"/#token={ADMIN_TOKEN}")
    tile = page.locator('[data-dev="meihuayuan/fl-1"]')
    await publish_lane(mosquitto, 1, occupied=True, dwell=75)
    await expect(tile.locator(".main")).to_have_text("占用", timeout=15000)  # a loaded CI machine

    assert stop(server.proc) == 0
    await expect(page.locator("#conn")).to_have_text("连接中断", timeout=10000)
    await publish_lane(mosquitto, 2, occupied=False, dwell=0)  # while the server is down
    restarted = start_server(tmp_path, server.settings, server.port)
    try:
        await expect(tile.locator(".main")).to_have_text("畅通", timeout=20000)
        await expect(page.locator("#conn")).to_have_text("实时连接")
        stats = get_json(f"{restarted.url}/api/ingest")
        assert stats["duplicates"] == 0  # the seq mark was saved on shutdown and reloaded
        assert stats["gaps"] == 0
    finally:
        assert stop(restarted.proc) == 0


async def test_without_a_valid_token_the_page_asks_for_one_and_shows_nothing(
    browser: Browser, server: ServerProc
) -> None:
    """Issue 13: the page at / reads the API with a token, and shows no community without."""
    page = await browser.new_page()
    await page.goto(server.url + "/")
    await expect(page.locator("#token-form label")).to_contain_text("请输入访问令牌")
    await expect(page.locator("section.community")).to_have_count(0)
    await page.goto(server.url + "/#token=not-a-token")
    await page.reload()
    await expect(page.locator("#token-form label")).to_contain_text("令牌无效")
    await expect(page.locator("section.community")).to_have_count(0)
    # Entering the right one opens the page; the address bar never shows it.
    await page.locator("#token-form input").fill(ADMIN_TOKEN)
    await page.locator("#token-form button").click()
    await expect(page.locator("section.community")).to_have_count(22)
    assert "token" not in page.url
