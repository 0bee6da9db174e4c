"""Broker accounts (issue 13, item 1) on a real mosquitto run with the password and ACL files
Linli generates: the server and a provisioned gateway deliver everything; an anonymous
client, a gateway publishing into another community, and a rotated-away password are
refused by the broker, without a broker restart (SIGHUP), and nothing of theirs is stored."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from server.gateways.broker_auth import hash_password
from tests.conftest import (
    DEMO_REGISTRY,
    ROOT,
    Broker,
    free_port,
    linli,
    run_linli,
    start_mosquitto_conf,
    start_server,
    stop,
    write_settings,
)
from tests.pipeline import COMMUNITY, assert_all_stored, get_json, site_for, wait_for

pytestmark = pytest.mark.functional


def password_of(output: str) -> str:
    found = re.search(r"password: (\S+)", output)
    assert found, output
    return found[1]


def connect(port: int, username: str | None, password: str | None) -> tuple[mqtt.Client, int]:
    """A client and its CONNACK reason code (0: accepted)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{time.time_ns()}")
    if username is not None:
        client.username_pw_set(username, password)
    codes: list[int] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: codes.append(reason.value)
    client.connect("127.0.0.1", port)
    client.loop_start()
    deadline = time.monotonic() + 5
    while not codes and time.monotonic() < deadline:
        time.sleep(0.05)
    return client, codes[0] if codes else -1


def test_the_password_hash_is_mosquittos_own() -> None:
    # mosquitto_passwd wrote this line for gw1 / secret123 (salt 81BErmhYuihgJG3q).
    import base64  # noqa: PLC0415

    line = ("$7$101$81BErmhYuihgJG3q$1IZyZCYoNNEyvwRghSAcvNtFbfX/Qjpw7hw9qu6tIiIsMkF8WRKlino"
            "lIVn7IzVblYHTfmAE3bzwdUB04J07Sw==")  # fmt: skip
    assert hash_password("secret123", salt=base64.b64decode("81BErmhYuihgJG3q")) == line


@pytest.mark.timeout(180)
def test_only_provisioned_accounts_publish_and_only_their_own(tmp_path: Path) -> None:
    port, http_port = free_port(), free_port()
    auth, pid_file = tmp_path / "auth", tmp_path / "mosquitto.pid"
    placeholder = subprocess.Popen(["true"])  # the broker starts once its files exist
    placeholder.wait()
    broker = Broker(port, placeholder)
    settings = write_settings(tmp_path, broker, http_port)
    settings.write_text(settings.read_text() + f'broker_auth_dir = "{auth}"\n')
    cfg = ("--config", str(settings))
    assert run_linli("registry", "import", str(DEMO_REGISTRY), *cfg).returncode == 0
    made = run_linli("broker", "user", "server", *cfg)
    assert made.returncode == 0, made.stderr
    server_pw = password_of(made.stdout)
    skeleton = tmp_path / "skeleton.yaml"
    gw = run_linli("gateways", *cfg, "provision", COMMUNITY, "gw-1", "--site", str(skeleton),
                   "--broker", f"mqtt://127.0.0.1:{port}")  # fmt: skip
    assert gw.returncode == 0, gw.stderr
    gw_pw = password_of(gw.stdout)
    assert oct(skeleton.stat().st_mode & 0o777) == "0o600"
    assert yaml.safe_load(skeleton.read_text())["uplink"]["url"] == (
        f"mqtt://gw.{COMMUNITY}.gw-1:{gw_pw}@127.0.0.1:{port}"
    )
    assert (
        "user gw.meihuayuan.gw-1\ntopic write linli/v1/meihuayuan/gw-1/up"
        in (auth / "acl").read_text()
    )

    files = f"password_file {auth / 'passwd'}\nacl_file {auth / 'acl'}\npid_file {pid_file}\n"
    mosq = start_mosquitto_conf(
        tmp_path, port, "allow_anonymous false\npersistence false\n" + files
    )
    # From now on every change is followed by a SIGHUP to this broker.
    settings.write_text(settings.read_text() + f'broker_pid_file = "{pid_file}"\n')
    as_server = f"mqtt://linli-server:{server_pw}@127.0.0.1:{port}"
    settings.write_text(settings.read_text().replace(f"mqtt://127.0.0.1:{port}", as_server))
    srv = start_server(tmp_path, settings, http_port)
    try:
        # The provisioned gateway delivers every item.
        site = site_for(tmp_path, broker)
        conf_site = yaml.safe_load(site.read_text())
        conf_site["uplink"]["url"] = f"mqtt://gw.{COMMUNITY}.gw-1:{gw_pw}@127.0.0.1:{port}"
        site.write_text(yaml.safe_dump(conf_site))
        record = tmp_path / "produced.jsonl"
        proc = subprocess.Popen(linli("gateway", "--config", str(site), "--record", str(record)),
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)  # fmt: skip
        wait_for(lambda: get_json(f"{srv.url}/api/ingest")["envelopes"] >= 3, 30, "envelopes")
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out

        # Attacks: anonymous; gw-1's account publishing a trapped passenger into another
        # community; a made-up account.
        anon, code = connect(port, None, None)
        assert code in (5, 135), code  # not authorised (paho reports 3.1.1 refusals as v5 codes)
        anon.loop_stop()
        thief, code = connect(port, f"gw.{COMMUNITY}.gw-1", gw_pw)
        assert code == 0
        trapped = {"v": 1, "gw": "gw-1", "community": "longzhu-baihe", "seq": 1,
                   "sent": int(time.time() * 1000),
                   "items": [{"t": int(time.time() * 1000), "dev": "el-1-1", "kind": "elevator",
                              "event": "trapped", "state": "start", "data": {}}]}  # fmt: skip
        thief.publish(
            "linli/v1/longzhu-baihe/gw-1/up", json.dumps(trapped), qos=1
        ).wait_for_publish(5)
        thief.publish(f"linli/v1/{COMMUNITY}/gw-1/cmd", b"{}", qos=1).wait_for_publish(5)
        thief.disconnect()
        thief.loop_stop()
        _, code = connect(port, "gw.longzhu-baihe.gw-1", gw_pw)
        assert code != 0

        assert_all_stored(srv, record)
        time.sleep(1)
        assert get_json(f"{srv.url}/api/telemetry/counts?community=longzhu-baihe&flush=1") == {}
        assert get_json(f"{srv.url}/api/ingest")["rejected_total"] == 0

        # Rotation: the broker re-reads its files (SIGHUP), the old password stops working.
        rotated = run_linli("gateways", *cfg, "provision", COMMUNITY, "gw-1", "--rotate")
        assert rotated.returncode == 0, rotated.stderr
        time.sleep(1)
        _, code = connect(port, f"gw.{COMMUNITY}.gw-1", gw_pw)
        assert code != 0, "the rotated-away password still works"
        client, code = connect(port, f"gw.{COMMUNITY}.gw-1", password_of(rotated.stdout))
        assert code == 0
        client.disconnect()
        client.loop_stop()
        assert mosq.poll() is None  # reloaded, not restarted
    finally:
        assert stop(srv.proc) == 0, srv.log.read_text()[-3000:]
        mosq.terminate()
        mosq.wait(timeout=10)
