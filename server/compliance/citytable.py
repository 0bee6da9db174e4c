"""A city's assessment rules as a table (YAML), and scoring by it (issue 15).

Each city sets its own deductions, bonuses, grade bands, who scores and signs, and what a
ranking leads to (DOMAIN.md, "Compliance, assessments and inspections"). A table is data:
``server/compliance/tables/*.yaml`` ships 赤壁 (red/black ranking) and 嵊州 (credit grades,
key supervision) and a template; docs/compliance.md explains every key. Which table applies
to a community follows its district (``districts:``).

Scoring a company for a period (pure)::

    score = base − Σ deductions (each item capped) + Σ bonuses − findings (capped)

then a grade by band, a rank among the table's companies, and the consequences: top/bottom
``ranking.size`` (红榜/黑榜), ``ranking.consecutive`` periods in a row in either flagged, key
supervision for a grade in ``key_supervision.grades``.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import msgspec

from collectors.wire import ID_PATTERN
from collectors.yamlconf import load_yaml
from server.compliance.measures import MEASURES, Measure

__all__ = [
    "TABLES_DIR",
    "Bonus",
    "CityTable",
    "Deduction",
    "Score",
    "all_tables",
    "load_table",
    "load_tables",
    "rank",
    "score",
    "table_digest",
]

TABLES_DIR: Final = Path(__file__).parent / "tables"
OrgKind = Literal["housing_bureau", "street_office", "market_supervision"]
PeriodKind = Literal["week", "month", "quarter", "year"]


class _Conf(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class Deduction(_Conf, frozen=True):
    """Points off for a measure: ``points`` per ``per`` units of it (a count, minutes), or
    ``points`` once when a share/time is ``below`` or ``above`` a bound. ``cap`` limits the
    item's total."""

    measure: str
    points: float
    per: float | None = None
    below: float | None = None
    above: float | None = None
    cap: float | None = None
    name: str = ""


class Bonus(_Conf, frozen=True):
    """Points added when a measure is ``at_least`` (a share) or ``at_most`` (a count) a bound."""

    measure: str
    points: float
    at_least: float | None = None
    at_most: float | None = None
    name: str = ""


class FindingItem(_Conf, frozen=True):
    """An on-site item an inspector or street office scores (现场检查): at most ``max``
    points off per finding."""

    id: str
    name: str
    max: float


class Grade(_Conf, frozen=True):
    grade: str
    min: float


class Ranking(_Conf, frozen=True):
    size: int = 5  # top N (红榜) and bottom N (黑榜)
    consecutive: int = 3  # periods in a row in the top or bottom that trigger ...
    top_consequence: str = ""
    bottom_consequence: str = ""


class KeySupervision(_Conf, frozen=True):
    grades: list[str] = []
    months: int = 12


class CityTable(_Conf, frozen=True):
    table: Literal[1]
    id: str
    name: str
    districts: list[str]
    name_en: str = ""
    period: PeriodKind = "quarter"
    base: float = 100.0
    deductions: list[Deduction] = []
    bonuses: list[Bonus] = []
    findings: list[FindingItem] = []
    findings_cap: float = 100.0
    grades: list[Grade] = []
    ranking: Ranking | None = None
    key_supervision: KeySupervision | None = None
    #: Who may enter findings, and who signs a period off.
    scored_by: list[OrgKind] = msgspec.field(
        default_factory=lambda: ["street_office", "housing_bureau"]
    )
    signed_by: list[OrgKind] = msgspec.field(default_factory=lambda: ["housing_bureau"])
    #: A rescue record (救援记录) entered later than this after the alert ended is late.
    rescue_record_hours: float = 24.0


def _measure_problem(name: str) -> str:
    near = difflib.get_close_matches(name, MEASURES, n=1)
    hint = f"did you mean {near[0]!r}?" if near else "use one of: " + ", ".join(MEASURES)
    return f"{name!r} is not a measure; {hint}"


