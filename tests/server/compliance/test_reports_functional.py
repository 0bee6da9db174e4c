"""Compliance through a real ``linli server`` (mosquitto, SQLite, the demo registry of 山亭):
an alert from a gateway, an assessment computed by the housing bureau and signed by the
street office, its reports as XLSX (read back with openpyxl), HTML (rendered in headless
Chromium) and PDF, records entered by organisations, bad input refused with nothing changed,
the scheduled ledger mailed with its XLSX to a real SMTP receiver (aiosmtpd) once, and the
``linli report`` CLI on the same database."""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import email.policy
import hashlib
import http.client
import http.server
import io
import json
import shutil
import sqlite3
import struct
import threading
import time
import unicodedata
import urllib.parse
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import pytest
import yaml
from aiosmtpd.controller import Controller
from openpyxl import load_workbook
from playwright.async_api import async_playwright
from pypdf import PdfReader

from server.alerting.notifier import sign_v2
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
from tests.server.web.test_access_functional import envelope, publish

pytestmark = pytest.mark.functional

C = "meihuayuan"
HOOK_SECRET = "report-hook-secret-0123"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHANGHAI = ZoneInfo("Asia/Shanghai")


class Mailbox:
    """A real SMTP server (aiosmtpd) that keeps what it is sent."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, _server: object, _session: object, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's hook name)
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        self.messages.append(msg)
        return "250 Message accepted for delivery"


class Hook(http.server.BaseHTTPRequestHandler):
    """A webhook receiver: keeps every POST's headers and body (the class is the store)."""

    got: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Hook.got.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


def call(
    srv: ServerProc,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    content_type: str = "application/json",
) -> tuple[int, bytes, str]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheader("Content-Type", "")
    finally:
        conn.close()


