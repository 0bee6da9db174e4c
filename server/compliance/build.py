"""One way to build each compliance report, for the API, the CLI and the schedule alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.compliance.citytable import CityTable
from server.compliance.reports import (
    Lang,
    Sheet,
    assessment_sheets,
    ledger_sheets,
    progress_sheets,
    ranking_sheets,
    report_title,
)
from server.compliance.store import (
    AssessmentError,
    Period,
    assessment_json,
    communities_of,
    community_body,
    ensure_started,
    ledger_rows,
    load_facts,
)
from server.store import models

__all__ = ["REPORTS", "Built", "NotComputedError", "Report", "build_report"]

REPORTS: Final = ("assessment", "ranking", "ledger", "progress")
Report = Literal["assessment", "ranking", "ledger", "progress"]


class NotComputedError(AssessmentError):
    """The period's assessment has not been computed (API: 404)."""


@dataclass(frozen=True, slots=True)
class Built:
    title: str
    sheets: list[Sheet]
    body: Any  # the JSON form


async def build_report(
    session: AsyncSession,
    kind: Report,
    period: Period,
    *,
    lang: Lang,
    tz: ZoneInfo,
    now_t: int,
    table: CityTable | None = None,
    org: models.Organisation | None = None,
) -> Built:
    """An assessment or ranking of ``table`` (its current version), or the ledger or the
    progress table of ``org``'s communities (every community when None)."""
    if kind in ("assessment", "ranking"):
        assert table is not None
        row = await session.scalar(
            select(models.Assessment).where(
                models.Assessment.table_id == table.id,
                models.Assessment.period == period.label,
                models.Assessment.state != "superseded",
            )
        )
        if row is None:
            raise NotComputedError(f"{table.id} {period.label} has not been computed")
        body = assessment_json(row)
        if kind == "ranking":
            rk = table.ranking
            cons = {"red": rk.top_consequence, "black": rk.bottom_consequence} if rk else {}
            sheets = ranking_sheets(body, cons, lang, tz)
        else:
            sheets = assessment_sheets(body, lang, tz)
        return Built(sheets[0].title, sheets, body)
    ensure_started(period, now_t, tz)
    ids = await communities_of(session, org, period)
    if org is None:
        name = "全部小区" if lang == "zh" else "all communities"
    else:
        name = (org.name_en or org.name) if lang == "en" else org.name
    title = report_title(kind, name, period.label, lang)
    if kind == "ledger":
        rows = await ledger_rows(session, ids, period, tz=tz)
        return Built(title, ledger_sheets(title, rows, tz, lang), rows)
    query = select(models.Community.district).where(models.Community.id.in_(ids))
    districts = sorted(set((await session.scalars(query)).all()))
    facts = await load_facts(session, districts, period, tz=tz)
    facts.holders = {k: v for k, v in facts.holders.items() if k in ids}
    body = community_body(period, facts, now_t=now_t, tz=tz)
    return Built(title, progress_sheets(body, lang, title), body)
