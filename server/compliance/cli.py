"""``linli report …``: compliance records and assessments from the command line (issue 15).

    linli report tables [--check FILE …]            the city tables, or check table files
    linli report assessment TABLE PERIOD            compute (or show the signed version)
    linli report ranking TABLE PERIOD               the red and black lists (红黑榜)
    linli report sign TABLE PERIOD --org ORG        sign the computed version off
    linli report correct TABLE PERIOD --reason R    a new version of a signed period
    linli report ledger ORG PERIOD                  the ledger (台账) of an organisation's
                                                    communities (``all``: every community)
    linli report progress ORG PERIOD                the progress table

``--format xlsx|csv|html|pdf|json`` (default: csv on a terminal's stdout, else by ``--out``'s
suffix), ``--out FILE``, ``--lang zh|en``. Long runs show a progress bar on stderr.
Exit status: 0 done, 2 a bad argument, table or period (the message names it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import select

from collectors.yamlconf import ConfigError
from server.compliance.build import Report, build_report
from server.compliance.citytable import CityTable, all_tables, load_table
from server.compliance.reports import (
    FORMATS,
    Format,
    Lang,
    render,
    render_pdf,
    to_html,
)
from server.compliance.store import (
    AssessmentError,
    compute_assessment,
    parse_period,
    sign_assessment,
)
from server.settings import Settings
from server.store import audit, models
from server.store.db import open_database

__all__ = ["add_report_parser", "run_report"]

MAX_REASON = 2000


def add_report_parser(sub: Any) -> None:
    """The ``report`` command and its actions."""
    r = sub.add_parser("report", help="compliance records, assessments and reports")
    rsub = r.add_subparsers(dest="report_command", required=True, metavar="ACTION")
    t = rsub.add_parser("tables", help="list the city tables, or check table files")
    t.add_argument("--check", type=Path, nargs="+", metavar="FILE", help="table files to check")
    actions = {
        "assessment": "compute a period's assessment (a signed one is shown as signed)",
        "ranking": "the red and black lists of a period",
        "sign": "sign a period's computed assessment off",
        "correct": "make a new version of a signed period, with a reason",
    }
    parsers = [t]
    sign = None
    for name, help_ in actions.items():
        p = rsub.add_parser(name, help=help_)
        p.add_argument("table", help="city table id (linli report tables)")
        p.add_argument("period", help="2026-Q4, 2026-11, 2026-W48, 2026 or 2026-10-01..2026-12-31")
        parsers.append(p)
        if name == "sign":
            p.add_argument("--org", required=True, help="the signing organisation's id")
            sign = p
        if name == "correct":
            p.add_argument("--reason", required=True, help="why (kept with the version)")
    for name, help_ in {
        "ledger": "the ledger (台账) of alerts and their handling",
        "progress": "the progress table of each community",
    }.items():
        p = rsub.add_parser(name, help=help_)
        p.add_argument("org", help="street office, housing bureau, committee or company id; all")
        p.add_argument("period", help="2026-W48, 2026-11, 2026-11-01..2026-11-14, …")
        parsers.append(p)
    for p in parsers:
        p.add_argument("--config", type=Path, help="settings TOML (database, tables)")
        if p not in (t, sign):
            p.add_argument("--format", choices=FORMATS, help="default: from --out, else csv")
            p.add_argument("--out", type=Path, help="write here instead of stdout")
            p.add_argument("--lang", choices=("zh", "en"), default="zh")


async def _empty_districts(settings: Settings, table: CityTable) -> list[str]:
    """The table's districts no community of the registry is in (a typo, most likely)."""
    async with open_database(settings.database_url) as db, db.session() as session:
        known = set((await session.scalars(select(models.Community.district))).all())
    return [d for d in table.districts if d not in known]


def _progress(label: str) -> Callable[[int, int], None]:
    """A progress bar on stderr, drawn when a run has more than 20 steps."""
    last = [0.0]

    def draw(done: int, total: int) -> None:
        if total <= 20:
            return
        now = time.monotonic()
        if done < total and now - last[0] < 0.2:
            return
        last[0] = now
        width = 30
        filled = width * done // total
        end = "\n" if done == total else ""
        sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}{end}")
        sys.stderr.flush()

    return draw


def _format(args: argparse.Namespace) -> Format:
    if args.format:
        return cast(Format, args.format)
    suffix = args.out.suffix.lstrip(".").lower() if args.out else ""
    return cast(Format, suffix if suffix in FORMATS else "csv")


