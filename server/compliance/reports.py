"""Compliance reports (issue 15): the assessment with its score breakdown and evidence, the
ranking (红黑榜), the weekly ledger (台账) and the progress table, in Chinese (English
switch), as XLSX (openpyxl), CSV (UTF-8 with a byte-order mark, so that Excel reads the
Chinese), a printable HTML page, and PDF (that page printed by headless Chromium: the
browser already installed for the tests and screens, rendering CJK text with the system's
Noto CJK fonts; WeasyPrint would add Pango/Cairo and its own CSS subset).

A report is a list of :class:`Sheet` (a title, headers, rows); each format renders sheets.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import functools
import html
import io
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter

from server.compliance.measures import MEASURES

__all__ = [
    "FORMATS",
    "Format",
    "Lang",
    "ReportError",
    "Sheet",
    "assessment_sheets",
    "ledger_sheets",
    "progress_sheets",
    "ranking_sheets",
    "render",
    "render_pdf",
    "report_title",
]

Format = Literal["xlsx", "csv", "html", "pdf", "json"]
Lang = Literal["zh", "en"]
FORMATS: Final = ("xlsx", "csv", "html", "pdf", "json")
CONTENT_TYPES: Final = {
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
    "json": "application/json",
}


log = logging.getLogger(__name__)


class ReportError(RuntimeError):
    """A report that cannot be rendered here (no Chromium for a PDF)."""


@dataclass(frozen=True, slots=True)
class Sheet:
    title: str
    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]
    note: str = ""


_WORDS: Final[dict[str, tuple[str, str]]] = {
    "rank": ("排名", "Rank"),
    "company": ("企业", "Company"),
    "score": ("得分", "Score"),
    "grade": ("等级", "Grade"),
    "flags": ("榜单与措施", "Lists and measures"),
    "communities": ("小区", "Communities"),
    "days": ("服务天数", "Days served"),
    "kind": ("类别", "Kind"),
    "item": ("项目", "Item"),
    "measure": ("指标", "Measure"),
    "value": ("数值", "Value"),
    "points": ("分值", "Points"),
    "evidence": ("依据", "Evidence"),
    "community": ("小区", "Community"),
    "device": ("设备", "Device"),
    "rule": ("告警类型", "Rule"),
    "severity": ("级别", "Severity"),
    "opened": ("发生时间", "Raised"),
    "responded": ("响应时间", "Responded"),
    "on_site": ("到场时间", "On site"),
    "ended": ("结束时间", "Ended"),
    "state": ("状态", "State"),
    "holder": ("责任单位", "Responsible"),
    "steps": ("处置过程", "Timeline"),
    "assessment": ("考核结果", "Assessment"),
    "breakdown": ("扣分明细", "Score breakdown"),
    "measures": ("指标明细", "Measures"),
    "ranking": ("红黑榜", "Red and black lists"),
    "ledger": ("周台账", "Weekly ledger"),
    "progress": ("工作进度表", "Progress table"),
    "red": ("红榜", "red list"),
    "black": ("黑榜", "black list"),
    "red_streak": ("连续红榜", "red streak"),
    "black_streak": ("连续黑榜", "black streak"),
    "key_supervision": ("重点监管", "key supervision"),
    "deduction": ("扣分", "deduction"),
    "bonus": ("加分", "bonus"),
    "finding": ("现场检查", "on-site finding"),
    "period": ("考核期", "Period"),
    "list": ("榜单", "List"),
    "streak": ("连续上榜", "Streak"),
    "consequence": ("后果", "Consequence"),
    "rescue_arrival": ("救援到场", "Rescue arrival"),
    "released_by": ("解困人员与方式", "Released by, how"),
    "signed": ("已签发", "signed off"),
    "computed": ("待审核", "computed, not signed"),
    "superseded": ("已更正", "superseded"),
    "none": ("无企业(社区代管)", "no company (committee)"),
}


def word(key: str, lang: Lang) -> str:
    zh, en = _WORDS.get(key, (key, key))
    return zh if lang == "zh" else en


def measure_name(key: str, lang: Lang) -> str:
    return MEASURES[key][1] if lang == "zh" else key.replace("_", " ")


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    return "" if value is None else value


def _name(entry: Mapping[str, Any], lang: Lang) -> str:
    name = entry.get("name_en") if lang == "en" else None
    return str(name or entry["name"])


def _local(t: int | None, tz: ZoneInfo) -> str:
    if t is None:
        return ""
    return dt.datetime.fromtimestamp(t / 1000, tz).strftime("%Y-%m-%d %H:%M")


def _state_note(body: Mapping[str, Any], tz: ZoneInfo, lang: Lang) -> str:
    """The version and its state: who signed it when, or that it awaits sign-off."""
    if lang == "zh":
        note = f"考核期 {body['start']} 至 {body['end']} · 第{body.get('version', 1)}版"
        if body.get("state") == "signed":
            note += f" · 已签发：{body['signed_by']} {_local(body.get('signed_t'), tz)}"
        else:
            note += " · 待审核签发"
        if body.get("reason"):
            note += f" · 更正原因：{body['reason']}"
        return note
    note = f"Period {body['start']} to {body['end']} · version {body.get('version', 1)}"
    if body.get("state") == "signed":
        note += f" · signed off by {body['signed_by']} on {_local(body.get('signed_t'), tz)}"
    else:
        note += " · awaiting sign-off"
    if body.get("reason"):
        note += f" · corrected: {body['reason']}"
    return note


def report_title(kind: str, name: str, period: str, lang: Lang) -> str:
    """A report's title: who or which table it is for, what, which period."""
    what = {
        "assessment": ("考核结果", "assessment"),
        "ranking": ("红黑榜", "red and black lists"),
        "ledger": ("台账", "ledger"),
        "progress": ("工作进度表", "progress table"),
    }[kind]
    return f"{name} {what[0] if lang == 'zh' else what[1]} {period}"


