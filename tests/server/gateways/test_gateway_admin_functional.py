"""Gateway management end to end: real mosquitto, ``linli server`` and ``linli gateway`` as
separate processes; configs and commands go in through the server's API and ``linli
gateways``, the gateway's answers come back on ``cmd/ack`` and are read from the API."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml

from tests.conftest import (
    ADMIN_TOKEN,
    ROOT,
    Broker,
    ServerProc,
    linli,
    run_linli,
    server_on,
    stop,
)
from tests.pipeline import COMMUNITY, get_json, site_for, speakers, wait_for

pytestmark = pytest.mark.functional

TOKEN = ADMIN_TOKEN
BASE = f"/api/gateways/{COMMUNITY}/gw-1"


def call(
    server: ServerProc, method: str, path: str, body: Any = None, *, token: str | None = TOKEN
) -> tuple[int, Any]:
    """One API call; (status, decoded JSON body)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def answered(server: ServerProc, path: str, pick: Any) -> dict[str, Any]:
    """Wait until what ``pick`` selects from GET ``path`` carries the gateway's answer."""
    found: dict[str, Any] = {}

    def has_ack() -> bool:
        status, body = call(server, "GET", path)
        assert status == 200, body
        found.update(pick(body) or {})
        return found.get("ack") is not None

    wait_for(has_ack, 15, f"the gateway's answer on {path}")
    return found


def version(body: dict[str, Any], v: int) -> dict[str, Any] | None:
    return next((x for x in body["versions"] if x["version"] == v), None)


@pytest.fixture
def admin_server(tmp_path: Path, mosquitto: Broker) -> Any:
    server = server_on(tmp_path, mosquitto)
    wait_for(lambda: get_json(f"{server.url}/healthz")["gateway_link"]["connected"], what="link")
    yield server
    assert stop(server.proc) == 0, server.log.read_text()[-3000:]


