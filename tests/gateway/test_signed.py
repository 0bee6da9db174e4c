"""Signed management messages (issue 13): the contract (collectors/signed.py) and the
gateway's refusals, in process, with a real Ed25519 key and a real state directory."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collectors.signed import SignatureError, public_key_text, sign, verify
from gateway.runtime import Gateway
from gateway.site import SimDeviceConfig, SimulatorConfig, SiteConfig, UplinkConfig

TOPIC = "linli/v1/meihuayuan/gw-1/cmd"


def now() -> int:
    return time.time_ns() // 1_000_000


def test_a_signature_binds_topic_body_expiry_and_key() -> None:
    key, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    keys = [key.public_key()]
    body = b'{"id":"c-1","op":"ping"}'
    good = sign(key, TOPIC, body, expires=now() + 60_000)
    assert verify(good, TOPIC, keys, now=now(), skew_ms=0).body == body
    refusals = {
        "for another topic": (good, TOPIC.replace("gw-1", "gw-2")),
        "tampered": (good.replace(b"ping", b"pong"), TOPIC),
        "another key": (sign(stranger, TOPIC, body, expires=None), TOPIC),
        "expired": (sign(key, TOPIC, body, expires=now() - 120_000), TOPIC),
        "not signed": (body, TOPIC),
        "garbage": (b"\xff\x00", TOPIC),
    }
    for what, (payload, topic) in refusals.items():
        try:
            verify(payload, topic, keys, now=now(), skew_ms=60_000)
        except SignatureError:
            continue
        pytest.fail(f"{what}: accepted")
    with pytest.raises(SignatureError, match="no server key"):
        verify(good, TOPIC, [], now=now(), skew_ms=0)


def gateway(tmp_path: Path, keys: list[str]) -> Gateway:
    site = SiteConfig(
        version=1, gateway="gw-1", community="meihuayuan", state_dir=str(tmp_path),
        uplink=UplinkConfig(url="mqtt://127.0.0.1:1", server_keys=keys),
        collectors=[SimulatorConfig(devices=[SimDeviceConfig(id="gt-1", kind="gate")])],
    )  # fmt: skip
    return Gateway(site)


async def test_a_command_is_acted_on_once_even_across_a_restart(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    gw = gateway(tmp_path, [public_key_text(key.public_key())])
    ping = sign(key, TOPIC, b'{"id":"c-1","op":"ping"}', expires=now() + 60_000)
    assert (await gw.signed_command(TOPIC, ping))["result"] == "pong"
    replay = await gw.signed_command(TOPIC, ping)
    assert (replay["id"], replay["ok"]) == ("c-1", False)
    assert "replayed" in replay["error"]
    again = gateway(tmp_path, [public_key_text(key.public_key())])  # the gateway restarted
    again._nonces = again._load_nonces()
    assert "replayed" in (await again.signed_command(TOPIC, ping))["error"]
    endless = sign(key, TOPIC, b'{"id":"c-2","op":"ping"}', expires=None)
    assert "must carry an expiry" in (await again.signed_command(TOPIC, endless))["error"]
    forged = await again.signed_command(TOPIC, json.dumps({"id": "c-3", "op": "ping"}).encode())
    assert (forged["id"], forged["ok"]) == (None, False)  # an unauthenticated id is not echoed


async def test_without_server_keys_remote_management_is_off(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    gw = gateway(tmp_path, [])
    ping = sign(key, TOPIC, b'{"id":"c-1","op":"ping"}', expires=now() + 60_000)
    assert "no server key is configured" in (await gw.signed_command(TOPIC, ping))["error"]
    config = sign(key, TOPIC.replace("cmd", "config"), b'{"config_version": 2}', expires=None)
    reply = await gw.signed_config(TOPIC.replace("cmd", "config"), config)
    assert reply["ok"] is False
    assert "no server key is configured" in reply["error"]