def assessment_sheets(
    body: Mapping[str, Any], lang: Lang = "zh", tz: ZoneInfo | None = None
) -> list[Sheet]:
    """The assessment: ranked companies; each deduction/bonus/finding with its evidence; and
    every measure of every company. The main sheet's note says the version and who signed."""
    w = functools.partial(word, lang=lang)
    companies = sorted(body["companies"].items(), key=lambda kv: kv[1]["rank"])
    table = body["table_name"] if lang == "zh" else body.get("table_name_en", body["table_name"])
    main = Sheet(
        report_title("assessment", table, body["period"], lang),
        [w("rank"), w("company"), w("score"), w("grade"), w("flags"), w("communities"),
         w("days")],
        [[c["rank"], _name(c, lang), c["score"], c["grade"],
          "、".join(w(f) for f in c["flags"]), "、".join(c["communities"]), c["days"]]
         for _, c in companies],
        note=_state_note(body, tz or ZoneInfo("Asia/Shanghai"), lang),
    )  # fmt: skip
    lines = Sheet(
        w("breakdown"),
        [w("company"), w("kind"), w("item"), w("measure"), w("value"), w("points"),
         w("evidence")],
        [[_name(c, lang), w(ln["kind"]), ln["item"] if lang == "zh" else ln["measure"],
          ln["measure"], _fmt(ln["value"]), ln["points"], " ".join(ln["evidence"])]
         for _, c in companies for ln in c["lines"]],
    )  # fmt: skip
    keys = list(MEASURES)
    measures = Sheet(
        w("measures"),
        [w("company"), *(measure_name(k, lang) for k in keys)],
        [[_name(c, lang), *(_fmt(c["measures"][k]["value"]) for k in keys)] for _, c in companies],
    )
    return [main, lines, measures]


def ranking_sheets(
    body: Mapping[str, Any], consequences: Mapping[str, str], lang: Lang = "zh",
    tz: ZoneInfo | None = None,
) -> list[Sheet]:  # fmt: skip
    """The red and black lists (红黑榜) with each list's consequence on a streak. Equal
    scores share a rank, so a tie at the edge of a list puts every tied company in it."""
    w = functools.partial(word, lang=lang)
    rows = []
    for flag in ("red", "black"):
        listed = sorted((c for c in body["companies"].values() if flag in c["flags"]),
                        key=lambda c: c["rank"], reverse=flag == "black")  # fmt: skip
        for c in listed:
            streak = f"{flag}_streak" in c["flags"]
            rows.append([w(flag), c["rank"], _name(c, lang), c["score"], c["grade"],
                         w(f"{flag}_streak") if streak else "",
                         consequences.get(flag, "") if streak else ""])  # fmt: skip
    table = body["table_name"] if lang == "zh" else body.get("table_name_en", body["table_name"])
    return [Sheet(report_title("ranking", table, body["period"], lang),
                  [w("list"), w("rank"), w("company"), w("score"), w("grade"), w("streak"),
                   w("consequence")], rows,
                  note=_state_note(body, tz or ZoneInfo("Asia/Shanghai"), lang))]  # fmt: skip


