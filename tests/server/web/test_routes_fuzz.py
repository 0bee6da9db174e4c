"""No input gives a 5xx: hypothesis over every route's path and query parameters, bodies and
credentials, against a real ``linli server`` process (real mosquitto, SQLite, the demo
registry), as an outsider would send them. Issue 12, item 6.

The route table here is checked against the application's own router, so a route added
without being fuzzed fails :func:`test_every_route_is_fuzzed`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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

ADMIN = ADMIN_TOKEN

#: (method, path template, query parameter names the route reads)
ROUTES: list[tuple[str, str, tuple[str, ...]]] = [
    ("GET", "/", ("lang",)),
    ("GET", "/healthz", ()),
    ("GET", "/api/overview", ()),
    ("GET", "/api/ingest", ()),
    ("GET", "/api/stream", ()),  # server-sent events: the status is checked, not the body
    ("GET", "/api/telemetry/counts", ("community", "flush")),
    ("GET", "/api/devices/{community}/{dev}/history", ("since", "until", "limit")),
    ("GET", "/api/devices/{community}/{dev}/series", ("since", "until", "points")),
    ("GET", "/api/devices/{community}/{dev}/diagnostics", ()),
    ("GET", "/api/communities/{community}/elevators/availability", ("since", "until")),
    ("GET", "/api/communities/{community}/elevators/trips", ("since", "until")),
    ("GET", "/api/communities/{community}/fire-lanes/occupancy", ("since", "until")),
    ("GET", "/api/communities/{community}/gateways/uptime", ("since", "until")),
    ("GET", "/api/alerts", ("community", "rule", "severity", "state", "since", "until", "limit")),
    ("GET", "/api/alerts/{id}", ()),
    ("GET", "/api/audit", ("since", "until", "limit")),
    ("POST", "/api/alerts/{id}/transitions", ()),
    ("POST", "/api/maintenance", ()),
    ("PUT", "/api/gateways/{community}/{gateway}/config", ()),
    ("GET", "/api/gateways/{community}/{gateway}/config", ()),
    ("POST", "/api/gateways/{community}/{gateway}/commands", ()),
    ("GET", "/api/gateways/{community}/{gateway}/commands", ("limit",)),
    ("GET", "/api/gateways/{community}/{gateway}/commands/{id}", ()),
    ("GET", "/api/compliance/tables", ()),
    ("GET", "/api/compliance/measures", ("period", "community", "company")),
    ("GET", "/api/compliance/assessments/{table}/{period}", ()),
    ("POST", "/api/compliance/assessments/{table}/{period}", ()),
    ("POST", "/api/compliance/assessments/{table}/{period}/sign", ()),
    ("GET", "/api/compliance/reports/{report}", ("period", "table", "org", "format", "lang")),
    ("POST", "/api/compliance/rescue/{id}", ()),
    ("POST", "/api/compliance/inspections", ()),
    ("POST", "/api/compliance/meetings", ()),
    ("POST", "/api/compliance/findings", ()),
    ("GET", "/api/compliance/dossier/{community}", ()),
    ("GET", "/dossier/{community}", ()),
    ("GET", "/screen/{id}", ("lang", "sound")),
    ("GET", "/screen-data/{id}/snapshot", ()),
    ("GET", "/screen-data/{id}/stream", ()),
    ("GET", "/api/screens", ()),
    ("POST", "/api/screens", ()),
    ("POST", "/api/screens/{id}/token", ()),
    ("POST", "/api/screens/{id}/revoke", ()),
]

# Values that reach parsers' edges: other scripts' digits, huge numbers, signs, separators,
# the registry's real ids, percent signs, control characters.
EDGE = st.sampled_from([
    "", "0", "-1", "1", "4", "²", "٤", "１", "1_000", " 7", "+5", "1e3", "9" * 30,
    str(2**63), str(2**63 - 1), "nan", "meihuayuan", "gw-1", "el-1-1", "fl-1",
    "pc-anju", "%", "%00", "..", "/", "\x00", "\u202e", "a" * 5000, "shanting", "2026-Q4",
    "2026-W53", "2026-02-30..2026-03-01", "9999-Q4", "2026-13", "ledger", "progress", "pdf",
    "xlsx", "csv", "json", "so-shancheng", "hb-shanting", "shancheng-hall",
])  # fmt: skip
VALUE = st.one_of(EDGE, st.text(max_size=40))
TOKENS = st.sampled_from([None, ADMIN, "org", "x" * 40, "", "Bearer", "\u00e9" * 20])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProc, str]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    broker = Broker(port, _start_mosquitto(tmp, port), tmp)
    http_port = free_port()
    path = write_settings(tmp, broker, http_port)
    # Hundreds of requests a second, most with bad tokens: no 429s here (test_access_functional).
    path.write_text(path.read_text() + "api_rate_per_s = 100000\napi_refused_per_min = 1000000\n")
    done = run_linli("registry", "import", str(DEMO_REGISTRY), "--config", str(path))
    assert done.returncode == 0, done.stderr
    made = run_linli("tokens", "create", "pc-anju", "--config", str(path))
    assert made.returncode == 0, made.stderr
    org_token = made.stdout.split()[-1]
    srv = start_server(tmp, path, http_port)
    try:
        yield srv, org_token
    finally:
        code = stop(srv.proc)
        broker.proc.terminate()
        broker.proc.wait(timeout=10)
        assert code == 0, srv.log.read_text()[-3000:]


def request(
    port: int, method: str, target: str, body: bytes | None, token: str | None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}".encode().decode("latin-1")
    try:
        conn.request(method, target, body=body, headers=headers)
        resp = conn.getresponse()
        if resp.getheader("Content-Type", "").startswith("text/event-stream"):
            return resp.status, b""  # an endless stream
        return resp.status, resp.read()
    finally:
        conn.close()


def test_every_route_is_fuzzed(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"))
    served_routes = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
        and not r.resource.canonical.startswith("/static")
    }  # fmt: skip
    assert served_routes == {(m, p) for m, p, _ in ROUTES}


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_input_gives_a_server_error(served: tuple[ServerProc, str], data: st.DataObject) -> None:
    srv, org_token = served
    method, template, names = data.draw(st.sampled_from(ROUTES), label="route")
    path = template
    for param in ("community", "dev", "gateway", "id", "table", "period", "report", "alert"):
        if "{" + param + "}" in path:
            value = data.draw(VALUE, label=param) or "x"
            path = path.replace("{" + param + "}", urllib.parse.quote(value, safe=""))
    query = data.draw(
        st.dictionaries(st.sampled_from([*names, "x"]) if names else st.just("x"), VALUE,
                        max_size=4), label="query")  # fmt: skip
    target = path + ("?" + urllib.parse.urlencode(query) if query else "")
    body: bytes | None = None
    if method in ("POST", "PUT"):
        body = data.draw(
            st.one_of(
                st.binary(max_size=200),
                st.recursive(
                    st.none() | st.booleans() | st.integers() | VALUE,
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(["state", "note", "op", "device",
                                                       "community", "day", "version", "x",
                                                       "correction", "arrival_t", "result",
                                                       "next_date", "released_by", "method",
                                                       "id", "communities", "rotate_s",
                                                       "lang", "org"]),
                                      inner, max_size=4),
                    max_leaves=8,
                ).map(lambda v: json.dumps(v).encode()),
            ),
            label="body",
        )  # fmt: skip
    token = data.draw(TOKENS, label="token")
    status, answer = request(srv.port, method, target, body,
                             org_token if token == "org" else token)  # fmt: skip
    assert status < 500, (method, target, body, status, answer[:500])
    # (A request line over 8 KiB is refused by aiohttp's parser, before any route, in text.)
    if target.startswith("/api/") and status >= 400 and len(target) < 8000:
        assert "error" in json.loads(answer), answer[:500]


@pytest.mark.parametrize(
    ("target", "want"),
    [
        ("/api/alerts/%C2%B2", 404),  # a superscript 2
        ("/api/alerts/%D9%A4", 404),  # an Arabic-Indic 4 is not alert 4
        ("/api/alerts/99999999999999999999999", 404),
        ("/api/alerts/-1", 404),
        ("/api/alerts?limit=%D9%A4", 400),
        ("/api/devices/meihuayuan/el-1-1/history?since=1_000", 400),
    ],
)
def test_ids_and_numbers_are_ascii_digits_in_range(
    served: tuple[ServerProc, str], target: str, want: int
) -> None:
    srv, _ = served
    status, answer = request(srv.port, "GET", target, None, ADMIN)
    assert status == want, answer
    assert json.loads(answer)["error"]


@pytest.mark.parametrize(
    ("method", "target", "who"),
    [
        ("POST", "/api/maintenance", "org"),  # the alert API's transitions: test_alerts_functional
        ("PUT", "/api/gateways/meihuayuan/gw-1/config", ADMIN),
        ("POST", "/api/gateways/meihuayuan/gw-1/commands", ADMIN),
    ],
)
def test_a_body_over_1_mib_is_413(
    served: tuple[ServerProc, str], method: str, target: str, who: str
) -> None:
    srv, org_token = served
    token = org_token if who == "org" else who
    status, answer = request(srv.port, method, target, b"[" + b"1," * 600_000 + b"1]", token)
    assert status == 413, answer[:300]
    assert "error" in json.loads(answer)


def test_a_wrong_method_is_405_with_allow(served: tuple[ServerProc, str]) -> None:
    srv, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request("DELETE", "/api/alerts", headers={"Authorization": f"Bearer {ADMIN}"})
    resp = conn.getresponse()
    assert resp.status == 405
    assert "GET" in (resp.getheader("Allow") or "")
    assert json.loads(resp.read())["error"]
    conn.close()


def test_reject_excerpts_are_for_the_operator_only(served: tuple[ServerProc, str]) -> None:
    """Issue 13: a rejected payload may hold what a device should never have sent."""
    srv, org_token = served
    port = int(re.search(r"mqtt://127.0.0.1:(\d+)", srv.settings.read_text())[1])  # type: ignore[index]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-leaky-device")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        leak = b'{"v": 1, "plate": "\xe6\xb5\x99A12345", "phone": "13800138000"}'
        client.publish("linli/v1/meihuayuan/gw-1/up", leak, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()

    def rejects(token: str) -> list[dict[str, Any]]:
        status, answer = request(srv.port, "GET", "/api/ingest", None, token)
        assert status == 200
        found: list[dict[str, Any]] = json.loads(answer)["recent_rejects"]
        return found

    deadline = time.monotonic() + 10
    while not rejects(ADMIN) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any("13800138000" in (r["excerpt"] or "") for r in rejects(ADMIN))
    for token, refused in ((None, 401), ("x" * 30, 401), (org_token, 403)):
        status, answer = request(srv.port, "GET", "/api/ingest", None, token)
        assert status == refused
        assert "13800138000" not in answer.decode()


def test_changes_are_audited_append_only_and_each_org_reads_its_own(
    served: tuple[ServerProc, str],
) -> None:
    """Issue 13, item 7: CLI and API changes recorded with who, when, where and what."""
    srv, org_token = served
    visit = {"community": "meihuayuan", "device": "el-1-1", "note": "例行保养"}
    status, answer = request(srv.port, "POST", "/api/maintenance", json.dumps(visit).encode(),
                             org_token)  # fmt: skip
    assert status == 201, answer

    def entries(token: str | None) -> list[dict[str, Any]]:
        status, answer = request(srv.port, "GET", "/api/audit?limit=1000", None, token)
        assert status == 200, answer
        found: list[dict[str, Any]] = json.loads(answer)["entries"]
        return found

    everything = entries(ADMIN)
    actions = {(e["action"], e["actor"].split(":")[0]) for e in everything}
    assert {("registry_import", "cli"), ("token_created", "cli"),
            ("maintenance", "pc-anju")} <= actions  # fmt: skip
    mine = entries(org_token)
    assert mine
    assert {e["actor"] for e in mine} == {"pc-anju"}
    [visit_entry] = [e for e in mine if e["action"] == "maintenance"]
    assert visit_entry["address"] == "127.0.0.1"
    assert visit_entry["detail"]["note"] == "例行保养"
    assert request(srv.port, "GET", "/api/audit", None, None)[0] == 401
    # Append-only, even to someone with the database file in hand.
    db_file = re.search(r'database_url = "sqlite\+aiosqlite:///(.+)"', srv.settings.read_text())
    assert db_file
    with contextlib.closing(sqlite3.connect(db_file[1])) as db:
        for sql in ("UPDATE audit_log SET actor = 'nobody'", "DELETE FROM audit_log"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(sql)


def test_server_log_has_no_tracebacks(served: tuple[ServerProc, str]) -> None:
    srv, _ = served
    status, _answer = request(srv.port, "GET", "/api/alerts?x=" + "a" * 9000, None, ADMIN)
    assert status == 400  # refused by aiohttp's parser: logged as one WARNING line
    log = srv.log.read_text()
    assert "Traceback" not in log, log[log.find("Traceback") - 200 :][:3000]
