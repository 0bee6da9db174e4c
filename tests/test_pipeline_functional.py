"""Sensor to server with real processes: mosquitto, ``linli server``, ``linli gateway``.

What the simulators produced (recorded by the gateway, one line per item) must be exactly
what the server stores: every item, field by field, none twice — counted, not sampled.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.conftest import Broker, ServerProc
from tests.pipeline import (
    COMMUNITY,
    get_json,
    next_seq,
    produced_items,
    run_gateway,
    site_for,
    stored_items,
    wait_for,
)

pytestmark = pytest.mark.functional


def test_server_holds_exactly_what_the_simulators_produced(
    tmp_path: Path, mosquitto: Broker, server: ServerProc
) -> None:
    wait_for(lambda: get_json(f"{server.url}/healthz")["mqtt_connected"], what="server MQTT")
    site = site_for(tmp_path, mosquitto)
    record = tmp_path / "produced.jsonl"

    # Two runs of the same gateway: the second continues the persisted seq.
    run_gateway(site, record, 6)
    run_gateway(site, record, 4)

    produced = produced_items(record)
    assert sum(produced.values()) > 20  # the simulators did produce
    devices = {json.loads(k)["dev"] for k in produced}

    def stored_total() -> int:
        counts = get_json(f"{server.url}/api/telemetry/counts?community={COMMUNITY}&flush=1")
        return sum(c["readings"] + c["events"] for c in counts.values())

    wait_for(lambda: stored_total() >= sum(produced.values()), what="all items stored")
    stored = stored_items(server, devices)
    assert stored == produced  # every item, field by field, none twice, none missing

    stats = get_json(f"{server.url}/api/ingest")
    assert stats["items"] == sum(produced.values())
    assert stats["duplicates"] == 0
    assert stats["gaps"] == 0
    assert stats["rejected_total"] == 0
    gw = stats["gateways"][f"{COMMUNITY}/gw-1"]
    assert gw["high"] + 1 == next_seq(tmp_path / "gw-state")

    # The gateway said offline when it stopped, and the server shows it.
    overview = get_json(f"{server.url}/api/overview")
    assert {"community": COMMUNITY, "gateway": "gw-1", "status": "offline"}.items() <= next(
        g for g in overview["gateways"] if g["community"] == COMMUNITY
    ).items()


async def _publish(broker: Broker, messages: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="bad-input-test") as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


def envelope(seq: int, **over: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "v": 1,
        "gw": "gw-1",
        "community": COMMUNITY,
        "seq": seq,
        "sent": 1_763_800_000_000,
        "items": [
            {
                "t": 1_763_800_000_000,
                "dev": "fl-1",
                "kind": "fire_lane",
                "fields": {"occupied": True, "dwell_s": 12},
            }
        ],
    }
    env.update(over)
    return env


async def test_bad_uplink_messages_are_rejected_counted_and_ingest_goes_on(
    mosquitto: Broker, server: ServerProc
) -> None:
    wait_for(lambda: get_json(f"{server.url}/healthz")["mqtt_connected"], what="server MQTT")
    up = f"linli/v1/{COMMUNITY}/gw-1/up"
    bad_item = envelope(2)
    bad_item["items"][0]["fields"] = {"occupied": "yes"}
    unknown_dev = envelope(5)
    unknown_dev["items"][0]["dev"] = "fl-99"
    wrong_kind = envelope(6)
    wrong_kind["items"][0]["kind"] = "gate"
    wrong_kind["items"][0]["fields"] = {"open": True}
    messages = [
        (up, b"{not json"),
        (up, json.dumps(bad_item).encode()),
        (up, b"x" * (300 * 1024)),
        (f"linli/v1/{COMMUNITY}/gw-2/up", json.dumps(envelope(3)).encode()),
        ("linli/v1/nowhere/gw-1/up", json.dumps(envelope(4, community="nowhere")).encode()),
        (up, json.dumps(unknown_dev).encode()),
        (up, json.dumps(wrong_kind).encode()),
        (up, json.dumps(envelope(7)).encode()),  # a good one: ingest goes on
        (up, json.dumps(envelope(7)).encode()),  # and its duplicate is dropped
    ]
    await _publish(mosquitto, messages)
    wait_for(lambda: get_json(f"{server.url}/api/ingest")["envelopes"] == 1, what="good envelope")
    stats = get_json(f"{server.url}/api/ingest")
    assert stats["rejected"] == {
        "malformed": 1,
        "schema": 1,
        "too_large": 1,
        "topic_mismatch": 1,
        "unknown_community": 1,
        "unknown_device": 1,
        "kind_mismatch": 1,
    }
    assert stats["duplicates"] == 1
    details = {r["reason"]: r["detail"] for r in stats["recent_rejects"]}
    assert "$.occupied" in details["schema"]
    assert "items[0]" in details["schema"]
    assert "fl-99" in details["unknown_device"]
    log = server.log.read_text()
    assert log.count("rejected uplink message") == 7
    state = get_json(f"{server.url}/api/overview")
    lane = next(
        d
        for c in state["communities"]
        if c["id"] == COMMUNITY
        for d in c["devices"]
        if d["id"] == "fl-1"
    )
    assert lane["state"]["fields"] == {"occupied": True, "dwell_s": 12}


def test_api_bad_input_gets_clear_4xx(server: ServerProc) -> None:
    cases = {
        f"/api/devices/{COMMUNITY}/nope/history": (404, "no device 'nope'"),
        f"/api/devices/{COMMUNITY}/fl-1/history?limit=abc": (400, "limit='abc' is not an integer"),
        f"/api/devices/{COMMUNITY}/fl-1/history?limit=0": (400, "limit=0 is outside"),
        f"/api/devices/{COMMUNITY}/fl-1/history?since=10&until=5": (400, "must be before"),
        "/api/nope": (404, "Not Found: GET /api/nope"),
    }
    for path, (status, message) in cases.items():
        with pytest.raises(urllib.error.HTTPError) as info:
            get_json(server.url + path)
        assert info.value.code == status, path
        assert message in json.loads(info.value.read())["error"], path