_STEPS: Final = {"open": ("发生", "raised"), "acknowledged": ("确认", "acknowledged"),
                 "on_site": ("到场", "on site"), "resolved": ("解除", "resolved"),
                 "false_alarm": ("误报", "false alarm"), "closed": ("关闭", "closed"),
                 "escalated": ("升级", "escalated")}  # fmt: skip


def _steps(steps: Sequence[Mapping[str, Any]], tz: ZoneInfo, lang: Lang) -> str:
    out = []
    for s in steps:
        when = dt.datetime.fromtimestamp(s["t"] / 1000, tz).strftime("%m-%d %H:%M")
        label = _STEPS.get(s["to"], (s["to"], s["to"]))[0 if lang == "zh" else 1]
        note = f" ({s['note']})" if s["to"] == "escalated" and s.get("note") else ""
        out.append(f"{when} {label} {s['by']}{note}")
    return "; ".join(out)


def ledger_sheets(
    title: str, rows: Sequence[Mapping[str, Any]], tz: ZoneInfo, lang: Lang = "zh"
) -> list[Sheet]:
    """The ledger (台账): every alert of the period with its timeline, who answered, and the
    rescue record of a trapped passenger (arrival, who released them, how)."""
    w = functools.partial(word, lang=lang)
    return [Sheet(
        title,
        [w("community"), w("device"), w("rule"), w("severity"), w("opened"), w("responded"),
         w("on_site"), w("ended"), w("state"), w("holder"), w("rescue_arrival"),
         w("released_by"), w("steps")],
        [[r["community"], r["device"], r["rule"], r["severity"], _local(r["opened_t"], tz),
          _local(r["responded_t"], tz), _local(r["on_site_t"], tz), _local(r["ended_t"], tz),
          r["state"], r["holder"] or w("none"), _local(r.get("rescue_arrival_t"), tz),
          " ".join(x for x in (r.get("released_by"), r.get("method")) if x),
          _steps(r["timeline"], tz, lang)] for r in rows],
    )]  # fmt: skip


PROGRESS_MEASURES: Final = ("alerts", "trapped", "arrival_not_recorded", "response_in_time",
                            "fire_lane_blocked", "fire_lane_escalated", "maintenance_adherence",
                            "inspections_overdue")  # fmt: skip


def progress_sheets(body: Mapping[str, Any], lang: Lang = "zh", title: str = "") -> list[Sheet]:
    """The progress table (山亭, 1st and 15th): each community's figures for the period."""
    w = functools.partial(word, lang=lang)
    rows = []
    for _, c in sorted(body["communities"].items()):
        holders = "、".join(h["company"] or w("none") for h in c["held_by"])
        rows.append([_name(c, lang), holders,
                     *(_fmt(c["measures"][k]["value"]) for k in PROGRESS_MEASURES)])  # fmt: skip
    names = [measure_name(k, lang) for k in PROGRESS_MEASURES]
    title = title or f"{w('progress')} {body['start']} – {body['end']}"
    return [Sheet(title, [w("community"), w("holder"), *names], rows)]


# --- formats ------------------------------------------------------------------------------


def to_xlsx(sheets: Sequence[Sheet]) -> bytes:
    book = Workbook()
    first = True
    for sheet in sheets:
        ws = book.active if first else book.create_sheet()
        assert ws is not None
        first = False
        ws.title = _sheet_name(sheet.title)
        ws.append([sheet.title])
        ws["A1"].font = Font(bold=True, size=14)
        if sheet.note:
            ws.append([sheet.note])
        ws.append(list(sheet.headers))
        header_row = ws.max_row
        for cell in ws[header_row]:
            cell.font = Font(bold=True)
            cell.alignment = Alignment(wrap_text=True)
        for row in sheet.rows:
            ws.append([_fmt(v) for v in row])
        for i, _ in enumerate(sheet.headers, 1):
            ws.column_dimensions[get_column_letter(i)].width = 16
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _sheet_name(title: str) -> str:
    bad = "[]:*?/\\"
    return "".join("_" if ch in bad else ch for ch in title)[:31] or "sheet"


