"""Scheduled reports (issue 15): the weekly ledger (台账, 运城: every Friday by 12:00) and the
progress table (山亭: the 1st and the 15th), made for every street office and housing bureau
and sent through their registry channels: email with the XLSX attached, webhook with a link
to the report in the API (signed like alert webhooks).

Schedules are settings (``ledger_schedule = "5 12:00"``: ISO weekday and local time;
``progress_schedule = "1,15 09:00"``: days of the month and time; ``""`` turns one off).
The ledger due on a Friday covers the seven days before that day; the progress table due on
the 15th covers the 1st–14th, the one due on the 1st the 15th to the end of last month.

Once: a report is claimed by inserting its key (``ledger:2026-11-20..2026-11-26:so-x``) under
a unique constraint, so two server workers never both send it; a failed send is retried
with backoff (``attempts``), a send that crashed mid-way is retried after its claim expires.
The most recent due report is made when the server starts after its time (a server that was
down on Friday 12:00 sends it when it comes back); earlier ones are not back-filled.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Final
from zoneinfo import ZoneInfo

import aiohttp
import aiosmtplib
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from server.alerting.notifier import SmtpTarget, sign_v2
from server.compliance.build import Report, build_report
from server.compliance.reports import CONTENT_TYPES, render
from server.compliance.store import Period
from server.store import models
from server.store.db import Database

__all__ = ["Due", "ReportScheduler", "due_reports", "parse_schedule"]

log = logging.getLogger(__name__)

REPORT_ORGS: Final = ("street_office", "housing_bureau")
CLAIM_MS: Final = 10 * 60_000
MAX_ATTEMPTS: Final = 12


@dataclass(frozen=True, slots=True)
class Due:
    report: Report  # ledger | progress
    period: Period
    due_t: int


def parse_schedule(kind: str, text: str) -> tuple[tuple[int, ...], dt.time] | None:
    """``"5 12:00"`` (ledger: weekdays 1–7) or ``"1,15 09:00"`` (progress: days 1–28);
    ``""``: off. ValueError names what is wrong."""
    if not text.strip():
        return None
    mt = re.fullmatch(r"\s*(\d{1,2}(?:,\d{1,2})*)\s+(\d{1,2}):(\d{2})\s*", text)
    if mt is None:
        raise ValueError(f"{kind}_schedule: {text!r} is not like '5 12:00' or '1,15 09:00'")
    days = tuple(int(d) for d in mt[1].split(","))
    hi = 7 if kind == "ledger" else 28
    if not all(1 <= d <= hi for d in days):
        raise ValueError(f"{kind}_schedule: days are 1..{hi}")
    return days, dt.time(int(mt[2]), int(mt[3]))


def _ms(day: dt.date, at: dt.time, tz: ZoneInfo) -> int:
    return int(dt.datetime.combine(day, at, tz).timestamp() * 1000)


def due_reports(now_t: int, tz: ZoneInfo, ledger: str, progress: str) -> list[Due]:
    """The most recent due occurrence of each scheduled report at ``now_t``."""
    today = dt.datetime.fromtimestamp(now_t / 1000, tz).date()
    out: list[Due] = []
    sched = parse_schedule("ledger", ledger)
    if sched is not None:
        days, at = sched
        for back in range(8):
            day = today - dt.timedelta(days=back)
            if day.isoweekday() in days and _ms(day, at, tz) <= now_t:
                first = day - dt.timedelta(days=7)
                label = f"{first.isoformat()}..{(day - dt.timedelta(days=1)).isoformat()}"
                out.append(Due("ledger", Period(label, first, day - dt.timedelta(days=1)),
                               _ms(day, at, tz)))  # fmt: skip
                break
    sched = parse_schedule("progress", progress)
    if sched is not None:
        days, at = sched
        for back in range(32):
            day = today - dt.timedelta(days=back)
            if day.day in days and _ms(day, at, tz) <= now_t:
                earlier = [d for d in days if d < day.day]
                if earlier:
                    first = day.replace(day=max(earlier))
                else:
                    prev = day.replace(day=1) - dt.timedelta(days=1)
                    first = prev.replace(day=max(days))
                last = day - dt.timedelta(days=1)
                label = f"{first.isoformat()}..{last.isoformat()}"
                out.append(Due("progress", Period(label, first, last), _ms(day, at, tz)))
                break
    return out


class ReportScheduler:
    """Makes and sends the due reports; :meth:`run` checks every ``interval_s``."""

    def __init__(
        self,
        db: Database,
        *,
        tz: ZoneInfo,
        ledger: str,
        progress: str,
        smtp: SmtpTarget | None,
        base_url: str,
        clock: Callable[[], int] | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        parse_schedule("ledger", ledger)
        parse_schedule("progress", progress)
        self.db, self.tz, self.ledger, self.progress = db, tz, ledger, progress
        self.smtp, self.base_url, self.timeout_s = smtp, base_url.rstrip("/"), timeout_s
        self.clock = clock or (lambda: time.time_ns() // 1_000_000)
        self.sent = 0

    async def run(self, interval_s: float = 60.0) -> None:
        while True:
            try:
                await self.tick()
            except (OSError, aiohttp.ClientError, aiosmtplib.SMTPException) as exc:
                log.warning("scheduled reports: %s", exc)
            await asyncio.sleep(interval_s)

    async def tick(self) -> int:
        """Send every due report not yet sent; how many were sent now."""
        now = self.clock()
        due = due_reports(now, self.tz, self.ledger, self.progress)
        if not due:
            return 0
        async with self.db.session() as session:
            orgs = (await session.scalars(select(models.Organisation).where(
                models.Organisation.kind.in_(REPORT_ORGS)))).all()  # fmt: skip
            channels = (await session.scalars(select(models.OrgChannel).where(
                models.OrgChannel.enabled, models.OrgChannel.kind.in_(("email", "webhook")))
            )).all()  # fmt: skip
        by_org: dict[str, list[models.OrgChannel]] = {}
        for ch in channels:
            by_org.setdefault(ch.org_id, []).append(ch)
        sent = 0
        for d in due:
            for org in orgs:
                for ch in by_org.get(org.id, []):
                    key = f"{d.report}:{d.period.label}:{org.id}:{ch.kind}"
                    if await self._claim(key, org.id, d, now):
                        sent += await self._send(key, org, ch, d)
        return sent

    async def _claim(self, key: str, org: str, d: Due, now: int) -> bool:
        try:
            async with self.db.session(write=True) as session:
                row = await session.scalar(select(models.ScheduledReport).where(
                    models.ScheduledReport.key == key))  # fmt: skip
                if row is None:
                    session.add(models.ScheduledReport(
                        key=key, org_id=org, report=d.report, period=d.period.label,
                        due_t=d.due_t, status="sending", attempts=0,
                        claimed_until=now + CLAIM_MS, next_t=now))  # fmt: skip
                    return True
                if row.status == "sent" or row.attempts >= MAX_ATTEMPTS:
                    return False
                if row.claimed_until > now or row.next_t > now:
                    return False
                row.claimed_until = now + CLAIM_MS
                row.status = "sending"
                return True
        except IntegrityError:
            return False  # another worker claimed it first

    async def _send(self, key: str, org: models.Organisation, ch: models.OrgChannel, d: Due) -> int:
        error = ""
        try:
            title, data = await self._make(org, d)
            if ch.kind == "email":
                await self._mail(ch.target, title, data, d)
            else:
                await self._webhook(ch, org, title, d)
        except (OSError, aiohttp.ClientError, aiosmtplib.SMTPException, TimeoutError,
                RuntimeError) as exc:  # fmt: skip
            error = f"{type(exc).__name__}: {exc}"[:500]
        now = self.clock()
        async with self.db.session(write=True) as session:
            row = await session.scalar(select(models.ScheduledReport).where(
                models.ScheduledReport.key == key))  # fmt: skip
            if row is None:
                return 0
            row.attempts += 1
            row.claimed_until = 0
            if error:
                row.status, row.error = "failed", error
                row.next_t = now + min(3_600_000, 60_000 * 2 ** min(row.attempts, 6))
                log.warning("scheduled %s for %s via %s failed (attempt %d): %s",
                            d.report, org.id, ch.kind, row.attempts, error)  # fmt: skip
                return 0
            row.status, row.sent_t, row.error = "sent", now, ""
        log.info("scheduled %s %s sent to %s via %s", d.report, d.period.label, org.id, ch.kind)
        self.sent += 1
        return 1

    async def _make(self, org: models.Organisation, d: Due) -> tuple[str, bytes]:
        async with self.db.session() as session:
            built = await build_report(session, d.report, d.period, lang="zh", tz=self.tz,
                                       now_t=self.clock(), org=org)  # fmt: skip
        return built.title, render("xlsx", built.title, built.sheets)

    async def _mail(self, to: str, title: str, data: bytes, d: Due) -> None:
        if self.smtp is None:
            raise RuntimeError("no smtp_url set on the server")
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = self.smtp.sender, to, title
        msg.set_content(f"{title}\n\n附件为本期报表（XLSX）。\nThe report is attached (XLSX).\n")
        maintype, subtype = CONTENT_TYPES["xlsx"].split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype,
                           filename=f"{d.report}-{d.period.label}.xlsx")  # fmt: skip
        await aiosmtplib.send(msg, hostname=self.smtp.host, port=self.smtp.port,
                              username=self.smtp.username, password=self.smtp.password,
                              use_tls=self.smtp.use_tls, timeout=self.timeout_s)  # fmt: skip

    async def _webhook(
        self, ch: models.OrgChannel, org: models.Organisation, title: str, d: Due
    ) -> None:
        link = (f"{self.base_url}/api/compliance/reports/{d.report}?period={d.period.label}"
                f"&org={org.id}&format=xlsx")  # fmt: skip
        body = json.dumps({"kind": "report", "report": d.report, "period": d.period.label,
                           "org": org.id, "title": title, "url": link},
                          ensure_ascii=False).encode()  # fmt: skip
        stamp, delivery = int(time.time()), f"report:{d.report}:{d.period.label}"
        headers = {"Content-Type": "application/json", "X-Linli-Timestamp": str(stamp),
                   "X-Linli-Delivery": delivery,
                   "X-Linli-Signature-256": sign_v2(ch.secret, stamp, delivery, body)}  # fmt: skip
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.post(ch.target, data=body, headers=headers) as resp,
        ):
            await resp.read()
            if not 200 <= resp.status < 300:
                raise RuntimeError(f"HTTP {resp.status}")
