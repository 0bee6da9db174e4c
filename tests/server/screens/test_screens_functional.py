"""Live screens through a real ``linli server`` (mosquitto, SQLite, the demo registry of 22
communities) and headless Chromium at 1920×1080: a screen's token shows its communities and
nothing else, a trapped passenger published as a gateway reaches the panel and the alert band
within a second, a restart of the server under the page shows "connection lost" and then
recovers by itself, and the 22 communities rotate while a critical one stays on screen."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.async_api import Page, async_playwright

from tests.conftest import (
    ADMIN_TOKEN,
    DEMO_REGISTRY,
    Broker,
    ServerProc,
    _start_mosquitto,
    free_port,
    run_linli,
    start_server,
    stop,
    write_settings,
)
from tests.server.web.test_access_functional import envelope, publish

pytestmark = pytest.mark.functional

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Set to a path to refresh the README's screenshot (docs/screen.png) from this test.
SHOT = os.environ.get("LINLI_SCREEN_SHOT")
PAIR = ["longzhu-baihe", "meihuayuan"]  # a screen orders its communities by id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("screens")
    port = free_port()
    broker = Broker(port, _start_mosquitto(tmp, port), tmp)
    http_port = free_port()
    settings = write_settings(tmp, broker, http_port)
    reg = yaml.safe_load(DEMO_REGISTRY.read_text())
    reg["screens"][0]["rotate_s"] = 5
    reg["organisations"].append({"id": "nc-two", "kind": "neighbourhood_centre",
                                 "name": "两小区邻里中心", "district": "shanting"})  # fmt: skip
    reg["neighbourhood_centres"].append({"org": "nc-two", "communities": PAIR})
    reg["screens"].append({"id": "two-hall", "org": "nc-two", "name": "两小区大屏"})
    registry = tmp / "registry.yaml"
    registry.write_text(yaml.safe_dump(reg, allow_unicode=True))
    done = run_linli("registry", "import", str(registry), "--config", str(settings))
    assert done.returncode == 0, done.stderr
    tokens = {}
    for sid in ("shancheng-hall", "two-hall"):
        made = run_linli("screens", "token", sid, "--config", str(settings))
        assert made.returncode == 0, made.stderr
        tokens[sid] = made.stdout.strip().rsplit("#token=", 1)[1]
    made = run_linli("tokens", "create", "pc-anju", "--config", str(settings))
    tokens["pc-anju"] = made.stdout.split()[-1]
    state: dict[str, Any] = {"srv": start_server(tmp, settings, http_port), "tokens": tokens,
             "broker": broker,
             "tmp": tmp, "settings": settings, "http_port": http_port}  # fmt: skip
    try:
        yield state
    finally:
        stop(state["srv"].proc)  # the one running now (the test restarts it)
        broker.proc.terminate()
        broker.proc.wait(timeout=10)


def get(srv: ServerProc, path: str, token: str | None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw.startswith(b"{") else raw
    finally:
        conn.close()


def test_a_screen_token_opens_its_own_screen_and_nothing_else(world: dict[str, Any]) -> None:
    srv, tokens = world["srv"], world["tokens"]
    status, snap = get(srv, "/screen-data/two-hall/snapshot", tokens["two-hall"])
    assert status == 200
    assert [c["id"] for c in snap["communities"]] == PAIR
    status, snap = get(srv, "/screen-data/shancheng-hall/snapshot", tokens["shancheng-hall"])
    assert (status, len(snap["communities"])) == (200, 22)
    # Nothing private on a screen: no evidence, plates or people in any device's fields.
    fields = {k for c in snap["communities"] for d in c["devices"] for k in d["fields"]}
    assert not fields & {"evidence", "plate", "phone", "snapshot", "photo"}
    refusals = {
        ("/screen-data/shancheng-hall/snapshot", tokens["two-hall"]): "not valid for this screen",
        ("/screen-data/shancheng-hall/stream", tokens["two-hall"]): "not valid for this screen",
        ("/screen-data/shancheng-hall/snapshot", None): "missing Authorization",
        ("/screen-data/shancheng-hall/snapshot", "garbage"): "the token is malformed",
        ("/screen-data/no-such/snapshot", tokens["two-hall"]): "not valid for this screen",
        ("/api/alerts", tokens["two-hall"]): "the token is not valid",
        ("/api/overview", tokens["two-hall"]): "the token is not valid",
        ("/screen-data/two-hall/snapshot", tokens["pc-anju"]): "the token is malformed",
    }
    for (path, token), why in refusals.items():
        status, answer = get(srv, path, token)
        assert status == 401, (path, answer)
        assert why in answer["error"], (path, answer)
    # A screen made through the API gets a token once; revoked, it is refused, saying so.
    made = post(srv, "/api/screens", ADMIN_TOKEN, {"id": "tmp-hall", "org": "nc-two"})
    assert (made["id"], made["communities"]) == ("tmp-hall", None)
    assert get(srv, "/screen-data/tmp-hall/snapshot", made["token"])[0] == 200
    assert post(srv, "/api/screens/tmp-hall/revoke", ADMIN_TOKEN, {})["revoked"] == 1
    status, answer = get(srv, "/screen-data/tmp-hall/snapshot", made["token"])
    assert (status, answer["error"]) == (401, "the token was revoked")
    # The operator looks at any screen; the status page's data wants the admin token.
    assert get(srv, "/screen-data/two-hall/snapshot", ADMIN_TOKEN)[0] == 200
    assert get(srv, "/api/overview", None)[0] == 401


def post(srv: ServerProc, path: str, token: str, body: Any) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(),
                     headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        assert resp.status in (200, 201), answer
        return answer
    finally:
        conn.close()


async def wait_for(page: Page, script: str, timeout_ms: float = 10_000) -> None:
    await page.wait_for_function(script, timeout=timeout_ms)


async def test_the_big_screen_live(world: dict[str, Any]) -> None:
    srv, tokens = world["srv"], world["tokens"]
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1920, "height": 1080})
            await page.goto(
                f"http://127.0.0.1:{srv.port}/screen/two-hall#token={tokens['two-hall']}"
            )
            await wait_for(page, "document.querySelector('#conn').dataset.state === 'live'")
            panels = await page.eval_on_selector_all(
                ".panel", "ps => ps.map(p => p.dataset.community)"
            )
            assert panels == PAIR
            assert "#token" not in page.url

            # A trapped passenger, published as meihuayuan's gateway: the panel and the band
            # change within a second.
            trapped = {"dev": "el-1-1", "kind": "elevator", "event": "trapped", "state": "start"}
            sent = time.monotonic()
            publish(
                world["broker"], "linli/v1/meihuayuan/gw-1/up", envelope("meihuayuan", 1, trapped)
            )
            await wait_for(
                page,
                "document.querySelector('.panel[data-community=meihuayuan] "
                ".tile[data-dev=\"el-1-1\"]')?.dataset.state === 'bad'",
                1500,
            )
            assert time.monotonic() - sent < 1.5
            await wait_for(page, "document.querySelector('#band .alert.critical') !== null", 3000)
            band = await page.inner_text("#band")
            assert "困人" in band
            assert "梅花园" in band
            assert await page.eval_on_selector(".panel[data-community=meihuayuan]",
                                               "p => p.classList.contains('critical')")  # fmt: skip
            # The screenshot at 1920×1080: both panels and the band inside the picture.
            shot = world["tmp"] / "screen.png"
            await page.screenshot(path=str(shot))
            for sel in ("#band .alert", ".panel[data-community=meihuayuan]",
                        ".panel[data-community=longzhu-baihe]", "#clock"):  # fmt: skip
                box = await page.locator(sel).first.bounding_box()
                assert box is not None, sel
                assert box["x"] >= 0, sel
                assert box["y"] + box["height"] <= 1080, sel
            assert shot.stat().st_size > 20_000
            if SHOT:
                Path(SHOT).write_bytes(shot.read_bytes())

            # The server goes away under the page: "connection lost since …"; it comes back
            # and the page recovers by itself, with the open alert from the database.
            assert stop(srv.proc) == 0
            await wait_for(page, "document.querySelector('#conn').dataset.state === 'lost'")
            assert "连接中断" in await page.inner_text("#conn")
            world["srv"] = srv = start_server(world["tmp"], world["settings"], world["http_port"])
            await wait_for(page, "document.querySelector('#conn').dataset.state === 'live'", 40_000)
            await wait_for(page, "document.querySelector('#band .alert.critical') !== null", 5000)
            # The gateway's next report fills the tile again.
            publish(
                world["broker"],
                "linli/v1/meihuayuan/gw-1/up",
                envelope("meihuayuan", 2, {**trapped, "event": "trapped", "state": "start"}),
            )
            await wait_for(
                page,
                "document.querySelector('.panel[data-community=meihuayuan] "
                ".tile[data-dev=\"el-1-1\"]')?.dataset.state === 'bad'",
                5000,
            )

            # 22 communities rotate (5 s pages here); the one with the trapped passenger stays.
            await page.goto(
                f"http://127.0.0.1:{srv.port}/screen/shancheng-hall"
                f"#token={tokens['shancheng-hall']}"
            )
            await wait_for(page, "document.querySelector('#conn').dataset.state === 'live'")
            first = await page.inner_text("#page")
            seen = set(
                await page.eval_on_selector_all(".panel", "ps => ps.map(p => p.dataset.community)")
            )
            assert "meihuayuan" in seen
            changed = f"document.querySelector('#page').innerText !== {json.dumps(first)}"
            await wait_for(page, changed, 8000)
            now = set(
                await page.eval_on_selector_all(".panel", "ps => ps.map(p => p.dataset.community)")
            )
            assert "meihuayuan" in now
            others = now - {"meihuayuan"}
            assert others
            assert not others & (seen - {"meihuayuan"})
        finally:
            await browser.close()
