"""Server ingest with durable acknowledgement (issue 12): sustained readings per second
against raw paho delivery on the same broker, and the server's memory under overload.

    .venv/bin/python bench/ingest.py [--quick]

Setup: a real mosquitto (Debian's), persistent as docs/deploy/mosquitto.conf, on a free
loopback port, and ``linli server`` as its own process with its default embedded store
(SQLite) or with InfluxDB (a real influxd 1.x, the writer's disk spool), all started by this
script. Every figure of a comparison comes from this one run.

1. **Sustained rate.** A backlog of envelopes (of 20 readings, a gateway's usual batch, and of
   500, a gateway's backlog after an outage; 20 devices of one registered gateway) is queued
   by the broker for a consumer's persistent session while it is away; then the consumer
   connects and takes it all. Three consumers, each with its own session on the same broker:
   *raw*: a bare paho-mqtt client (QoS 1, acknowledging on receipt) that only counts
   messages; *before*: ``linli server`` as it was before this change (commit ``12f462c``,
   checked out with ``git worktree``: acknowledges on receipt, buffers in memory, no
   durability); *now*: ``linli server``, which acknowledges only after the commit. A server is
   timed from its first stored item to its last (``/api/ingest``), so start-up is not
   counted. Order raw, now, before, before, now, raw; ratios are of summed times.
2. **Memory under overload.** While a server runs, a publisher offers 500-reading envelopes
   2.5 times as fast as it sustains, for 20 s (8 s with ``--quick``); the server's RSS is
   sampled every 50 ms from its start to the end of the drain, for *before* and *now*. The
   bound docs/operations.md states is 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

#: The operator token of the benchmark server (/api/ingest is operator only).
ADMIN = "bench-admin-token-0123456789"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collectors.wire import Envelope, Reading, encode_envelope  # noqa: E402

COMMUNITY = "meihuayuan"
GATEWAY = "gw-load"
DEVICES = 20
BEFORE = "12f462c"  # the last commit before acknowledged-means-durable
T0 = 1_795_500_000_000
TOPIC = f"linli/v1/{COMMUNITY}/{GATEWAY}/up"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start_broker(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {tmp}/\nmax_queued_messages 0\nmax_inflight_messages 64\n"
        f"user {os.environ.get('USER') or 'root'}\n"
    )
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port


def start_influxd(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    data = tmp / "influxdb"
    conf = tmp / "influxdb.conf"
    conf.write_text(
        f'reporting-disabled = true\nbind-address = "127.0.0.1:{free_port()}"\n'
        f'[meta]\n  dir = "{data}/meta"\n[data]\n  dir = "{data}/data"\n'
        f'  wal-dir = "{data}/wal"\n  query-log-enabled = false\n'
        f'[http]\n  bind-address = "127.0.0.1:{port}"\n  log-enabled = false\n'
        "[monitor]\n  store-enabled = false\n[continuous_queries]\n  enabled = false\n"
    )
    proc = subprocess.Popen(["influxd", "-config", str(conf)], stderr=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL)  # fmt: skip
    wait_port(port)
    return proc, port


def payloads(first_seq: int, count: int, start: int, per: int) -> list[bytes]:
    out = []
    for e in range(count):
        items = [
            Reading(start + (e * per + i) // DEVICES, f"ld-{i % DEVICES}", "elevator",
                    {"floor": i % 30, "running": True, "door": "closed"})
            for i in range(per)
        ]  # fmt: skip
        out.append(encode_envelope(Envelope(GATEWAY, COMMUNITY, first_seq + e, start, items)))
    return out


def publish(port: int, messages: list[bytes], *, rate: float | None = None) -> float:
    """QoS 1 as fast as the broker takes them (or at ``rate`` messages/s); seconds taken."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{time.time_ns()}")
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.monotonic()
    try:
        infos = []
        for n, p in enumerate(messages):
            if rate is not None:
                ahead = started + n / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            infos.append(client.publish(TOPIC, p, qos=1))
        for info in infos:
            info.wait_for_publish(timeout=120)
        return time.monotonic() - started
    finally:
        client.disconnect()
        client.loop_stop()


