"""Shared fixtures: real loopback servers and our own commands as real processes."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collectors.signed import public_key_text
from server.gateways.signing import load_or_create_signing_key

ROOT = Path(__file__).resolve().parent.parent
DEMO_REGISTRY = ROOT / "server" / "demo_data" / "shancheng.yaml"
#: The signing key every test server uses (made once per run), so that a test's gateway
#: sites can name its public key in uplink.server_keys and tests can sign as the server does.
SIGNING_KEY_PATH = Path(tempfile.mkdtemp(prefix="linli-test-key-")) / "signing-key.pem"
#: The operator's admin token of every test server (write_settings): the API wants a token.
ADMIN_TOKEN = "test-admin-token-0123456789"


def api_request(url: str, token: str | None = ADMIN_TOKEN) -> urllib.request.Request:
    """A GET of ``url`` with ``token`` as its bearer token (the admin's by default)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return urllib.request.Request(url, headers=headers)


def api_json(url: str, token: str | None = ADMIN_TOKEN, timeout: float = 10) -> Any:
    """The JSON answer to a GET of an API ``url`` (as the operator by default)."""
    with urllib.request.urlopen(api_request(url, token), timeout=timeout) as resp:
        return json.load(resp)


def signing_key() -> Ed25519PrivateKey:
    return load_or_create_signing_key(SIGNING_KEY_PATH)


def server_public_key() -> str:
    return public_key_text(signing_key().public_key())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class Broker:
    """A real mosquitto on a free loopback port."""

    port: int
    proc: subprocess.Popen[bytes]
    tmp: Path | None = None
    persist: bool = False

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop the broker (SIGTERM: a persistent one saves its sessions and messages)."""
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def start(self) -> None:
        """Start it again on the same port (after :meth:`stop`)."""
        assert self.tmp is not None
        self.proc = _start_mosquitto(self.tmp, self.port, persist=self.persist)


def _start_mosquitto(tmp: Path, port: int, *, persist: bool = False) -> subprocess.Popen[bytes]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    conf = tmp / f"mosquitto-{port}.conf"
    # A persistent broker keeps sessions and queued QoS 1 messages across a restart, as a
    # production broker does (the server's persistent session must not lose what arrived
    # while it was reconnecting).
    # Run as root, mosquitto would switch to its own user, which cannot write in ``tmp``.
    persistence = (
        f"persistence true\npersistence_location {tmp}/\nuser {getpass.getuser()}\n"
        if persist
        else "persistence false\n"
    )
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n{persistence}max_queued_messages 0\n"
    )
    proc = subprocess.Popen(
        [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_port(port)
    return proc


def start_mosquitto_conf(tmp: Path, port: int, settings: str) -> subprocess.Popen[bytes]:
    """mosquitto on loopback ``port`` with ``settings`` (lines of its configuration) added,
    running as this user (as root it would switch to one who cannot read ``tmp``)."""
    conf = tmp / f"mosquitto-{port}.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nuser {getpass.getuser()}\n{settings}")
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen(
        [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_port(port)
    return proc


@pytest.fixture
def persistent_mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A mosquitto that keeps sessions across a restart (for outage tests)."""
    port = free_port()
    broker = Broker(port, _start_mosquitto(tmp_path, port, persist=True), tmp_path, persist=True)
    yield broker
    broker.proc.terminate()
    broker.proc.wait(timeout=10)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A fresh mosquitto for one test, persistent as docs/deploy/mosquitto.conf is: a broker
    restart loses nothing (issue 12)."""
    port = free_port()
    broker = Broker(port, _start_mosquitto(tmp_path, port, persist=True), tmp_path, persist=True)
    yield broker
    # A test may have restarted it: end whichever process is the broker now.
    broker.proc.terminate()
    broker.proc.wait(timeout=10)


def linli(*args: str) -> list[str]:
    """The command line of ``linli ARGS`` in this virtual environment."""
    return [
        sys.executable,
        "-c",
        "from server.cli import main; import sys; sys.exit(main())",
        *args,
    ]


def run_linli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        linli(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        check=False,
    )


@dataclass
class ServerProc:
    """A ``linli server`` process with its settings."""

    proc: subprocess.Popen[str]
    port: int
    settings: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def write_settings(tmp: Path, broker: Broker, http_port: int) -> Path:
    path = tmp / "settings.toml"
    path.write_text(
        f'mqtt_url = "{broker.url}"\n'
        f'database_url = "sqlite+aiosqlite:///{tmp / "linli.db"}"\n'
        f'telemetry_path = "{tmp / "telemetry.db"}"\n'
        f"http_port = {http_port}\n"
        f'signing_key_path = "{SIGNING_KEY_PATH}"\n'
        f'admin_token = "{ADMIN_TOKEN}"\n'
        # Scheduled reports would mail every street office at start: off, except where a
        # test turns them on (tests/server/compliance).
        'ledger_schedule = ""\nprogress_schedule = ""\n'
        f'evidence_dir = "{tmp / "evidence"}"\n'
    )
    path.chmod(0o600)  # tests add admin tokens: the server refuses them in a readable file
    signing_key()  # made before any server process could race to make it
    return path


def write_influx_settings(tmp: Path, broker: Broker, http_port: int, influx_url: str) -> Path:
    """:func:`write_settings` with telemetry going to the InfluxDB at ``influx_url``."""
    path = write_settings(tmp, broker, http_port)
    path.write_text(
        path.read_text()
        + f'influx_url = "{influx_url}"\ninflux_database = "linli"\n'
        + f'influx_spool_path = "{tmp / "spool.db"}"\n'
    )
    return path


def start_server(tmp: Path, settings: Path, port: int, *, subscribed: bool = True) -> ServerProc:
    """Start ``linli server``; return once it listens and (``subscribed``) once its ingest is
    subscribed, so that what a test publishes next is not published to nobody."""
    log = tmp / f"server-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            linli("server", "--config", str(settings)),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
    wait_port(port, timeout=20)
    deadline = time.monotonic() + 20
    while subscribed:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            if json.load(resp)["mqtt_connected"]:
                break
        assert time.monotonic() < deadline, f"the server did not subscribe:\n{log.read_text()}"
        time.sleep(0.05)
    return ServerProc(proc, port, settings, log)


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout=timeout)


def server_on(
    tmp: Path, broker: Broker, *, extra: str = "", registry: Path = DEMO_REGISTRY
) -> ServerProc:
    """Import a registry (the demo's by default) and start a ``linli server`` connected to
    ``broker``; ``extra`` is appended to its settings file."""
    settings = write_settings(tmp, broker, free_port())
    settings.write_text(settings.read_text() + extra)
    done = run_linli("registry", "import", str(registry), "--config", str(settings))
    assert done.returncode == 0, done.stderr
    port = int(settings.read_text().split("http_port = ")[1].split()[0])
    return start_server(tmp, settings, port)


@pytest.fixture
def server(tmp_path: Path, mosquitto: Broker) -> Iterator[ServerProc]:
    """A ``linli server`` process on the demo registry, connected to ``mosquitto``."""
    srv = server_on(tmp_path, mosquitto)
    yield srv
    assert stop(srv.proc) == 0, srv.log.read_text()[-3000:]


@dataclass
class PtyPair:
    """Two serial ports joined back to back by Debian's ``socat`` (a null-modem cable)."""

    host: str  # the gateway's end
    device: str  # the sensor's end
    proc: subprocess.Popen[bytes]


def start_pty_pair(tmp: Path, name: str = "tty") -> PtyPair:
    """Start socat joining two new ptys; Linux ptys accept 8N1 line settings only."""
    exe = shutil.which("socat")
    assert exe, "socat is missing: run 'make system-deps'"
    host, device = tmp / f"{name}-host", tmp / f"{name}-device"
    for link in (host, device):  # left by an earlier pair of the same name
        link.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [exe, f"pty,raw,echo=0,link={host}", f"pty,raw,echo=0,link={device}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not (host.exists() and device.exists()):
        assert time.monotonic() < deadline, "socat did not create the pty pair"
        time.sleep(0.01)
    return PtyPair(str(host), str(device), proc)


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[PtyPair]:
    """A real pty pair (a null-modem cable) for one test."""
    pair = start_pty_pair(tmp_path)
    yield pair
    pair.proc.terminate()
    pair.proc.wait(timeout=10)


@dataclass
class Influxd:
    """A real InfluxDB 1.x (Debian's ``influxdb``) on a free loopback port, own data dir."""

    port: int
    proc: subprocess.Popen[bytes]
    conf: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [shutil.which("influxd") or "/usr/bin/influxd", "-config", str(self.conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.wait_ready(timeout=30)

    def wait_ready(self, timeout: float) -> None:
        """Until *this* influxd answers /ping (the header proves it is an InfluxDB, not
        whatever else took the port) and its meta store answers a query."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"influxd exited with {self.proc.returncode}: see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as r:
                    if r.headers.get("X-Influxdb-Version"):
                        self.query("SHOW DATABASES")
                        return
            except (OSError, RuntimeError) as e:
                last = e
            time.sleep(0.05)
        raise TimeoutError(f"influxd on {self.url} not ready after {timeout} s: {last}")

    def query(self, q: str) -> dict[str, Any]:
        """POST an InfluxQL statement; an error inside the 200 answer raises."""
        data = urllib.parse.urlencode({"q": q}).encode()
        with urllib.request.urlopen(f"{self.url}/query", data=data, timeout=10) as r:
            answer: dict[str, Any] = json.loads(r.read())
        for result in answer.get("results", []):
            if "error" in result:
                raise RuntimeError(f"{q!r}: {result['error']}")
        return answer

    def write(self, db: str, body: str, timeout: float = 10.0) -> None:
        """POST line protocol (ms), waiting out the moment between CREATE DATABASE and
        the database being writable (404 'database not found')."""
        deadline = time.monotonic() + timeout
        while True:
            req = urllib.request.Request(
                f"{self.url}/write?db={db}&precision=ms", data=body.encode(), method="POST"
            )
            try:
                urllib.request.urlopen(req, timeout=10).close()
            except urllib.error.HTTPError as e:
                if e.code != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
            else:
                return

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture
def influxd(tmp_path: Path) -> Iterator[Influxd]:
    """influxd for one test; ``stop()`` and ``start()`` it to make an outage."""
    assert shutil.which("influxd"), "influxd is missing: run 'make system-deps'"
    root = tmp_path / "influxdb"
    port = free_port()
    rpc = free_port()
    while rpc == port:  # two binds to port 0 may hand out the same number
        rpc = free_port()
    conf = tmp_path / "influxdb.conf"
    conf.write_text(
        f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc}"\n'
        f'[meta]\n  dir = "{root}/meta"\n'
        f'[data]\n  dir = "{root}/data"\n  wal-dir = "{root}/wal"\n'
        "  query-log-enabled = false\n"
        f'[http]\n  bind-address = "127.0.0.1:{port}"\n  log-enabled = false\n'
        "[monitor]\n  store-enabled = false\n"
        "[continuous_queries]\n  enabled = false\n"
    )
    server = Influxd(port, subprocess.Popen(["true"]), conf, tmp_path / "influxd.log")
    server.proc.wait()
    server.start()
    yield server
    server.stop()
