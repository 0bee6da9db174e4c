"""One token model for every HTTP reader (issue 13, item 6), against a real ``linli server``
on the demo registry and a real mosquitto.

Every ``/api/`` route, enumerated from the application's router (a new route without an entry
here fails the first test), is called with no token, a bad one, an expired one, a revoked one
and another organisation's token: each gets its refusal (401; 403 for operator routes; 404 for
another organisation's things, worded as for a missing one) and nothing changes in the
database. Also: a 50 MB body refused without being read, the rate limit, the stream's scope,
``linli tokens list|revoke`` and their audit entries.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from server.app import create_app
from server.settings import Settings
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

pytestmark = pytest.mark.functional

A = "pc-anju"  # serves meihuayuan (its elevators are maintained by mu-tengda)
B = "pc-longzhu"  # serves longzhu-baihe
C = "meihuayuan"
ALERT = "{alert}"  # replaced by A's real alert id

DK, DP = "/api/devices/{community}/{dev}", f"/api/devices/{C}/el-1-1"
CK, CP = "/api/communities/{community}", f"/api/communities/{C}"
GK, GP = "/api/gateways/{community}/{gateway}", f"/api/gateways/{C}/gw-1"
VISIT = {"community": C, "device": "el-1-1"}
UNLOCK = {"op": "unlock", "device": "gt-1"}
QK, QP = (
    "/api/compliance/assessments/{table}/{period}",
    "/api/compliance/assessments/shanting/2026-Q4",
)
RESCUE = {"arrival_t": 1_795_000_000_000, "released_by": "x", "method": "y"}
INSPECTED = {
    "community": C,
    "device": "el-1-1",
    "day": "2026-11-02",
    "result": "passed",
    "next_date": "2027-11-02",
}

#: Every /api/ route: (path for A's things, body, what B's token gets).
ROUTES: dict[tuple[str, str], tuple[str, Any, int]] = {
    ("GET", "/api/overview"): ("/api/overview", None, 200),
    ("GET", "/api/stream"): ("/api/stream", None, 200),
    ("GET", "/api/ingest"): ("/api/ingest", None, 403),
    ("GET", "/api/telemetry/counts"): (f"/api/telemetry/counts?community={C}", None, 403),
    ("GET", f"{DK}/history"): (f"{DP}/history", None, 404),
    ("GET", f"{DK}/series"): (f"{DP}/series", None, 404),
    ("GET", f"{DK}/diagnostics"): (f"{DP}/diagnostics", None, 404),
    ("GET", f"{CK}/elevators/availability"): (f"{CP}/elevators/availability", None, 404),
    ("GET", f"{CK}/elevators/trips"): (f"{CP}/elevators/trips", None, 404),
    ("GET", f"{CK}/fire-lanes/occupancy"): (f"{CP}/fire-lanes/occupancy", None, 404),
    ("GET", f"{CK}/gateways/uptime"): (f"{CP}/gateways/uptime", None, 404),
    ("GET", "/api/alerts"): ("/api/alerts", None, 200),
    ("GET", "/api/alerts/{id}"): (f"/api/alerts/{ALERT}", None, 404),
    ("POST", "/api/alerts/{id}/transitions"): (f"/api/alerts/{ALERT}/transitions",
                                               {"to": "acknowledged"}, 404),
    ("POST", "/api/maintenance"): ("/api/maintenance", VISIT, 404),
    ("GET", "/api/audit"): ("/api/audit", None, 200),
    ("PUT", f"{GK}/config"): (f"{GP}/config", {"config_version": 99}, 403),
    ("GET", f"{GK}/config"): (f"{GP}/config", None, 403),
    ("POST", f"{GK}/commands"): (f"{GP}/commands", UNLOCK, 403),
    ("GET", f"{GK}/commands"): (f"{GP}/commands", None, 403),
    ("GET", f"{GK}/commands/{{id}}"): (f"{GP}/commands/cmd-1", None, 403),
    ("GET", "/api/compliance/tables"): ("/api/compliance/tables", None, 200),
    ("GET", "/api/compliance/measures"): (
        f"/api/compliance/measures?period=2026-Q4&community={C}", None, 404),
    ("GET", f"{QK}"): (QP, None, 404),  # a company reads only its own entry: none yet
    ("POST", f"{QK}"): (QP, {}, 403),
    ("POST", f"{QK}/sign"): (f"{QP}/sign", None, 403),
    ("GET", "/api/compliance/reports/{report}"): (
        "/api/compliance/reports/ranking?period=2026-Q4&table=shanting", None, 403),
    ("POST", "/api/compliance/rescue/{id}"): (
        f"/api/compliance/rescue/{ALERT}", RESCUE, 404),
    ("POST", "/api/compliance/inspections"): ("/api/compliance/inspections", INSPECTED, 400),
    ("POST", "/api/compliance/meetings"): (
        "/api/compliance/meetings", {"community": C, "day": "2026-11-02"}, 404),
    ("POST", "/api/compliance/findings"): ("/api/compliance/findings", {"item": "x"}, 400),
    ("GET", "/api/compliance/dossier/{community}"): (f"/api/compliance/dossier/{C}", None, 404),
    ("GET", "/api/screens"): ("/api/screens", None, 200),  # B's own: none
    ("POST", "/api/screens"): ("/api/screens", {"id": "b-hall", "communities": [C]}, 404),
    ("POST", "/api/screens/{id}/token"): ("/api/screens/shancheng-hall/token", None, 404),
    ("POST", "/api/screens/{id}/revoke"): ("/api/screens/shancheng-hall/revoke", None, 404),
}  # fmt: skip

TABLES = ("audit_log", "maintenance_records", "alert_transitions", "gateway_configs",
          "gateway_commands", "api_tokens", "alerts", "assessments", "findings",
          "inspection_results", "meeting_records", "rescue_records", "screens",
          "screen_tokens")  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("access")
    port = free_port()
    broker = Broker(port, _start_mosquitto(tmp, port), tmp)
    http_port = free_port()
    settings = write_settings(tmp, broker, http_port)
    # The matrix sends ~80 refused tokens from one address: the per-address limit is lifted
    # here and tested on its own below.
    settings.write_text(settings.read_text() + "api_refused_per_min = 100000\n")
    done = run_linli("registry", "import", str(DEMO_REGISTRY), "--config", str(settings))
    assert done.returncode == 0, done.stderr

    def token(org: str, label: str) -> str:
        made = run_linli("tokens", "create", org, "--label", label, "--config", str(settings))
        assert made.returncode == 0, made.stderr
        return made.stdout.split()[-1]

    tokens = {name: token(org, name) for name, org in
              (("a", A), ("b", B), ("expired", A), ("revoked", A), ("rate", A),
               ("market", "ms-shanting"), ("unit", "mu-tengda"))}  # fmt: skip
    db = Path(re.search(r'sqlite\+aiosqlite:///(.+)"', settings.read_text())[1])  # type: ignore[index]
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE api_tokens SET expires_t = 1000 WHERE label = 'expired'")
    listed = run_linli("tokens", "list", A, "--config", str(settings))
    [revoked_id] = [line.split()[0] for line in listed.stdout.splitlines() if "revoked" in line]
    done = run_linli("tokens", "revoke", revoked_id, "--reason", "test", "--config", str(settings))
    assert done.returncode == 0, done.stderr
    srv = start_server(tmp, settings, http_port)
    try:
        yield {"srv": srv, "tokens": tokens, "db": db, "settings": settings,
               "broker": broker, "revoked_id": revoked_id}  # fmt: skip
    finally:
        code = stop(srv.proc)
        broker.proc.terminate()
        broker.proc.wait(timeout=10)
        assert code == 0, srv.log.read_text()[-3000:]


def call(
    srv: ServerProc, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data = None if body is None else json.dumps(body).encode()
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        if resp.getheader("Content-Type", "").startswith("text/event-stream"):
            return resp.status, None
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def publish(broker: Broker, topic: str, payload: dict[str, Any]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{time.monotonic_ns()}")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        client.publish(topic, json.dumps(payload).encode(), qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def envelope(community: str, seq: int, *items: dict[str, Any]) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {"v": 1, "gw": "gw-1", "community": community, "seq": seq, "sent": now,
            "items": [{"t": now, **i} for i in items]}  # fmt: skip


@pytest.fixture(scope="module")
def alert_of_a(world: dict[str, Any]) -> int:
    """An alert of A's community: a passenger trapped in meihuayuan's el-1-1."""
    trapped = {"dev": "el-1-1", "kind": "elevator", "event": "trapped", "state": "start"}
    publish(world["broker"], f"linli/v1/{C}/gw-1/up", envelope(C, 1, trapped))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, body = call(world["srv"], "GET", f"/api/alerts?community={C}", None, ADMIN_TOKEN)
        assert status == 200, body
        if body["alerts"]:
            return int(body["alerts"][0]["id"])
        time.sleep(0.2)
    raise AssertionError("no alert opened for the trapped passenger")


def counts(db: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def test_every_api_route_is_in_the_matrix(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"))
    api = {(r.method, r.resource.canonical) for r in app.router.routes()
           if r.resource is not None and r.resource.canonical.startswith("/api/")
           and r.method != "HEAD"}  # fmt: skip
    assert api == set(ROUTES)


def test_every_route_refuses_bad_tokens_and_other_organisations(
    world: dict[str, Any], alert_of_a: int
) -> None:
    srv, tokens = world["srv"], world["tokens"]
    before = counts(world["db"])
    refusals = {
        None: "missing Authorization",
        "not-a-token": "the token is not valid",
        tokens["expired"]: "expired at",
        tokens["revoked"]: "was revoked",
    }
    for (method, _canonical), (template, body, for_b) in ROUTES.items():
        path = template.replace(ALERT, str(alert_of_a))
        for token, why in refusals.items():
            status, answer = call(srv, method, path, body, token)
            assert status == 401, (method, path, token, answer)
            assert why in answer["error"], (method, path, answer)
        status, answer = call(srv, method, path, body, tokens["b"])
        assert status == for_b, (method, path, answer)
        if for_b == 404:  # worded as for something that does not exist
            swap = {C: "no-such-community", "el-1-1": "no-such-device"}
            missing, other_body = template.replace(ALERT, "999999"), body
            for real, fake in swap.items():
                missing = missing.replace(real, fake)
            if body is not None:
                other_body = json.loads(json.dumps(body).replace(C, swap[C]))
            _status, nothing = call(srv, method, missing, other_body, tokens["b"])

            def norm(text: str, swap: dict[str, str] = swap) -> str:
                text = re.sub(r"alert \d+", "alert N", text)
                for real, fake in swap.items():
                    text = text.replace(real, "X").replace(fake, "X")
                return text

            assert norm(answer["error"]) == norm(nothing["error"]), (answer, nothing)
    assert counts(world["db"]) == before  # nothing changed, nothing even audited

    # What B lists holds nothing of A's.
    _s, overview = call(srv, "GET", "/api/overview", None, tokens["b"])
    served_by_b = {"longzhu-baihe", "longzhu-lidu", "zaohuayuan"}  # the demo's contracts
    assert {c["id"] for c in overview["communities"]} == served_by_b
    assert {g["community"] for g in overview["gateways"]} <= served_by_b
    _s, alerts = call(srv, "GET", "/api/alerts", None, tokens["b"])
    assert alert_of_a not in {a["id"] for a in alerts["alerts"]}
    _s, audit = call(srv, "GET", "/api/audit", None, tokens["b"])
    assert {e["actor"] for e in audit["entries"]} <= {B}


def test_the_right_token_sees_its_own_things_and_only_those(
    world: dict[str, Any], alert_of_a: int
) -> None:
    srv, tokens = world["srv"], world["tokens"]
    for path in (f"/api/devices/{C}/el-1-1/history", f"/api/alerts/{alert_of_a}",
                 f"/api/communities/{C}/fire-lanes/occupancy"):  # fmt: skip
        status, answer = call(srv, "GET", path, None, tokens["a"])
        assert status == 200, (path, answer)
    # A company cannot manage gateways or read ingest diagnostics: only the operator.
    assert call(srv, "GET", "/api/ingest", None, tokens["a"])[0] == 403
    assert call(srv, "GET", "/api/ingest", None, ADMIN_TOKEN)[0] == 200
    # Market supervision sees the district's elevators, not a community's gates or lanes,
    # nor gateways (whose health names every device they poll).
    market = tokens["market"]
    assert call(srv, "GET", f"/api/devices/{C}/el-1-1/history", None, market)[0] == 200
    assert call(srv, "GET", f"/api/devices/{C}/fl-1/history", None, market)[0] == 404
    _s, lanes = call(srv, "GET", f"/api/communities/{C}/fire-lanes/occupancy", None, market)
    assert lanes["fire_lanes"] == {} or not lanes["fire_lanes"]
    _s, overview = call(srv, "GET", "/api/overview", None, market)
    kinds = {d["kind"] for c in overview["communities"] for d in c["devices"]}
    assert kinds == {"elevator"}
    assert len(overview["communities"]) > 1  # every community of the district with elevators
    assert overview["gateways"] == []
    _s, uptime = call(srv, "GET", f"/api/communities/{C}/gateways/uptime", None, market)
    assert not uptime["gateways"]
    # A maintenance unit sees the elevators it maintains.
    _s, overview = call(srv, "GET", "/api/overview", None, tokens["unit"])
    assert {d["kind"] for c in overview["communities"] for d in c["devices"]} == {"elevator"}


def test_a_50_mb_body_is_refused_without_being_read(world: dict[str, Any]) -> None:
    srv = world["srv"]

    def rss_kb() -> int:
        status = Path(f"/proc/{srv.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status)[1])  # type: ignore[index]

    before = rss_kb()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        head = (
            "POST /api/maintenance HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {world['tokens']['a']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 52428800\r\n\r\n"
        )
        sock.sendall(head.encode() + b"[" * 65536)  # 64 KiB of the announced 50 MB
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, "the server closed without answering"
            answer += chunk
        assert time.monotonic() - started < 5
        # The server hangs up rather than reading the rest: the socket ends after the answer
        # (once a short drain, server/serving.py LINGER_S, is over).
        sock.settimeout(5)
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"Connection: close" in answer
    assert rss_kb() - before < 10_000  # not 50 MB more


def test_each_token_is_rate_limited_on_its_own(world: dict[str, Any]) -> None:
    srv, tokens = world["srv"], world["tokens"]
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    statuses: list[int] = []
    retry_after = None
    for _ in range(250):  # burst 100, 20 a second: far more than a second's worth
        conn.request("GET", "/api/audit?limit=1",
                     headers={"Authorization": f"Bearer {tokens['rate']}"})  # fmt: skip
        resp = conn.getresponse()
        body = resp.read()
        statuses.append(resp.status)
        if resp.status == 429:
            retry_after = resp.getheader("Retry-After")
            assert "requests" in json.loads(body)["error"]
    conn.close()
    assert statuses[:100] == [200] * 100
    assert statuses.count(429) >= 50, statuses
    assert retry_after is not None
    assert int(retry_after) >= 1
    assert call(srv, "GET", "/api/audit?limit=1", None, tokens["a"])[0] == 200  # its own bucket


def test_the_stream_carries_only_what_the_token_sees(world: dict[str, Any]) -> None:
    srv, broker = world["srv"], world["broker"]
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=15)
    conn.request("GET", "/api/stream", headers={"Authorization": f"Bearer {world['tokens']['b']}"})
    resp = conn.getresponse()
    assert resp.status == 200
    resp.readline(), resp.readline()  # retry: 2000
    lane = {"dev": "fl-1", "kind": "fire_lane", "fields": {"occupied": True}}
    publish(broker, f"linli/v1/{C}/gw-1/up", envelope(C, 2, lane))  # A's
    publish(broker, "linli/v1/longzhu-baihe/gw-1/up", envelope("longzhu-baihe", 1, lane))  # B's
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(u["community"] == "longzhu-baihe" for u in seen):
        line = resp.readline().decode()
        if line.startswith("data: "):
            seen.extend(json.loads(line[6:]))
    conn.close()
    assert any(u["community"] == "longzhu-baihe" for u in seen)
    assert all(u["community"] == "longzhu-baihe" for u in seen), seen


def test_tokens_are_listed_and_revoked_from_the_cli_and_audited(world: dict[str, Any]) -> None:
    settings = str(world["settings"])
    listed = run_linli("tokens", "list", "--all", "--config", settings)
    assert listed.returncode == 0, listed.stderr
    states = {line.split()[0]: line.split()[2] for line in listed.stdout.splitlines()[1:]}
    assert states[world["revoked_id"]] == "revoked"
    assert "expired" in states.values()
    for token in world["tokens"].values():
        assert token not in listed.stdout  # digests only; the tokens were shown once
    bad = run_linli("tokens", "revoke", "zz", "--config", settings)
    assert bad.returncode == 2
    assert "is not a token id" in bad.stderr
    _s, audit = call(world["srv"], "GET", "/api/audit?limit=1000", None, ADMIN_TOKEN)
    revoked = [e for e in audit["entries"] if e["action"] == "token_revoked"]
    assert [(e["target"], e["detail"]["token"], e["detail"]["reason"]) for e in revoked] == [
        (A, world["revoked_id"], "test")
    ]
    created = [e for e in audit["entries"] if e["action"] == "token_created"]
    assert len(created) == 7
    assert all(e["detail"]["expires_t"] for e in created)


def test_evidence_is_an_opaque_id_outside_the_operator(world: dict[str, Any]) -> None:
    """Issue 13, item 9: a camera's snapshot name (which may carry a plate) is stored and
    served as an opaque id; ``linli evidence id`` finds which snapshot an id stands for."""
    srv, a = world["srv"], world["tokens"]["a"]
    plate = "snap/\u4eacA88888_1201.jpg"
    lane = {"dev": "fl-2", "kind": "fire_lane", "fields": {"occupied": True, "evidence": plate}}
    publish(world["broker"], f"linli/v1/{C}/gw-1/up", envelope(C, 3, lane))
    deadline = time.monotonic() + 10
    items: list[dict[str, Any]] = []
    while not items and time.monotonic() < deadline:
        _s, body = call(srv, "GET", f"/api/devices/{C}/fl-2/history?since=0", None, a)
        items = body["items"]
        time.sleep(0.1)
    found = run_linli("evidence", "id", plate, "--config", str(world["settings"]))
    assert found.returncode == 0, found.stderr
    opaque = found.stdout.split()[0]
    assert opaque.startswith("ev_")
    assert [i["fields"]["evidence"] for i in items] == [opaque]
    for token in (a, ADMIN_TOKEN):
        _s, overview = call(srv, "GET", "/api/overview", None, token)
        assert "A88888" not in json.dumps(overview, ensure_ascii=False)


def test_header_tricks_oversized_bodies_and_a_token_in_the_query(world: dict[str, Any]) -> None:
    """Found by an outside tester: two Authorization headers, an oversized gateway config or
    command (was a 500), a token sent in the query string (was written to the access log)."""
    srv, tokens = world["srv"], world["tokens"]
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.putrequest("GET", "/api/ingest")
    conn.putheader("Authorization", f"Bearer {ADMIN_TOKEN}")
    conn.putheader("Authorization", f"Bearer {tokens['b']}")
    conn.endheaders()
    resp = conn.getresponse()
    assert (resp.status, json.loads(resp.read())["error"]) == (
        400, "send one Authorization header, not several")  # fmt: skip
    conn.close()
    big_config = {"config_version": 100, "edge": {"x": "y" * 270_000}}
    status, answer = call(srv, "PUT", f"{GP}/config", big_config, ADMIN_TOKEN)
    assert status == 413
    assert answer["error"].endswith("bytes, over the limit of 262144")
    big_command = {"op": "ping", "pad": "z" * 17_000}
    assert call(srv, "POST", f"{GP}/commands", big_command, ADMIN_TOKEN)[0] == 413
    secret = "lk_query-string-token-must-not-be-logged"
    assert call(srv, "GET", f"/api/overview?access_token={secret}", None, None)[0] == 401
    time.sleep(0.2)
    log = srv.log.read_text()
    assert secret not in log
    assert "/api/overview?access_token=***" in log
    assert "Traceback" not in log