async def test_configs_and_commands_through_the_api_reach_the_gateway_and_its_answers_return(
    tmp_path: Path, mosquitto: Broker, admin_server: ServerProc
) -> None:
    srv = admin_server
    site = site_for(tmp_path, mosquitto, health_interval_s=0.5)
    log = tmp_path / "gateway.log"
    with log.open("w") as out:
        gw = subprocess.Popen(
            linli("gateway", "--config", str(site)), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    env = {"LINLI_ADMIN_TOKEN": TOKEN}
    settings = str(srv.settings)
    try:
        # Version 2 gives the north gate an MQTT release relay on the community's broker.
        relay = "relay/gt-north"
        good = {
            "config_version": 2,
            "health_interval_s": 0.5,
            "edge": {"fire_lane": {"dwell_s": 30}},
            "outputs": [
                {"device": "gt-north", "action": action,
                 "mqtt": {"url": mosquitto.url, "topic": relay, "payload": action}}
                for action in ("unlock", "lock")
            ] + speakers([{"id": "fl-1", "kind": "fire_lane"},
                          {"id": "fl-2", "kind": "fire_lane"}], mosquitto),  # the lanes keep theirs
        }  # fmt: skip
        status, sent = call(srv, "PUT", f"{BASE}/config", good)
        assert status == 202, sent
        assert (sent["version"], sent["ack"]) == (2, None)
        ack = answered(srv, f"{BASE}/config", lambda b: version(b, 2))["ack"]
        assert (ack["ok"], ack["running"]) == (True, 2), ack
        wait_for(
            lambda: call(srv, "GET", f"{BASE}/config")[1]["running"] == 2,
            10,
            "the health item to say version 2",
        )

        # The server takes it (the shape is right); the gateway refuses it and keeps 2.
        bad_gate = {"config_version": 3, "edge": {"fire_release": {"gates": ["el-1-1"]}}}
        status, sent = call(srv, "PUT", f"{BASE}/config", bad_gate)
        assert status == 202, sent
        ack = answered(srv, f"{BASE}/config", lambda b: version(b, 3))["ack"]
        assert (ack["ok"], ack["running"]) == (False, 2)
        assert "'el-1-1' is not a gate on this gateway" in ack["message"]

        # A command acts on site: the relay topic gets "unlock", the answer says done. A spy
        # on the broker captures the signed command on its way.
        cmd_topic = f"linli/v1/{COMMUNITY}/gw-1/cmd"
        async with (
            aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="test-relay") as relay_c,
            aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="test-spy") as spy,
        ):
            await relay_c.subscribe(relay, qos=1)
            await spy.subscribe(cmd_topic, qos=1)
            unlock = {"op": "unlock", "device": "gt-north"}
            status, cmd = call(srv, "POST", f"{BASE}/commands", unlock)
            assert status == 202, cmd
            assert cmd["id"].startswith("cmd-")
            assert cmd["expires_t"] - cmd["sent_t"] == 60_000
            async with asyncio.timeout(10):
                message = await anext(aiter(relay_c.messages))
                captured = await anext(aiter(spy.messages))
            assert message.payload == b"unlock"
            done = await asyncio.to_thread(
                answered, srv, f"{BASE}/commands/{cmd['id']}", lambda b: b
            )
            assert (done["ack"]["ok"], done["ack"]["message"]) == (True, "done")

            # Issue 13's attacks, by a client the broker let in: an unsigned unlock, the
            # captured one replayed, claimed for another gateway, tampered with; a forged config.
            assert isinstance(captured.payload, bytes)
            other = f"linli/v1/{COMMUNITY}/gw-2/cmd"
            attacks = [
                (cmd_topic, json.dumps({"id": "x-1", **unlock}).encode(), "not a signed message"),
                (cmd_topic, captured.payload, "replayed"),
                (cmd_topic, captured.payload.replace(cmd_topic.encode(), other.encode()),
                 "signed for 'linli/v1/meihuayuan/gw-2/cmd'"),
                (cmd_topic, captured.payload.replace(b"gt-north", b"gt-south"),
                 "does not verify"),
                (f"linli/v1/{COMMUNITY}/gw-1/config", b'{"config_version": 9}',
                 "not a signed message"),
            ]  # fmt: skip
            async with aiomqtt.Client(
                "127.0.0.1", mosquitto.port, identifier="test-attacker"
            ) as attacker:
                await attacker.subscribe(f"linli/v1/{COMMUNITY}/gw-1/cmd/ack", qos=1)
                answers = aiter(attacker.messages)
                for topic, payload, why in attacks:
                    await attacker.publish(topic, payload, qos=1, retain=topic.endswith("config"))
                    async with asyncio.timeout(10):
                        reply = await anext(answers)
                    assert isinstance(reply.payload, bytes)
                    answer = json.loads(reply.payload)
                    assert answer["ok"] is False, answer
                    assert why in answer["error"], (why, answer)
            await asyncio.sleep(1)
            with pytest.raises(TimeoutError):  # no relay moved after the legitimate unlock
                async with asyncio.timeout(0.5):
                    await anext(aiter(relay_c.messages))
        log_text = log.read_text()
        assert "command on linli/v1/meihuayuan/gw-1/cmd refused: not a signed message" in log_text

        # The gateway's own refusal comes back as the result: an elevator cannot be unlocked.
        status, cmd = call(srv, "POST", f"{BASE}/commands", {"op": "unlock", "device": "el-1-1"})
        assert status == 202, cmd
        refused = await asyncio.to_thread(
            answered, srv, f"{BASE}/commands/{cmd['id']}", lambda b: b
        )
        assert refused["ack"]["ok"] is False
        assert "unlock is for a gate; el-1-1 is of kind elevator" in refused["ack"]["message"]

        # linli gateways: a YAML file, a command, and the summary.
        cfg = tmp_path / "v4.yaml"
        cfg.write_text(yaml.safe_dump({**good, "config_version": 4}))
        done_cli = await asyncio.to_thread(
            run_linli, "gateways", "--config", settings, "config", COMMUNITY, "gw-1", str(cfg),
            env=env,
        )  # fmt: skip
        assert done_cli.returncode == 0, done_cli.stderr
        assert json.loads(done_cli.stdout)["ack"]["running"] == 4
        ping = await asyncio.to_thread(
            run_linli, "gateways", "--config", settings, "command", COMMUNITY, "gw-1", "ping",
            env=env,
        )  # fmt: skip
        assert ping.returncode == 0, ping.stderr
        assert json.loads(ping.stdout)["ack"]["message"] == "pong"
        cfg.write_text(yaml.safe_dump({**bad_gate, "config_version": 5}))
        refused_cli = await asyncio.to_thread(
            run_linli, "gateways", "--config", settings, "config", COMMUNITY, "gw-1", str(cfg),
            env=env,
        )  # fmt: skip
        assert refused_cli.returncode == 1, refused_cli.stdout
        assert "is not a gate" in refused_cli.stdout
        cfg.write_text("config_version: [6\n")
        broken = await asyncio.to_thread(
            run_linli, "gateways", "--config", settings, "config", COMMUNITY, "gw-1", str(cfg),
            env=env,
        )  # fmt: skip
        assert broken.returncode == 2
        assert f"{cfg}:" in broken.stderr
        assert "not valid YAML" in broken.stderr
        show = await asyncio.to_thread(
            run_linli, "gateways", "--config", settings, "show", COMMUNITY, "gw-1", env=env
        )
        assert show.returncode == 0, show.stderr
        shown = json.loads(show.stdout)
        assert [v["version"] for v in shown["versions"]] == [5, 4, 3, 2]
        assert [c["op"] for c in shown["commands"]] == ["ping", "unlock", "unlock"]
        assert shown["running"] == 4
    finally:
        assert stop(gw) == 0, log.read_text()[-3000:]