def api(srv: ServerProc, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    status, raw, _ = call(srv, method, path, body, token)
    return status, json.loads(raw) if raw else None


def count(db: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("compliance")
    port = free_port()
    broker = Broker(port, _start_mosquitto(tmp, port), tmp)
    box = Mailbox()
    box.controller.start()
    http_port = free_port()
    settings = write_settings(tmp, broker, http_port)
    # The ledger is due on today's weekday a minute ago: the server sends it when it starts.
    due = dt.datetime.now(SHANGHAI) - dt.timedelta(minutes=1)
    text = settings.read_text().replace(
        'ledger_schedule = ""', f'ledger_schedule = "{due.isoweekday()} {due:%H:%M}"'
    )
    settings.write_text(text + f'smtp_url = "smtp://127.0.0.1:{box.port}"\n')
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    reg = yaml.safe_load(DEMO_REGISTRY.read_text())
    reg["organisations"].append(
        {"id": "so-other", "kind": "street_office", "name": "另一街道", "district": "shanting"}
    )
    for org in reg["organisations"]:
        if org["id"] in ("so-shancheng", "hb-shanting"):
            org["channels"] = [{"kind": "email", "address": f"duty@{org['id']}.example"}]
        if org["id"] == "hb-shanting":  # the bureau's system also takes a signed webhook
            url = f"http://127.0.0.1:{hook.server_port}/reports"
            org["channels"].append({"kind": "webhook", "secret": HOOK_SECRET, "url": url})
    registry = tmp / "registry.yaml"
    registry.write_text(yaml.safe_dump(reg, allow_unicode=True))
    done = run_linli("registry", "import", str(registry), "--config", str(settings))
    assert done.returncode == 0, done.stderr
    tokens = {}
    for org in (
        "hb-shanting",
        "so-shancheng",
        "pc-anju",
        "pc-longzhu",
        "so-other",
        "cc-meiyuan",
        "nc-shancheng",
    ):
        made = run_linli("tokens", "create", org, "--config", str(settings))
        assert made.returncode == 0, made.stderr
        tokens[org] = made.stdout.split()[-1]
    state: dict[str, Any] = {
        "srv": start_server(tmp, settings, http_port),
        "tokens": tokens,
        "broker": broker,
        "box": box,
        "tmp": tmp,
        "db": tmp / "linli.db",
        "settings": settings,
        "http_port": http_port,
    }
    try:
        yield state
    finally:
        code = stop(state["srv"].proc)  # the one running now (a test restarts it)
        hook.shutdown()
        hook.server_close()
        box.controller.stop()
        broker.proc.terminate()
        broker.proc.wait(timeout=10)
        assert code in (0, None), state["srv"].log.read_text()[-3000:]


def wait(check: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return got


def quarter_now() -> str:
    today = dt.datetime.now(SHANGHAI).date()
    return f"{today.year}-Q{(today.month - 1) // 3 + 1}"


async def test_an_assessment_from_a_gateway_alert_to_signed_reports(world: dict[str, Any]) -> None:
    srv, tokens, box = world["srv"], world["tokens"], world["box"]
    hb, so, a, b = (tokens[k] for k in ("hb-shanting", "so-shancheng", "pc-anju", "pc-longzhu"))
    q = quarter_now()

    # The scheduled ledger: one mail each to the street office and the housing bureau, with
    # the XLSX attached.
    wait(lambda: len(box.messages) >= 2, "the scheduled ledgers")
    assert sorted(m["To"] for m in box.messages) == [
        "duty@hb-shanting.example",
        "duty@so-shancheng.example",
    ]
    # ... and one signed webhook to the bureau's system, linking the report in the API.
    [(headers, body)] = wait(lambda: Hook.got, "the ledger's webhook")
    sent = json.loads(body)
    assert (sent["kind"], sent["report"], sent["org"]) == ("report", "ledger", "hb-shanting")
    assert sent["url"].startswith(f"http://127.0.0.1:{world['http_port']}/api/compliance/reports/")
    stamp, delivery = int(headers["X-Linli-Timestamp"]), headers["X-Linli-Delivery"]
    assert headers["X-Linli-Signature-256"] == sign_v2(HOOK_SECRET, stamp, delivery, body)
    for msg in box.messages:
        [part] = list(msg.iter_attachments())
        assert part.get_filename().startswith("ledger-")
        sheet = load_workbook(io.BytesIO(part.get_content())).active
        assert sheet is not None
        assert "台账" in str(sheet["A1"].value)

    # A passenger trapped in meihuayuan, acknowledged by its company.
    trapped = {"dev": "el-1-1", "kind": "elevator", "event": "trapped", "state": "start"}
    publish(world["broker"], f"linli/v1/{C}/gw-1/up", envelope(C, 1, trapped))
    alerts = wait(
        lambda: api(srv, "GET", f"/api/alerts?community={C}", a)[1]["alerts"], "the trapped alert"
    )
    alert = alerts[0]["id"]
    status, _ = api(srv, "POST", f"/api/alerts/{alert}/transitions", a, {"to": "acknowledged"})
    assert status == 200

    # Computed by the housing bureau; a company cannot compute or sign.
    path = f"/api/compliance/assessments/shanting/{q}"
    assert api(srv, "POST", path, a)[0] == 403
    status, body = api(srv, "POST", path, hb)
    assert status == 200, body
    anju = body["companies"]["pc-anju"]
    assert anju["measures"]["trapped"]["value"] == 1
    assert anju["measures"]["trapped"]["evidence"] == [f"a:{alert}"]
    # Nobody recorded on site yet, but its 30-minute arrival deadline is still ahead: not
    # judged yet (neither "not recorded" nor late).
    assert anju["measures"]["arrival_not_recorded"]["value"] == 0
    assert anju["measures"]["arrival_in_time"]["value"] is None
    lines = {ln["measure"]: ln["points"] for ln in anju["lines"]}
    assert lines["trapped"] == -2
    assert "arrival_not_recorded" not in lines
    assert anju["score"] == pytest.approx(100 + sum(lines.values()))
    assert (body["version"], body["state"]) == (1, "computed")
    status, answer = api(srv, "POST", f"{path}/sign", a)
    assert status == 403
    assert "may not sign" in answer["error"]
    status, signed = api(srv, "POST", f"{path}/sign", so)
    assert (status, signed["state"], signed["signed_by"]) == (200, "signed", "so-shancheng")
    # A company reads only its own entry.
    status, own = api(srv, "GET", path, b)
    assert status == 200
    assert set(own["companies"]) <= {"pc-longzhu"}
    assert own["communities"] == {}

    # The rescue record, entered by the company: its arrival now counts.
    rescue = {
        "arrival_t": alerts[0]["opened_t"] + 1,
        "released_by": "腾达维保 张工",
        "method": "盘车放人",
    }
    status, rec = api(srv, "POST", f"/api/compliance/rescue/{alert}", a, rescue)
    assert status == 201, rec
    assert rec["late"] is False
    assert api(srv, "POST", f"/api/compliance/rescue/{alert}", a, rescue)[0] == 409
    # The signed period does not move; a correction makes version 2 with the new record.
    status, again = api(srv, "POST", path, hb)
    assert (again["version"], again["state"]) == (1, "signed")
    assert again["companies"] == signed["companies"]
    status, fixed = api(srv, "POST", path, hb, {"correction": "补录救援记录"})
    assert (status, fixed["version"], fixed["reason"]) == (200, 2, "补录救援记录")
    assert fixed["companies"]["pc-anju"]["measures"]["arrival_in_time"]["value"] == 1.0
    assert api(srv, "POST", f"{path}/sign", so)[0] == 200

    # Reports: XLSX read back; HTML rendered in Chromium; PDF printed by Chromium.
    report = f"/api/compliance/reports/assessment?table=shanting&period={q}"
    status, raw, kind = call(srv, "GET", report + "&format=xlsx", None, hb)
    assert status == 200
    assert kind.startswith("application/vnd.openxmlformats")
    rows = [
        list(r) for r in load_workbook(io.BytesIO(raw)).worksheets[0].iter_rows(values_only=True)
    ]
    [row] = [r for r in rows if r[1] == anju["name"]]
    assert row[2] == fixed["companies"]["pc-anju"]["score"]
    status, page, _ = call(srv, "GET", report + "&format=html", None, hb)
    assert status == 200
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            tab = await browser.new_page()
            await tab.set_content(page.decode())
            assert "山亭区物业服务质量季度考核" in await tab.title()
            text = await tab.inner_text("body")
            assert anju["name"] in text
            assert str(fixed["companies"]["pc-anju"]["score"]) in text
        finally:
            await browser.close()
    status, pdf, kind = call(srv, "GET", report + "&format=pdf", None, hb)
    assert (status, kind, pdf[:5]) == (200, "application/pdf", b"%PDF-")
    # The PDF's text (NFKC: the CJK font maps some characters to their radical forms).
    printed = unicodedata.normalize(
        "NFKC", "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    )
    assert "山亭区物业服务质量季度考核" in printed
    assert anju["name"] in printed
    assert str(fixed["companies"]["pc-anju"]["score"]) in printed
    status, ranking, _ = call(
        srv,
        "GET",
        f"/api/compliance/reports/ranking?table=shanting&period={q}&format=csv",
        None,
        hb,
    )
    assert status == 200
    assert ranking.decode("utf-8-sig").splitlines()[0].startswith("榜单")
    status, ledger = api(srv, "GET", f"/api/compliance/reports/ledger?period={q}&format=json", so)
    assert any(r["id"] == alert and r["holder"] == "pc-anju" for r in ledger)

    # The spot-check dossier: devices, the alert with its timeline, the company's score.
    status, dossier = api(srv, "GET", f"/api/compliance/dossier/{C}", so)
    assert status == 200
    assert dossier["company"]["id"] == "pc-anju"
    [seen] = [x for x in dossier["alerts"] if x["id"] == alert]
    assert [s["to"] for s in seen["timeline"]][:2] == ["open", "acknowledged"]
    assert dossier["scores"][0]["score"] == fixed["companies"]["pc-anju"]["score"]
    assert api(srv, "GET", f"/api/compliance/dossier/{C}", b)[0] == 404


def tiny_png() -> bytes:
    """A real 1×1 PNG (signature, IHDR, IDAT, IEND), made here."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


def multipart(fields: dict[str, str], photo: bytes | None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    if photo is not None:
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; '
            'filename="p.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
            + photo
            + b"\r\n"
        )
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def test_records_and_bad_input(world: dict[str, Any]) -> None:
    srv, tokens, db = world["srv"], world["tokens"], world["db"]
    hb, so, a = tokens["hb-shanting"], tokens["so-shancheng"], tokens["pc-anju"]
    tables = ("inspection_results", "findings", "meeting_records", "assessments")
    before = {t: count(db, t) for t in tables}
    # A CSV with one bad row: nothing stored, the row named.
    csv_rows = (
        "community,device,day,result,certificate_no,next_date\n"
        f"{C},el-1-1,2026-11-02,合格,TJ-2026-001,2027-11-01\n"
        f"{C},el-9-9,2026-11-02,合格,TJ-2026-002,2027-11-01\n"
        f"{C},el-2-1,2026-11-31,合格,TJ-2026-003,2027-11-01\n"
    )
    status, raw, _ = call(
        srv, "POST", "/api/compliance/inspections", csv_rows.encode(), a, "text/csv"
    )
    error = json.loads(raw)["error"]
    assert status == 400
    # Rows as the spreadsheet counts them (the header is row 1), in order.
    assert error == (
        "inspections: nothing stored; row 3: no elevator 'el-9-9' in community 'meihuayuan'; "
        "row 4: day: '2026-11-31' is not a date (YYYY-MM-DD)"
    )
    # Periods and tables that do not exist, a period with no data yet, a finding by a
    # company and one for an item the table does not have.
    assert api(srv, "GET", "/api/compliance/measures?period=2026-Q5&community=" + C, so)[0] == 400
    assert api(srv, "POST", "/api/compliance/assessments/nowhere/2026-Q4", hb)[0] == 404
    status, answer = api(srv, "POST", "/api/compliance/assessments/shanting/2099-Q1", hb)
    assert (status, "has not started" in answer["error"]) == (409, True)
    form, kind = multipart({"community": C, "item": "ledger_missing", "points": "2"}, None)
    assert call(srv, "POST", "/api/compliance/findings", form, a, kind)[0] == 403
    # Another street's office does not see meihuayuan at all.
    status, raw, _ = call(srv, "POST", "/api/compliance/findings", form, tokens["so-other"], kind)
    assert (status, json.loads(raw)["error"]) == (404, f"no community {C!r}")
    form, kind = multipart({"community": C, "item": "no_such_item", "points": "2"}, None)
    status, raw, _ = call(srv, "POST", "/api/compliance/findings", form, so, kind)
    assert status == 400
    assert "'no_such_item' is not an item of shanting" in json.loads(raw)["error"]
    # From an outside test: other digits, a fake picture, a broken body, a date as a number,
    # a meeting by the neighbourhood centre, a second signature.
    q = quarter_now()
    wide = urllib.parse.quote(q.translate(str.maketrans("0123456789", "０１２３４５６７８９")))
    status, _ = api(srv, "POST", f"/api/compliance/assessments/shanting/{wide}", hb)
    assert status == 400
    form, kind = multipart({"community": C, "item": "ledger_missing", "points": "1"},
                           b"\x89PNG\r\n\x1a\n" + b"garbage" * 5)  # fmt: skip
    status, raw, _ = call(srv, "POST", "/api/compliance/findings", form, so, kind)
    assert (status, json.loads(raw)["error"]) == (
        400, "finding: photo: the bytes are not a image/jpeg picture")  # fmt: skip
    status, raw, _ = call(srv, "POST", "/api/compliance/findings", b"--zz\r\nbroken", so,
                          "multipart/form-data; boundary=zz")  # fmt: skip
    assert status == 400
    row = {"community": C, "device": "el-1-1", "day": 20261102, "result": "passed"}
    status, answer = api(srv, "POST", "/api/compliance/inspections", a, row)
    assert status == 400
    assert answer["error"] == (
        "inspections: nothing stored; item 1: day: 20261102 is not a date (YYYY-MM-DD)"
    )
    meeting = {"community": C, "day": "2026-11-03"}
    assert api(srv, "POST", "/api/compliance/meetings", tokens["nc-shancheng"], meeting)[0] == 403
    status, answer = api(srv, "POST", f"/api/compliance/assessments/shanting/{q}/sign", so)
    assert (status, "already signed" in answer["error"]) == (409, True)
    # The committee sees its community's dossier, not the company's scores.
    status, dossier = api(srv, "GET", f"/api/compliance/dossier/{C}", tokens["cc-meiyuan"])
    assert (status, dossier["scores"]) == (200, [])
    assert {t: count(db, t) for t in tables} == before

    # Good records: the CSV without its bad rows; a meeting; a finding with its photo.
    good = "\n".join(csv_rows.splitlines()[:2]) + "\n"
    status, raw, _ = call(srv, "POST", "/api/compliance/inspections", good.encode(), a, "text/csv")
    assert (status, json.loads(raw)) == (201, {"stored": 1, "replaced": 0})
    status, _ = api(
        srv, "POST", "/api/compliance/meetings", so, {"community": C, "day": "2026-11-02"}
    )
    assert status == 201
    photo = b"\xff\xd8\xff\xe0" + b"fake jpeg" * 100
    form, kind = multipart(
        {"community": C, "item": "ledger_missing", "points": "2", "note": "台账缺11月记录"}, photo
    )
    status, raw, _ = call(srv, "POST", "/api/compliance/findings", form, so, kind)
    finding = json.loads(raw)
    assert (status, finding["company"]) == (201, "pc-anju"), finding
    stored = world["tmp"] / "evidence" / f"{hashlib.sha256(photo).hexdigest()}.jpg"
    assert stored.read_bytes() == photo
    assert count(db, "inspection_results") == before["inspection_results"] + 1


def test_the_cli_reads_the_same_periods_and_the_ledger_went_once(world: dict[str, Any]) -> None:
    srv, box = world["srv"], world["box"]
    # The server restarted: the ledger already sent is not sent again.
    assert stop(srv.proc) == 0
    world["srv"] = start_server(world["tmp"], world["settings"], world["http_port"])
    time.sleep(3)
    assert (len(box.messages), len(Hook.got)) == (2, 1)
    settings = str(world["settings"])
    q = quarter_now()
    done = run_linli(
        "report", "assessment", "shanting", q, "--format", "json", "--config", settings
    )
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert (body["version"], body["state"]) == (2, "signed")
    out = world["tmp"] / "ledger.xlsx"
    done = run_linli("report", "ledger", "so-shancheng", q, "--out", str(out), "--config", settings)
    assert done.returncode == 0, done.stderr
    assert load_workbook(out).active is not None
    bad = world["tmp"] / "bad-table.yaml"
    bad.write_text(
        (Path(__file__).parents[3] / "server/compliance/tables/chibi.yaml")
        .read_text()
        .replace("measure: trapped,", "measure: traped,")
    )
    done = run_linli("report", "tables", "--check", str(bad))
    assert done.returncode == 2
    assert "'traped' is not a measure; did you mean 'trapped'?" in done.stderr
    assert "bad-table.yaml:14: deductions[0].measure" in done.stderr
    done = run_linli("report", "correct", "shanting", q, "--reason", " ", "--config", settings)
    assert done.returncode == 2
    assert "--reason: say why" in done.stderr
    done = run_linli(
        "report", "sign", "shanting", "2026-Q9", "--org", "hb-shanting", "--config", settings
    )
    assert done.returncode == 2
    assert "2026-Q9" in done.stderr
    assert ADMIN_TOKEN not in done.stderr


async def test_the_dossier_on_a_phone_records_a_finding_with_its_photo(
    world: dict[str, Any],
) -> None:
    srv, so, db = world["srv"], world["tokens"]["so-shancheng"], world["db"]
    before = count(db, "findings")
    photo = world["tmp"] / "site.png"
    photo.write_bytes(tiny_png())
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            tab = await browser.new_page(viewport={"width": 390, "height": 844})
            await tab.goto(f"http://127.0.0.1:{srv.port}/dossier/{C}#token={so}")
            await tab.wait_for_selector("#devices li")
            assert await tab.inner_text("#title") == "梅花园"
            assert "#token" not in tab.url  # the token left the address bar
            assert "安居" in await tab.inner_text("#sub")  # the company serving it today
            assert await tab.locator("#devices li").count() >= 3
            # No page wider than the phone.
            assert await tab.evaluate("document.documentElement.scrollWidth") <= 390
            await tab.select_option("#item", "fire_lane_signs")
            await tab.fill("#points", "1.5")
            await tab.fill("#note", "3号楼消防通道标识脱落")
            await tab.set_input_files("#photo", str(photo))
            await tab.click("button[type=submit]")
            await tab.wait_for_function(
                "document.querySelector('#findings') && "
                "document.querySelector('#findings').innerText.includes('3号楼')"
            )
        finally:
            await browser.close()
    assert count(db, "findings") == before + 1
    stored = world["tmp"] / "evidence" / f"{hashlib.sha256(photo.read_bytes()).hexdigest()}.png"
    assert stored.exists()
