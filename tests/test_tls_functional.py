"""MQTT over TLS (issue 13, item 2) with real parts: a throwaway CA and certificates made by
the test (``cryptography``), mosquitto with a TLS listener that requires a client
certificate, ``linli server`` and ``linli gateway`` as processes on ``mqtts://``. Every item
the gateway produced is stored; a gateway given the wrong CA refuses the broker with a clear
log line; a client without a certificate is refused by the broker."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

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
from tests.pipeline import assert_all_stored, get_json, site_for, wait_for

pytestmark = pytest.mark.functional


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_ca(tmp: Path, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    _write(tmp / name, key, cert)
    return key, cert


def issue(tmp: Path, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], name: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca[1].subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .sign(ca[0], hashes.SHA256())
    )  # fmt: skip
    _write(tmp / name, key, cert)


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Broker, Path]]:
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = make_ca(pki, "ca")
    make_ca(pki, "other-ca")  # a CA that signed nothing of this broker's
    for name in ("broker", "server", "gateway"):
        issue(pki, ca, name)
    port = free_port()
    proc = start_mosquitto_conf(tmp_path, port,
        "allow_anonymous true\npersistence false\n"
        f"cafile {pki / 'ca.pem'}\ncertfile {pki / 'broker.pem'}\nkeyfile {pki / 'broker.key'}\n"
        "require_certificate true\n")  # fmt: skip
    yield Broker(port, proc), pki
    proc.terminate()
    proc.wait(timeout=10)


def url(port: int, pki: Path, who: str, ca: str = "ca") -> str:
    return (f"mqtts://127.0.0.1:{port}?ca={pki / (ca + '.pem')}"
            f"&cert={pki / (who + '.pem')}&key={pki / (who + '.key')}")  # fmt: skip


@pytest.mark.timeout(120)
def test_server_and_gateway_over_tls_and_a_wrong_ca_refused(
    tmp_path: Path, tls_broker: tuple[Broker, Path]
) -> None:
    broker, pki = tls_broker
    http_port = free_port()
    settings = write_settings(tmp_path, broker, http_port)
    settings.write_text(settings.read_text().replace(broker.url, url(broker.port, pki, "server")))
    done = run_linli("registry", "import", str(DEMO_REGISTRY), "--config", str(settings))
    assert done.returncode == 0, done.stderr
    srv = start_server(tmp_path, settings, http_port)
    try:
        site = site_for(tmp_path, broker)
        conf = yaml.safe_load(site.read_text())
        conf["uplink"]["url"] = url(broker.port, pki, "gateway")
        site.write_text(yaml.safe_dump(conf))
        record = tmp_path / "produced.jsonl"
        proc = subprocess.Popen(linli("gateway", "--config", str(site), "--record", str(record)),
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)  # fmt: skip
        wait_for(lambda: get_json(f"{srv.url}/api/ingest")["envelopes"] >= 3, 30, "envelopes")
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert_all_stored(srv, record)

        # The same gateway told to trust another CA: it refuses the broker, and says why.
        conf["uplink"]["url"] = url(broker.port, pki, "gateway", ca="other-ca")
        conf["state_dir"] = str(tmp_path / "gw-state-2")
        site.write_text(yaml.safe_dump(conf))
        proc = subprocess.Popen(
            linli("gateway", "--config", str(site)),
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        time.sleep(4)
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        assert "certificate verify failed" in out, out[-2000:]
        before = get_json(f"{srv.url}/api/ingest")["envelopes"]
        assert get_json(f"{srv.url}/api/ingest")["envelopes"] == before
    finally:
        assert stop(srv.proc) == 0, srv.log.read_text()[-3000:]

    # A client that presents no certificate is refused by the broker; one that does is not.
    assert refused(broker.port, pki, cert=False)
    assert not refused(broker.port, pki, cert=True)


def refused(port: int, pki: Path, *, cert: bool) -> bool:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-cert-{cert}")
    if cert:
        client.tls_set(str(pki / "ca.pem"), str(pki / "gateway.pem"), str(pki / "gateway.key"))
    else:
        client.tls_set(ca_certs=str(pki / "ca.pem"))
    try:
        client.connect("127.0.0.1", port)
        for _ in range(15):  # with TLS 1.3 the broker's refusal arrives after the handshake
            if client.loop(timeout=0.2) != mqtt.MQTT_ERR_SUCCESS:
                return True
    except (ssl.SSLError, OSError):
        return True
    finally:
        client.disconnect()
    return False
