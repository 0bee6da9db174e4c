"""Compliance (issue 15): the quarterly assessment of 1,000 communities with 90 days of alerts.

    .venv/bin/python bench/compliance.py [--communities N] [--alerts N]

Setup: a SQLite file (the server's default store) with one district of ``N`` communities
(3 elevators, 2 fire lanes, 1 gate, 1 gateway each), 40 property companies (every tenth
community changes hands mid-quarter, every fiftieth has none), maintenance visits every
14 days, and ~50,000 alerts over 2026-Q4 with their timelines (opened, most acknowledged,
trapped ones on site, ended) and escalation recipients, written with bulk SQL.

Measured: ``compute_assessment`` for the quarter by the 赤壁 table: load every fact from SQL,
compute every community's and company's measures, score, rank, store the frozen body.
*Baseline*: a plain SQL aggregate over the same alert rows (alerts per community and rule
with the mean time to the first acknowledgement, one GROUP BY over alerts joined to their
transitions). Aim: under 10 s. Best of 3.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.compliance.citytable import load_tables  # noqa: E402
from server.compliance.store import SHANGHAI, compute_assessment, parse_period  # noqa: E402
from server.store import models  # noqa: E402
from server.store.db import open_database  # noqa: E402

DAY = 86_400_000
Q4 = parse_period("2026-Q4")
START = int(dt.datetime(2026, 10, 1, tzinfo=SHANGHAI).timestamp() * 1000)
RULES = [
    ("trapped", "critical", "elevator"),
    ("elevator_fault", "major", "elevator"),
    ("fire_lane_blocked", "major", "fire_lane"),
    ("gate_forced", "major", "gate"),
    ("gate_held_open", "minor", "gate"),
    ("ebike_in_elevator", "minor", "elevator"),
    ("device_offline", "minor", "fire_lane"),
]


async def build(path: Path, n: int, n_alerts: int) -> None:
    rng = random.Random(7)
    async with open_database(f"sqlite+aiosqlite:///{path}") as db, db.session(write=True) as s:
        orgs = [
            {"id": "so-1", "kind": "street_office", "name": "街道", "district": "chibi"},
            {"id": "hb-1", "kind": "housing_bureau", "name": "住建局", "district": "chibi"},
            {"id": "mu-1", "kind": "maintenance_unit", "name": "维保", "district": "chibi"},
            {"id": "ms-1", "kind": "market_supervision", "name": "市监", "district": "chibi"},
            {"id": "fr-1", "kind": "fire_rescue", "name": "消防", "district": "chibi"},
        ]
        orgs += [
            {"id": f"pc-{i}", "kind": "property_company", "name": f"物业{i}", "district": "chibi"}
            for i in range(40)
        ]
        orgs += [
            {
                "id": f"cc-{i}",
                "kind": "community_committee",
                "name": f"居委会{i}",
                "district": "chibi",
            }
            for i in range(n)
        ]
        await s.execute(insert(models.Organisation), orgs)
        await s.execute(
            insert(models.Community),
            [
                {
                    "id": f"c{i}",
                    "name": f"小区{i}",
                    "committee_id": f"cc-{i}",
                    "street_office_id": "so-1",
                    "district": "chibi",
                    "arrival_deadline_min": 30,
                }
                for i in range(n)
            ],
        )
        await s.execute(
            insert(models.Gateway), [{"community_id": f"c{i}", "id": "gw-1"} for i in range(n)]
        )
        devices, visits, contracts = [], [], []
        for i in range(n):
            for dev, kind in (
                ("el-1", "elevator"),
                ("el-2", "elevator"),
                ("el-3", "elevator"),
                ("fl-1", "fire_lane"),
                ("fl-2", "fire_lane"),
                ("gt-1", "gate"),
            ):
                devices.append(
                    {
                        "community_id": f"c{i}",
                        "id": dev,
                        "kind": kind,
                        "name": dev,
                        "gateway_id": "gw-1",
                        "maintenance_unit_id": "mu-1" if kind == "elevator" else None,
                    }
                )
                if kind == "elevator":
                    day = dt.date(2026, 9, 20) + dt.timedelta(days=rng.randrange(10))
                    while day <= Q4.end:
                        visits.append(
                            {
                                "community_id": f"c{i}",
                                "device": dev,
                                "day": day,
                                "org_id": "mu-1",
                                "note": "",
                                "created_t": 0,
                            }
                        )
                        day += dt.timedelta(days=rng.choice((13, 14, 14, 15, 16)))
            if i % 50 == 0:
                continue  # no company
            first = f"pc-{i % 40}"
            if i % 10 == 0:
                contracts.append(
                    {
                        "community_id": f"c{i}",
                        "company_id": first,
                        "start": dt.date(2020, 1, 1),
                        "end": dt.date(2026, 11, 15),
                    }
                )
                contracts.append(
                    {
                        "community_id": f"c{i}",
                        "company_id": f"pc-{(i + 1) % 40}",
                        "start": dt.date(2026, 11, 16),
                        "end": None,
                    }
                )
            else:
                contracts.append(
                    {
                        "community_id": f"c{i}",
                        "company_id": first,
                        "start": dt.date(2020, 1, 1),
                        "end": None,
                    }
                )
        await s.execute(insert(models.Device), devices)
        await s.execute(insert(models.MaintenanceRecord), visits)
        await s.execute(insert(models.Contract), contracts)
        alerts, steps, recips = [], [], []
        for a in range(1, n_alerts + 1):
            rule, sev, kind = rng.choice(RULES)
            c = f"c{rng.randrange(n)}"
            dev = {"elevator": "el-1", "fire_lane": "fl-1", "gate": "gt-1"}[kind]
            opened = START + rng.randrange(90 * DAY)
            ended = opened + rng.randrange(60_000, 3 * 3_600_000)
            alerts.append(
                {
                    "id": a,
                    "rule": rule,
                    "community_id": c,
                    "device": dev,
                    "severity": sev,
                    "state": "closed",
                    "opened_t": opened,
                    "updated_t": ended,
                    "repeats": 0,
                    "level": 0,
                    "detail": "{}",
                    "running_key": None,
                }
            )
            steps.append({"alert_id": a, "t": opened, "to_state": "open", "by": "system"})
            if rng.random() < 0.85:
                steps.append(
                    {
                        "alert_id": a,
                        "t": opened + rng.randrange(20_000, 400_000),
                        "to_state": "acknowledged",
                        "by": "pc-1",
                    }
                )
            if rule == "trapped" and rng.random() < 0.8:
                steps.append(
                    {
                        "alert_id": a,
                        "t": opened + rng.randrange(300_000, 2_400_000),
                        "to_state": "on_site",
                        "by": "mu-1",
                    }
                )
            steps.append({"alert_id": a, "t": ended, "to_state": "resolved", "by": "system"})
            recips.append(
                {
                    "alert_id": a,
                    "org_id": "pc-1",
                    "role": "company",
                    "read_only": False,
                    "standing_in": False,
                    "step": "first",
                    "added_t": opened,
                }
            )
            if rule == "fire_lane_blocked" and rng.random() < 0.1:
                recips.append(
                    {
                        "alert_id": a,
                        "org_id": "fr-1",
                        "role": "fire_rescue",
                        "read_only": False,
                        "standing_in": False,
                        "step": "step1",
                        "added_t": opened + 900_000,
                    }
                )
        for chunk in range(0, len(alerts), 5000):
            await s.execute(insert(models.Alert), alerts[chunk : chunk + 5000])
        for chunk in range(0, len(steps), 5000):
            await s.execute(insert(models.AlertTransition), steps[chunk : chunk + 5000])
        for chunk in range(0, len(recips), 5000):
            await s.execute(insert(models.AlertRecipient), recips[chunk : chunk + 5000])


BASELINE = text(
    "SELECT a.community_id, a.rule, count(*), avg(t.t - a.opened_t) FROM alerts a "
    "LEFT JOIN alert_transitions t ON t.alert_id = a.id AND t.to_state = 'acknowledged' "
    "WHERE a.opened_t >= :start AND a.opened_t < :end GROUP BY a.community_id, a.rule"
)


async def measure(path: Path) -> tuple[float, float, int, int]:
    table = load_tables()["chibi"]
    now = int(dt.datetime(2027, 1, 5, tzinfo=SHANGHAI).timestamp() * 1000)
    best, base = float("inf"), float("inf")
    companies = groups = 0
    async with open_database(f"sqlite+aiosqlite:///{path}") as db:
        for _ in range(3):
            async with db.session() as s:
                t0 = time.perf_counter()
                rows = (await s.execute(BASELINE, {"start": START, "end": START + 92 * DAY})).all()
                base = min(base, time.perf_counter() - t0)
                groups = len(rows)
            async with db.session(write=True) as s:
                t0 = time.perf_counter()
                row = await compute_assessment(s, table, Q4, by="bench", now_t=now)
                best = min(best, time.perf_counter() - t0)
                companies = row.body.count('"rank"')
                await s.rollback()
    return best, base, companies, groups


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--communities", type=int, default=1000)
    ap.add_argument("--alerts", type=int, default=50_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        t0 = time.perf_counter()
        asyncio.run(build(path, args.communities, args.alerts))
        print(
            f"built {args.communities} communities, {args.alerts} alerts in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        best, base, companies, groups = asyncio.run(measure(path))
    print(
        f"quarterly assessment: {best:.2f} s ({companies} companies ranked); "
        f"plain SQL aggregate: {base:.3f} s ({groups} groups); ratio {best / base:.0f}x; "
        f"aim < 10 s: {'met' if best < 10 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
