"""The notifier against real receivers (aiohttp servers on loopback) and a real SQLite file:
a WeCom/DingTalk-style robot, a signed webhook, an endpoint that never answers and one that
is refused; retries, dead letters, every attempt recorded, one organisation's dead
endpoint never delaying another's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select

from server.alerting.notifier import Notifier, NotifyPolicy, robot_text, sign
from server.store import models
from server.store.db import Database, open_database
from tests.conftest import free_port

pytestmark = pytest.mark.functional

ALERT = {"id": 7, "rule": "trapped", "severity": "critical", "community": "meihuayuan",
         "device": "el-1-1", "state": "open", "change": "opened", "t": 1}  # fmt: skip


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with open_database(f"sqlite+aiosqlite:///{tmp_path / 'n.db'}") as database:
        yield database


async def add(db: Database, org: str, kind: str, target: str, secret: str = "") -> int:
    async with db.session() as s:
        if await s.get(models.Alert, 7) is None:
            alert = models.Alert(id=7, rule="trapped", community_id="meihuayuan",
                                 device="el-1-1", severity="critical", state="open",
                                 opened_t=1, updated_t=1)  # fmt: skip
            s.add(alert)
        ch = models.OrgChannel(org_id=org, kind=kind, target=target, secret=secret)
        s.add(ch)
        await s.flush()
        row = models.Delivery(alert_id=7, org_id=org, channel_id=ch.id,
                              body=json.dumps(ALERT, ensure_ascii=False), status="pending",
                              created_t=1, next_t=0)  # fmt: skip
        s.add(row)
        await s.flush()
        return row.id


async def test_robots_webhooks_dead_letters_and_no_head_of_line_blocking(db: Database) -> None:
    got: dict[str, list[tuple[float, Any, dict[str, str]]]] = {"robot": [], "hook": []}

    async def robot(request: web.Request) -> web.Response:
        got["robot"].append((time.monotonic(), await request.json(), dict(request.headers)))
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def hook(request: web.Request) -> web.Response:
        got["hook"].append((time.monotonic(), await request.read(), dict(request.headers)))
        return web.Response(status=200)

    async def refuse(_request: web.Request) -> web.Response:
        return web.json_response({"errcode": 310000, "errmsg": "keywords not in content"})

    async def hang(_request: web.Request) -> web.Response:
        await asyncio.sleep(3)  # longer than the notifier's timeout (1 s)
        return web.Response(status=200)

    app = web.Application()
    for path, handler in (("/robot", robot), ("/hook", hook), ("/refuse", refuse),
                          ("/hang", hang)):  # fmt: skip
        app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    closed = f"http://127.0.0.1:{free_port()}/nobody"  # nothing listens there
    hanging = await add(db, "org-hang", "webhook", f"{base}/hang", "h" * 16)
    dead = await add(db, "org-dead", "webhook", closed, "d" * 16)
    refused = await add(db, "org-refuse", "robot", f"{base}/refuse")
    rob = await add(db, "org-robot", "robot", f"{base}/robot")
    web_id = await add(db, "org-hook", "webhook", f"{base}/hook", "s" * 16)

    notifier = Notifier(db, policy=NotifyPolicy(max_attempts=3, backoff_min_s=0.1,
                                                backoff_max_s=0.2, timeout_s=1.0))  # fmt: skip
    start = time.monotonic()
    task = asyncio.create_task(notifier.run())
    try:
        for _ in range(100):
            await asyncio.sleep(0.1)
            async with db.session() as s:
                states = dict((await s.execute(
                    select(models.Delivery.id, models.Delivery.status))).all())  # fmt: skip
            if "pending" not in states.values():
                break
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await runner.cleanup()
    assert states == {hanging: "dead", dead: "dead", refused: "dead", rob: "delivered",
                      web_id: "delivered"}  # fmt: skip
    # The working endpoints were served at once, not after the hanging one's timeouts.
    assert got["robot"][0][0] - start < 0.8
    assert got["hook"][0][0] - start < 0.8
    text = got["robot"][0][1]
    assert text == {"msgtype": "text", "text": {"content": robot_text(ALERT)}}
    assert "【紧急】电梯困人（新告警）" in text["text"]["content"]
    raw, headers = got["hook"][0][1], got["hook"][0][2]
    assert headers["X-Linli-Signature"] == sign("s" * 16, raw)
    assert headers["X-Linli-Delivery"] == str(web_id)
    async with db.session() as s:
        attempts = (await s.scalars(select(models.DeliveryAttempt).order_by(
            models.DeliveryAttempt.id))).all()  # fmt: skip
        rows = {d.id: d for d in (await s.scalars(select(models.Delivery))).all()}
    by_delivery: dict[int, list[models.DeliveryAttempt]] = {}
    for a in attempts:
        by_delivery.setdefault(a.delivery_id, []).append(a)
    assert [len(by_delivery[i]) for i in (hanging, dead, refused, rob, web_id)] == [3, 3, 3, 1, 1]
    assert "TimeoutError" in rows[hanging].last_error
    assert "ClientConnectorError" in rows[dead].last_error
    assert "robot errcode 310000" in rows[refused].last_error
    assert all(not a.ok for i in (hanging, dead, refused) for a in by_delivery[i])
    assert rows[rob].delivered_t is not None
    assert (notifier.sent, notifier.dead) == (2, 3)


def documented_check(clock_offset_s: float = 0.0) -> Any:
    """The receiver's check exactly as docs/alerts.md prints it, its clock moved by
    ``clock_offset_s`` (how a replay minutes later looks to the receiver)."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "alerts.md").read_text()
    code = text.split("**Checking a webhook**", 1)[1].split("```python\n", 1)[1].split("```")[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/alerts.md", "exec"), namespace)
    namespace["time"] = type("Clock", (), {"time": staticmethod(lambda: time.time() +
                                                                clock_offset_s)})  # fmt: skip
    return namespace["check_webhook"]


async def test_a_captured_webhook_replayed_twice_or_later_is_not_acted_on(db: Database) -> None:
    """Issue 13: the signature covers timestamp, delivery id and body; the documented
    receiver check acts on a delivery once and refuses it 6 minutes later."""
    secret = "w" * 16
    check = documented_check()
    seen: set[str] = set()
    acted: list[bytes] = []
    captured: list[tuple[bytes, dict[str, str]]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        captured.append((body, dict(request.headers)))
        verdict = check(secret, request.headers, body, seen)
        if verdict == "ok":
            acted.append(body)
        return web.Response(status=200 if verdict in ("ok", "duplicate") else 401, text=verdict)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}/hook"
    delivery = await add(db, "org-hook", "webhook", url, secret)
    notifier = Notifier(db, policy=NotifyPolicy(max_attempts=3, backoff_min_s=0.1,
                                                backoff_max_s=0.2, timeout_s=1.0))  # fmt: skip
    task = asyncio.create_task(notifier.run())
    try:
        for _ in range(100):
            if acted:
                break
            await asyncio.sleep(0.05)
        assert len(acted) == 1
        body, headers = captured[0]
        assert headers["X-Linli-Delivery"] == str(delivery)
        replay = {k: headers[k] for k in headers if k.startswith("X-Linli")}
        async with aiohttp.ClientSession() as http:
            for _ in range(2):  # replayed at once, twice
                async with http.post(url, data=body, headers=replay) as resp:
                    assert (resp.status, await resp.text()) == (200, "duplicate")
            # A body changed under the captured signature.
            forged = body.replace(b'"trapped"', b'"gate_forced"')
            async with http.post(url, data=forged, headers=replay) as resp:
                assert (resp.status, await resp.text()) == (401, "bad signature")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await runner.cleanup()
    assert len(acted) == 1
    # Six minutes later, at a receiver that has forgotten the id (restarted): still refused.
    later = documented_check(clock_offset_s=360)
    assert later(secret, replay, body, set()) == "stale timestamp"
    # The deprecated header is still sent for one release.
    assert headers["X-Linli-Signature"] == sign(secret, body)