def _numbers(t: CityTable) -> Iterator[tuple[str, float]]:
    """Every number of the table, by path."""
    yield "base", t.base
    yield "findings_cap", t.findings_cap
    yield "rescue_record_hours", t.rescue_record_hours
    for name, items in (("deductions", t.deductions), ("bonuses", t.bonuses),
                        ("findings", t.findings), ("grades", t.grades)):  # fmt: skip
        for i, item in enumerate(items):
            for key in item.__struct_fields__:
                value = getattr(item, key)
                if isinstance(value, float | int) and not isinstance(value, bool):
                    yield f"{name}[{i}].{key}", float(value)


def _check(t: CityTable) -> Iterator[tuple[str, str]]:
    if not ID_PATTERN.match(t.id):
        yield "id", f"{t.id!r} is not a slug like 'chibi'"
    for path, value in _numbers(t):
        if not math.isfinite(value):
            yield path, f"{value} is not a finite number"
    if not t.districts:
        yield "districts", "list the districts this table applies to"
    for i, d in enumerate(t.deductions):
        path = f"deductions[{i}]"
        if d.measure not in MEASURES:
            yield f"{path}.measure", _measure_problem(d.measure)
            continue
        unit = MEASURES[d.measure][0]
        bounds = [k for k in ("per", "below", "above") if getattr(d, k) is not None]
        if len(bounds) != 1:
            yield path, "give exactly one of per (points per unit), below or above"
        elif bounds[0] == "per" and unit == "share":
            yield f"{path}.per", f"{d.measure} is a share (0..1): use below"
        elif bounds[0] == "per" and (d.per or 0) <= 0:
            yield f"{path}.per", "must be > 0"
        elif bounds[0] in ("below", "above") and unit == "share":
            bound = d.below if d.below is not None else d.above
            if bound is not None and not 0 <= bound <= 1:
                yield f"{path}.{bounds[0]}", f"{d.measure} is a share: a bound in 0..1"
        if d.points <= 0:
            yield f"{path}.points", "points off are > 0"
        if d.cap is not None and d.cap < d.points:
            yield f"{path}.cap", "a cap below one deduction would never let it count"
    for i, b in enumerate(t.bonuses):
        path = f"bonuses[{i}]"
        if b.measure not in MEASURES:
            yield f"{path}.measure", _measure_problem(b.measure)
        elif (b.at_least is None) == (b.at_most is None):
            yield path, "give exactly one of at_least or at_most"
        if b.points <= 0:
            yield f"{path}.points", "bonus points are > 0"
    ids = [f.id for f in t.findings]
    for i, f in enumerate(t.findings):
        if ids.count(f.id) > 1:
            yield f"findings[{i}].id", f"{f.id!r} appears twice"
        if f.max <= 0:
            yield f"findings[{i}].max", "must be > 0"
    mins = [g.min for g in t.grades]
    if mins != sorted(mins, reverse=True):
        yield "grades", "list grades from the best (highest min) down"
    if t.grades and t.grades[-1].min > 0:
        yield "grades", "the last grade needs min: 0 so that every score gets one"
    names = {g.grade for g in t.grades}
    for g in t.key_supervision.grades if t.key_supervision else []:
        if g not in names:
            yield "key_supervision.grades", f"{g!r} is not one of the grades"
    if t.ranking is not None and (t.ranking.size < 1 or t.ranking.consecutive < 1):
        yield "ranking", "size and consecutive are >= 1"
    if not t.signed_by:
        yield "signed_by", "someone must sign a period off"


def load_table(path: Path) -> CityTable:
    """One table; ConfigError lists every problem with its line."""
    return load_yaml(path, CityTable, check=_check)


def load_tables(directory: Path = TABLES_DIR) -> dict[str, CityTable]:
    """Every table in ``directory`` (files starting with ``_`` are templates), by id."""
    out: dict[str, CityTable] = {}
    for path in sorted(directory.glob("*.yaml")):
        if not path.name.startswith("_"):
            table = load_table(path)
            out[table.id] = table
    return out


def all_tables(extra: str | Path | None = None) -> dict[str, CityTable]:
    """The shipped tables and those in ``extra`` (settings ``compliance_tables``), which
    replace shipped ones of the same id."""
    tables = load_tables(TABLES_DIR)
    if extra:
        tables.update(load_tables(Path(extra)))
    return tables


