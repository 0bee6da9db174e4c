"""Several ingest workers (``ingest_worker = "k/n"``) split the communities between them, and
a broker restart loses nothing (issue 12, item 3), with real mosquitto (persistent) and
``linli server`` processes.

Two workers share one broker and one registry. Envelopes of every demo community are
published, then the broker is restarted and more are published *at once*, before the workers
have reconnected: the broker must queue them for the workers' persistent sessions. Counted:
every envelope is taken by exactly one worker, the one its community belongs to.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from collectors.wire import Envelope, Reading, encode_envelope
from collectors.yamlconf import ConfigError
from server.ingest.mqtt import community_filter
from server.settings import Settings, load_settings
from tests.conftest import (
    DEMO_REGISTRY,
    Broker,
    free_port,
    run_linli,
    start_server,
    stop,
    write_settings,
)
from tests.pipeline import get_json, wait_for

T0 = 1_795_400_000_000


def gateways() -> list[tuple[str, str, str, str]]:
    """(community, gateway, device, kind): one device of each demo gateway."""
    reg = yaml.safe_load(DEMO_REGISTRY.read_text())
    out = []
    for com in reg["communities"]:
        for gw in com.get("gateways", []):
            dev = next((d for d in com["devices"] if d.get("gateway") == gw["id"]), None)
            if dev is not None:
                out.append((com["id"], gw["id"], dev["id"], dev["kind"]))
    return out


def publish(broker: Broker, seq: int) -> int:
    """One envelope (one reading) per gateway with ``seq``; the number published."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-workers-pub")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        infos = []
        for community, gw, dev, kind in gateways():
            env = Envelope(gw, community, seq, T0 + seq, [Reading(T0 + seq, dev, kind, {})])
            infos.append(client.publish(f"linli/v1/{community}/{gw}/up", encode_envelope(env), 1))
        for info in infos:
            info.wait_for_publish(timeout=10)
        return len(infos)
    finally:
        client.disconnect()
        client.loop_stop()


def test_every_community_has_exactly_one_worker() -> None:
    communities = [c for c, *_ in gateways()] + [f"c{n}" for n in range(500)]
    for n in (1, 2, 3, 7):
        filters = [community_filter(Settings(ingest_worker=f"{k}/{n}")) for k in range(1, n + 1)]
        for c in communities:
            owners = [k for k, mine in enumerate(filters, 1) if mine(f"linli/v1/{c}/gw/up")]
            assert owners == [zlib.crc32(c.encode()) % n + 1], (c, n)
            # status messages go to every worker
            assert all(mine(f"linli/v1/{c}/gw/status") for mine in filters)


@pytest.mark.parametrize("value", ["0/2", "3/2", "1/0", "2", "1/2/3", "a/b", "١/٢", "1/65", ""])
def test_ingest_worker_refuses_what_is_not_k_of_n(value: str) -> None:
    with pytest.raises(ConfigError, match="ingest_worker"):
        load_settings(None, {"LINLI_INGEST_WORKER": value})


@pytest.mark.functional
@pytest.mark.timeout(120)
def test_two_workers_split_communities_and_survive_a_broker_restart(
    tmp_path: Path, mosquitto: Broker
) -> None:
    workers = []
    for k in (1, 2):
        home = tmp_path / f"w{k}"
        home.mkdir()
        port = free_port()
        settings = write_settings(home, mosquitto, port)
        settings.write_text(settings.read_text() + f'ingest_worker = "{k}/2"\n')
        done = run_linli("registry", "import", str(DEMO_REGISTRY), "--config", str(settings))
        assert done.returncode == 0, done.stderr
        workers.append(start_server(home, settings, port))
    try:
        sent = publish(mosquitto, 1)
        mosquitto.stop()
        mosquitto.start()
        sent += publish(mosquitto, 2)  # before the workers are back: queued for them
        time.sleep(0.5)
        sent += publish(mosquitto, 3)

        def taken() -> list[dict[str, dict[str, int]]]:
            return [get_json(f"{w.url}/api/ingest")["gateways"] for w in workers]

        wait_for(
            lambda: (
                sum(len(g) * 3 for g in taken()) >= sent
                and all(m["high"] == 3 for g in taken() for m in g.values())
            ),
            timeout=30,
            what="every envelope taken",
        )
        counts = [get_json(f"{w.url}/api/ingest") for w in workers]
        # Envelopes in flight at the broker's stop come again: duplicates, never gaps.
        assert sum(c["envelopes"] for c in counts) == sent
        for k, c in enumerate(counts, 1):
            assert c["gaps"] == 0, c["gateways"]
            for key in c["gateways"]:
                assert zlib.crc32(key.split("/")[0].encode()) % 2 == k - 1, (k, key)
        assert {key for c in counts for key in c["gateways"]} == {
            f"{community}/{gw}" for community, gw, *_ in gateways()
        }
        stored: dict[str, int] = {}
        for w in workers:
            for key, n in get_json(f"{w.url}/api/telemetry/counts?flush=1").items():
                stored[key] = stored.get(key, 0) + n["readings"]
        assert stored == {f"{community}/{dev}": 3 for community, _, dev, _ in gateways()}
    finally:
        for w in workers:
            assert stop(w.proc) == 0, w.log.read_text()[-2000:]