def test_bad_requests_get_a_clear_4xx_and_change_nothing(
    mosquitto: Broker, admin_server: ServerProc
) -> None:
    srv = admin_server
    status, before = call(srv, "PUT", f"{BASE}/config", {"config_version": 7})
    assert status == 202, before
    cases: list[tuple[str, str, Any, str | None, int, str]] = [
        ("PUT", f"{BASE}/config", {"config_version": 8}, None, 401, "Authorization: Bearer"),
        ("PUT", f"{BASE}/config", {"config_version": 8}, "wrong-token", 401, "not valid"),
        ("PUT", f"{BASE}/config", b'{"config_version": 8', TOKEN, 400, "body is not JSON"),
        ("PUT", f"{BASE}/config", [1, 2], TOKEN, 400, "must be a JSON object"),
        ("PUT", f"{BASE}/config", {"config_version": "8"}, TOKEN, 400, "config_version: must"),
        ("PUT", f"{BASE}/config", {"config_version": 0}, TOKEN, 400, "config_version: must"),
        ("PUT", f"{BASE}/config", {"config_version": 8, "uplink": {}}, TOKEN, 400,
         "uplink: not a section a remote config may carry"),
        ("PUT", f"{BASE}/config", {"config_version": 7}, TOKEN, 409,
         "config_version 7 is not newer than 7"),
        ("PUT", f"/api/gateways/{COMMUNITY}/gw-9/config", {"config_version": 8}, TOKEN, 404,
         "no gateway 'gw-9'"),
        ("POST", f"{BASE}/commands", {"op": "explode"}, TOKEN, 400, "$.op"),
        ("POST", f"{BASE}/commands", {"op": "unlock"}, TOKEN, 400, "device: unlock needs"),
        ("POST", f"{BASE}/commands", {"op": "ping", "device": "gt-north"}, TOKEN, 400,
         "device: ping takes no device"),
        ("POST", f"{BASE}/commands", {"op": "unlock", "device": "gt-east"}, TOKEN, 404,
         "no device 'gt-east'"),
        ("POST", f"{BASE}/commands", {"op": "ping", "ttl_s": 0}, TOKEN, 400, "ttl_s: 0 is outside"),
        ("POST", f"{BASE}/commands", {"op": "ping", "colour": "red"}, TOKEN, 400, "colour"),
        ("POST", f"{BASE}/commands", b"\xff", TOKEN, 400, "body is not JSON"),
        ("GET", f"{BASE}/commands/cmd-nope", None, TOKEN, 404, "no command 'cmd-nope'"),
        ("GET", f"{BASE}/commands?limit=0", None, TOKEN, 400, "limit=0 is outside"),
    ]  # fmt: skip
    for method, path, body, token, want, words in cases:
        status, answer = call(srv, method, path, body, token=token)
        assert (status, words in answer.get("error", "")) == (want, True), (path, body, answer)
    _, configs = call(srv, "GET", f"{BASE}/config")
    assert [v["version"] for v in configs["versions"]] == [7]
    _, commands = call(srv, "GET", f"{BASE}/commands")
    assert commands["commands"] == []

    # Without the broker nothing can be published: 503, and nothing is recorded.
    mosquitto.stop()
    wait_for(
        lambda: not get_json(f"{srv.url}/healthz")["gateway_link"]["connected"], what="link down"
    )
    status, answer = call(srv, "PUT", f"{BASE}/config", {"config_version": 8})
    assert status == 503, answer
    assert "not connected to the MQTT broker" in answer["error"]
    status, answer = call(srv, "POST", f"{BASE}/commands", {"op": "ping"})
    assert status == 503, answer
    _, configs = call(srv, "GET", f"{BASE}/config")
    assert [v["version"] for v in configs["versions"]] == [7]
    assert call(srv, "GET", f"{BASE}/commands")[1]["commands"] == []
    mosquitto.start()
    time.sleep(0.1)