def table_digest(table: CityTable) -> str:
    """A digest of the rules a period was scored by (kept with the signed period)."""
    return hashlib.sha256(msgspec.json.encode(table)).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a score's breakdown: what it was for, the points, and the evidence."""

    kind: Literal["deduction", "bonus", "finding"]
    item: str
    measure: str
    value: float | int | None
    points: float
    evidence: Sequence[str] = ()


@dataclass(slots=True)
class Score:
    company: str
    score: float
    grade: str
    lines: list[Line] = field(default_factory=list)
    rank: int = 0
    flags: list[str] = field(default_factory=list)


def _deduction(d: Deduction, m: Measure) -> float:
    value = m.value
    if value is None:
        return 0.0
    if d.per is not None:
        points = math.floor(value / d.per) * d.points
    elif d.below is not None:
        points = d.points if value < d.below else 0.0
    else:
        assert d.above is not None
        points = d.points if value > d.above else 0.0
    return min(points, d.cap) if d.cap is not None else points


def _bonus(b: Bonus, m: Measure) -> float:
    if m.value is None:
        return 0.0
    if b.at_least is not None:
        return b.points if m.value >= b.at_least else 0.0
    assert b.at_most is not None
    return b.points if m.value <= b.at_most else 0.0


def score(
    table: CityTable,
    company: str,
    measures: Mapping[str, Measure],
    findings: Sequence[tuple[str, float, str]] = (),
) -> Score:
    """Score one company's measures by ``table``; ``findings`` are (item id, points off,
    reference) entered on site, each capped at its item's ``max``, all at ``findings_cap``."""
    lines: list[Line] = []
    for d in table.deductions:
        m = measures[d.measure]
        points = _deduction(d, m)
        if points:
            lines.append(Line("deduction", d.name or MEASURES[d.measure][1], d.measure, m.value,
                              -points, tuple(m.evidence)))  # fmt: skip
    for b in table.bonuses:
        m = measures[b.measure]
        points = _bonus(b, m)
        if points:
            lines.append(Line("bonus", b.name or MEASURES[b.measure][1], b.measure, m.value,
                              points, tuple(m.evidence)))  # fmt: skip
    items = {f.id: f for f in table.findings}
    off = 0.0
    for item, points, ref in findings:
        take = min(points, items[item].max, table.findings_cap - off)
        if take > 0:
            off += take
            lines.append(Line("finding", items[item].name, item, points, -take, (ref,)))
    total = round(table.base + sum(ln.points for ln in lines), 2)
    grade = next((g.grade for g in table.grades if total >= g.min), "")
    return Score(company, total, grade, lines)


def rank(
    table: CityTable, scores: list[Score], history: Sequence[Mapping[str, int]] = ()
) -> list[Score]:
    """Order ``scores`` best first and set ranks (equal scores share a rank) and flags:
    ``red``/``black`` (top/bottom ``ranking.size``; of fewer than twice that many companies,
    the top and bottom halves), ``red_streak``/``black_streak`` when
    the company was also in it in each of the ``consecutive - 1`` periods before (``history``:
    earlier signed periods, most recent first, company → rank, with the number of ranked
    companies under the key ``""``), and ``key_supervision`` for a listed grade."""
    ordered = sorted(scores, key=lambda s: (-s.score, s.company))
    prev: float | None = None
    for i, s in enumerate(ordered, 1):
        s.rank = i if s.score != prev else ordered[i - 2].rank
        prev = s.score
    size = table.ranking.size if table.ranking else 0
    n = len(ordered)

    def zone(r: int, count: int) -> str:
        k = min(size, count // 2)  # fewer than 2 × size companies: the halves
        if r <= k:
            return "red"
        if r > count - k:
            return "black"
        return ""

    for s in ordered:
        s.flags = []
        here = zone(s.rank, n)
        if here:
            s.flags.append(here)
            need = (table.ranking.consecutive if table.ranking else 1) - 1
            back = history[:need]
            if len(back) == need and all(
                s.company in h and zone(h[s.company], h.get("", n)) == here for h in back
            ):
                s.flags.append(f"{here}_streak")
        if table.key_supervision and s.grade in table.key_supervision.grades:
            s.flags.append("key_supervision")
    return ordered