async def _emit(args: argparse.Namespace, title: str, sheets: list[Any], body: Any) -> None:
    fmt, lang = _format(args), cast(Lang, args.lang)
    if fmt == "json":
        data = json.dumps(body, ensure_ascii=False, indent=1).encode("utf-8")
    elif fmt == "pdf":
        data = await render_pdf(to_html(title, sheets, lang))
    else:
        data = render(fmt, title, sheets, lang)
    if args.out:
        args.out.write_bytes(data)
        print(f"{args.out}: {fmt}, {len(data)} bytes", file=sys.stderr)
    elif fmt in ("xlsx", "pdf") and sys.stdout.isatty():
        raise AssessmentError(f"{fmt} is binary: give --out FILE")
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


def _table(tables: dict[str, CityTable], name: str) -> CityTable:
    if name not in tables:
        raise AssessmentError(f"no city table {name!r}; tables: {', '.join(sorted(tables))}")
    return tables[name]


async def run_report(args: argparse.Namespace, settings: Settings) -> int:
    """Carry out ``linli report ACTION``; AssessmentError / ConfigError become exit 2."""
    action = args.report_command
    if action == "tables" and args.check:
        problems = 0
        for path in args.check:
            try:
                table = load_table(path)
            except ConfigError as exc:
                print(exc, file=sys.stderr)
                problems += len(exc.problems)
                continue
            print(f"{path}: OK ({table.id}: {table.name}, districts {', '.join(table.districts)})")
            if args.config is not None:
                for district in await _empty_districts(settings, table):
                    print(
                        f"{path}: warning: no community of the registry is in district "
                        f"{district!r}",
                        file=sys.stderr,
                    )
        if problems:
            print(f"{problems} problem(s) found", file=sys.stderr)
        return 2 if problems else 0
    tables = all_tables(settings.compliance_tables)
    if action == "tables":
        for table in tables.values():
            print(f"{table.id}\t{table.name}\t{table.period}\t{','.join(table.districts)}")
            if args.config is not None:
                for district in await _empty_districts(settings, table):
                    print(
                        f"{table.id}: warning: no community of the registry is in district "
                        f"{district!r}",
                        file=sys.stderr,
                    )
        return 0
    tz = ZoneInfo(settings.timezone)
    now = time.time_ns() // 1_000_000
    period = parse_period(args.period)
    if action == "correct" and not 0 < len(args.reason.strip()) <= MAX_REASON:
        raise AssessmentError(f"--reason: say why, in 1..{MAX_REASON} characters")
    async with open_database(settings.database_url) as db:
        if action in ("ledger", "progress"):
            async with db.session() as session:
                org = None
                if args.org != "all":
                    org = await session.get(models.Organisation, args.org)
                    if org is None:
                        raise AssessmentError(f"no organisation {args.org!r}")
                kind = cast(Report, action)
                built = await build_report(
                    session, kind, period, lang=args.lang, tz=tz, now_t=now, org=org
                )
            await _emit(args, built.title, built.sheets, built.body)
            return 0
        table = _table(tables, args.table)
        async with db.session(write=True) as session:
            if action == "sign":
                row = await sign_assessment(session, table, period, org=args.org, now_t=now)
                audit.record(
                    session,
                    actor=audit.cli_actor(),
                    address=audit.CLI_ADDRESS,
                    action="assessment_sign",
                    target=f"{table.id}/{period.label}/v{row.version}",
                )
                print(f"{table.id} {period.label} version {row.version} signed by {args.org}")
                return 0
            row = await compute_assessment(
                session,
                table,
                period,
                by=audit.cli_actor(),
                now_t=now,
                tz=tz,
                correction=args.reason if action == "correct" else None,
                progress=_progress("companies"),
            )
            if action == "correct":
                audit.record(
                    session,
                    actor=audit.cli_actor(),
                    address=audit.CLI_ADDRESS,
                    action="assessment_correct",
                    target=f"{table.id}/{period.label}/v{row.version}",
                    detail={"reason": args.reason},
                )
        async with db.session() as session:
            kind = "ranking" if action == "ranking" else "assessment"
            built = await build_report(
                session, kind, period, lang=args.lang, tz=tz, now_t=now, table=table
            )
        await _emit(args, built.title, built.sheets, built.body)
        print(f"{table.id} {period.label}: version {row.version}, {row.state}", file=sys.stderr)
    return 0