def to_csv(sheets: Sequence[Sheet]) -> bytes:
    """The first sheet (the report's main table) as CSV."""
    out = io.StringIO()
    writer = csv.writer(out)
    sheet = sheets[0]
    writer.writerow(sheet.headers)
    for row in sheet.rows:
        writer.writerow([_fmt(v) for v in row])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


_CSS: Final = """
body { font-family: "Noto Sans CJK SC", "Noto Sans SC", sans-serif; margin: 2em; }
h1 { font-size: 20pt; } h2 { font-size: 14pt; margin-top: 1.5em; }
table { border-collapse: collapse; width: 100%; font-size: 10pt; }
th, td { border: 1px solid #888; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #eee; } .note { color: #444; }
@media print { @page { size: A4 landscape; margin: 12mm; } body { margin: 0; } }
"""


def to_html(title: str, sheets: Sequence[Sheet], lang: Lang = "zh") -> str:
    e = html.escape
    parts = [f"<!doctype html><html lang=\"{'zh-CN' if lang == 'zh' else 'en'}\"><head>"
             f"<meta charset=\"utf-8\"><title>{e(title)}</title><style>{_CSS}</style></head>"
             f"<body><h1>{e(title)}</h1>"]  # fmt: skip
    for sheet in sheets:
        parts.append(f"<h2>{e(sheet.title)}</h2>")
        if sheet.note:
            parts.append(f'<p class="note">{e(sheet.note)}</p>')
        parts.append("<table><thead><tr>")
        parts += [f"<th>{e(str(h))}</th>" for h in sheet.headers]
        parts.append("</tr></thead><tbody>")
        for row in sheet.rows:
            parts.append("<tr>" + "".join(f"<td>{e(str(_fmt(v)))}</td>" for v in row) + "</tr>")
        parts.append("</tbody></table>")
    parts.append("</body></html>")
    return "".join(parts)


def render(fmt: Format, title: str, sheets: Sequence[Sheet], lang: Lang = "zh") -> bytes:
    """Every format but PDF (see :func:`render_pdf`) and JSON (the caller's body)."""
    if fmt == "xlsx":
        return to_xlsx(sheets)
    if fmt == "csv":
        return to_csv(sheets)
    if fmt == "html":
        return to_html(title, sheets, lang).encode("utf-8")
    raise ValueError(f"render: {fmt} is rendered elsewhere")


def chromium() -> str | None:
    """Debian's ``chromium`` (or ``LINLI_CHROMIUM``), if installed."""
    return os.environ.get("LINLI_CHROMIUM") or shutil.which("chromium") or shutil.which(
        "chromium-browser")  # fmt: skip


@functools.cache
def _warn_without_cjk_font() -> None:
    """Once per process: Chinese in a PDF prints as empty boxes without a CJK font."""
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return
    found = subprocess.run(  # noqa: S603 (fc-list from PATH, a constant argument)
        [fc_list, ":lang=zh"], capture_output=True, text=True, check=False
    )
    if not found.stdout.strip():
        log.warning("no Chinese font is installed (fc-list :lang=zh is empty): Chinese text in "
                    "PDF reports prints as boxes; install fonts-noto-cjk")  # fmt: skip


async def render_pdf(page: str, *, timeout_s: float = 60.0) -> bytes:
    """The HTML ``page`` printed to PDF by headless Chromium (A4 landscape, from the page's
    own print CSS). ReportError when no Chromium is installed or it fails."""
    exe = chromium()
    if exe is None:
        raise ReportError("PDF needs Chromium: install Debian's chromium (make system-deps)")
    _warn_without_cjk_font()
    with tempfile.TemporaryDirectory(prefix="linli-pdf-") as tmp:
        src, out = Path(tmp) / "report.html", Path(tmp) / "report.pdf"
        src.write_text(page, encoding="utf-8")
        proc = await asyncio.create_subprocess_exec(
            exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
            f"--user-data-dir={tmp}/profile", f"--print-to-pdf={out}", src.as_uri(),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            _, err = await asyncio.wait_for(proc.communicate(), timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise ReportError(f"Chromium did not print the PDF in {timeout_s:.0f} s") from None
        if proc.returncode != 0 or not out.exists():
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise ReportError(f"Chromium failed to print the PDF: {tail[0]}")
        return out.read_bytes()