class RawConsumer:
    """A bare paho subscriber with a persistent session: counts messages, nothing else."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.done = threading.Event()
        self.want = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw",
                                  clean_session=False)  # fmt: skip
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(TOPIC, qos=1)

    def _on_message(self, *_: Any) -> None:
        now = time.monotonic()
        if self.count == 0:
            self.first = now
        self.count += 1
        self.last = now
        if self.count >= self.want:
            self.done.set()

    def prepare(self) -> None:
        """Connect once so the broker keeps a session, then go away."""
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        time.sleep(0.5)
        self.client.disconnect()
        self.client.loop_stop()

    def take(self, want: int, _readings: int = 0) -> float:
        """Connect and take ``want`` queued messages; seconds from the first to the last."""
        self.count, self.want = 0, want
        self.done.clear()
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        if not self.done.wait(300):
            raise RuntimeError(f"raw consumer got {self.count} of {want}")
        self.client.disconnect()
        self.client.loop_stop()
        return (self.last - self.first) * want / max(1, want - 1)


class Server:
    def __init__(self, tmp: Path, broker_port: int, influx_port: int | None, root: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.root = root
        self.port = free_port()
        self.settings = tmp / "settings.toml"
        extra = ""
        if influx_port is not None:
            extra = (f'influx_url = "http://127.0.0.1:{influx_port}"\n'
                     f'influx_spool_path = "{tmp / "spool.db"}"\n')  # fmt: skip
        self.settings.write_text(
            f'mqtt_url = "mqtt://127.0.0.1:{broker_port}"\n'
            f'database_url = "sqlite+aiosqlite:///{tmp / "linli.db"}"\n'
            f'telemetry_path = "{tmp / "telemetry.db"}"\nhttp_port = {self.port}\n'
            'mqtt_shared_group = ""\n' + f'admin_token = "{ADMIN}"\n' + extra
        )
        self.settings.chmod(0o600)  # it holds a secret: the server refuses it readable
        reg = yaml.safe_load((ROOT / "server/demo_data/shancheng.yaml").read_text())
        com = next(c for c in reg["communities"] if c["id"] == COMMUNITY)
        com["gateways"].append({"id": GATEWAY})
        com["devices"] += [{"id": f"ld-{n}", "kind": "elevator", "name": f"负载{n}",
                            "gateway": GATEWAY, "floors": 30, "maintenance_unit": "mu-tengda"}
                           for n in range(DEVICES)]  # fmt: skip
        (tmp / "registry.yaml").write_text(yaml.safe_dump(reg, allow_unicode=True))
        self.linli("registry", "import", str(tmp / "registry.yaml"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.rss_max_kb = 0
        self._sampling = threading.Event()

    def linli(self, *args: str) -> None:
        subprocess.run([sys.executable, "-c", "from server.cli import main; import sys; "
                        "sys.exit(main())", *args, "--config", str(self.settings)],
                       cwd=self.root, check=True, capture_output=True)  # fmt: skip

    def start(self) -> None:
        log = (self.tmp / "server.log").open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from server.cli import main; import sys; sys.exit(main())",
             "server", "--config", str(self.settings)],
            cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self._sampling.clear()
        threading.Thread(target=self._sample, args=(self.proc.pid,), daemon=True).start()
        wait_port(self.port)
        while not self.get("/healthz")["mqtt_connected"]:
            time.sleep(0.05)

    def _sample(self, pid: int) -> None:
        while not self._sampling.wait(0.05):
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.rss_max_kb = max(self.rss_max_kb, int(line.split()[1]))
            except OSError:
                return

    def rss_kb(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self._sampling.set()

    def get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def items(self) -> int:
        return int(self.get("/api/ingest")["items"])

    def prepare(self) -> None:
        self.start()
        self.stop()  # the server's persistent session exists from here on

    def take(self, messages: int, readings: int) -> float:
        """Start and take the backlog; seconds from its first stored item to its last."""
        self.start()
        first_t = last_t = 0.0
        first_n = 0
        while True:
            n, now = self.items(), time.monotonic()
            if n and not first_t:
                first_t, first_n = now, n
            if n >= readings:
                last_t = now
                break
            time.sleep(0.02)
        self.stop()
        # the stretch between the first and the last poll, scaled to the whole backlog
        return (last_t - first_t) * readings / max(1, readings - first_n)


Consumer = RawConsumer | Server


def sustained(
    port: int, consumers: dict[str, Consumer], envelopes: int, per: int, seq: list[int]
) -> dict[str, float]:
    """Readings per second each consumer sustains, over two timed backlogs each."""
    times: dict[str, float] = dict.fromkeys(consumers, 0.0)
    for who in ("raw", "now", "before", "before", "now", "raw"):
        backlog = payloads(seq[0], envelopes, T0 + seq[0] * 1000, per)
        seq[0] += envelopes
        publish(port, backlog)
        for name, consumer in consumers.items():  # every session has the backlog queued
            took = consumer.take(envelopes, envelopes * per)
            if name == who:
                times[name] += took
    return {name: 2 * envelopes * per / t for name, t in times.items()}


def overload(port: int, server: Server, rate_per_s: float, seconds: float, *,
             seq: list[int], others: list[Consumer]) -> dict[str, float]:  # fmt: skip
    server.rss_max_kb = 0
    server.start()
    idle_kb = server.rss_kb()
    start_items = server.items()
    per = 500
    count = int(rate_per_s / per * seconds)
    backlog = payloads(seq[0], count, T0 + seq[0] * 1000, per)
    seq[0] += count
    offered_s = publish(port, backlog, rate=rate_per_s / per)
    behind = count * per - (server.items() - start_items)
    while server.items() - start_items < count * per:
        time.sleep(0.05)
    server.stop()
    for other in others:  # the other sessions' copies, not measured
        other.take(count, count * per)
    return {
        "offered_per_s": count * per / offered_s,
        "behind_at_end": behind,
        "idle_mb": idle_kb / 1024,
        "rss_max_mb": server.rss_max_kb / 1024,
    }


def before_tree() -> Path:
    """The server as it was at :data:`BEFORE`, checked out beside the repository."""
    tree = Path(tempfile.gettempdir()) / f"linli-bench-{BEFORE}"
    if not (tree / "server").is_dir():
        subprocess.run(["git", "worktree", "add", "-f", str(tree), BEFORE], cwd=ROOT,
                       check=True, capture_output=True)  # fmt: skip
    return tree


def run(store: str, quick: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f"linli-bench-ingest-{store}-"))
    broker, port = start_broker(tmp)
    influx = None
    try:
        influx_port = None
        if store == "influx":
            influx, influx_port = start_influxd(tmp)
        consumers: dict[str, Consumer] = {
            "raw": RawConsumer(port),
            "now": Server(tmp / "now", port, influx_port, ROOT),
            "before": Server(tmp / "before", port, influx_port, before_tree()),
        }
        for c in consumers.values():
            c.prepare()
        seq = [0]
        rates: dict[int, dict[str, float]] = {}
        for per, envelopes in ((20, 1500 if quick else 5000), (500, 200 if quick else 600)):
            r = rates[per] = sustained(port, consumers, envelopes, per, seq)
            print(f"[{store}] {envelopes:,} envelopes of {per}: raw paho {r['raw']:,.0f}/s, "
                  f"before {r['before']:,.0f}/s, now {r['now']:,.0f}/s; now/before "
                  f"{r['now'] / r['before']:.2f}, now/raw {r['now'] / r['raw']:.3f}")  # fmt: skip
        for name in ("before", "now"):
            server = consumers[name]
            assert isinstance(server, Server)
            others = [c for n, c in consumers.items() if n != name]
            o = overload(port, server, 2.5 * rates[500][name], 8 if quick else 20,
                         seq=seq, others=others)  # fmt: skip
            print(f"[{store}] overload of {name}: offered {o['offered_per_s']:,.0f}/s "
                  f"({o['offered_per_s'] / rates[500][name]:.1f}x its sustained), "
                  f"{o['behind_at_end']:,} readings behind when it stopped; RSS idle "
                  f"{o['idle_mb']:.0f} MB, max {o['rss_max_mb']:.0f} MB")  # fmt: skip
    finally:
        for proc in (broker, influx):
            if proc is not None:
                proc.terminate()
                proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--store", choices=["embedded", "influx", "both"], default="both")
    args = parser.parse_args()
    print(time.strftime("%Y-%m-%d"), os.uname().machine, f"{os.cpu_count()} CPUs")
    for store in ("embedded", "influx") if args.store == "both" else (args.store,):
        run(store, args.quick)


if __name__ == "__main__":
    main()
