"""Who sees what (issue 13, item 6): each organisation kind's scope, computed from a small
registry of two districts imported into SQLite; and the per-token rate limiter."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.store import models
from server.store.db import open_database
from server.store.registry import import_registry, load_registry
from server.web.auth import RateLimiter, Scope, scope_for


def _org(id_: str, kind: str, district: str = "north") -> dict[str, Any]:
    return {"id": id_, "kind": kind, "name": id_, "district": district}


def _community(id_: str, committee: str, street: str, district: str) -> dict[str, Any]:
    return {
        "id": id_, "name": id_, "committee": committee, "street_office": street,
        "district": district, "gateways": [{"id": "gw-1"}],
        "devices": [
            {"id": "el-1", "kind": "elevator", "name": "el", "gateway": "gw-1",
             "maintenance_unit": "mu-a" if id_ != "c3" else "mu-b"},
            {"id": "fl-1", "kind": "fire_lane", "name": "fl", "gateway": "gw-1"},
            {"id": "gt-1", "kind": "gate", "name": "gt", "gateway": "gw-1"},
        ],
    }  # fmt: skip


REGISTRY = {
    "version": 1,
    "organisations": [
        _org("so-n", "street_office"), _org("so-s", "street_office", "south"),
        _org("cc-1", "community_committee"), _org("cc-2", "community_committee"),
        _org("cc-3", "community_committee", "south"),
        _org("pc-old", "property_company"), _org("pc-new", "property_company"),
        _org("pc-s", "property_company", "south"),
        _org("mu-a", "maintenance_unit"), _org("mu-b", "maintenance_unit", "south"),
        _org("ms-n", "market_supervision"), _org("hb-s", "housing_bureau", "south"),
        _org("fr-n", "fire_rescue"), _org("nc-1", "neighbourhood_centre"),
        _org("po-x", "police", ""),
    ],
    "communities": [
        _community("c1", "cc-1", "so-n", "north"),
        _community("c2", "cc-2", "so-n", "north"),
        _community("c3", "cc-3", "so-s", "south"),
    ],
    "contracts": [
        # c1 changed hands on 2026-07-01; c2 has no company; c3 is served in the south.
        {"community": "c1", "company": "pc-old", "start": "2020-01-01", "end": "2026-06-30"},
        {"community": "c1", "company": "pc-new", "start": "2026-07-01"},
        {"community": "c3", "company": "pc-s", "start": "2024-01-01"},
    ],
    "neighbourhood_centres": [{"org": "nc-1", "communities": ["c2", "c3"]}],
}  # fmt: skip

BEFORE = dt.date(2026, 6, 30)
AFTER = dt.date(2026, 7, 1)
ALL_OF_C1 = frozenset({("c1", "el-1"), ("c1", "fl-1"), ("c1", "gt-1")})


@pytest.fixture
async def scopes(tmp_path: Path) -> Any:
    path = tmp_path / "reg.yaml"
    path.write_text(yaml.safe_dump(REGISTRY))
    async with open_database(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}") as db:
        async with db.session(write=True) as s:
            await import_registry(s, load_registry(path))

        async def of(org: str, day: dt.date = AFTER) -> Scope:
            async with db.session() as s:
                row = await s.get(models.Organisation, org)
                assert row is not None
                return await scope_for(s, row, day)

        yield of


def seen(scope: Scope) -> set[tuple[str, str]]:
    every = {(c, d) for c in ("c1", "c2", "c3") for d in ("el-1", "fl-1", "gt-1")}
    return {(c, d) for c, d in every if scope.device(c, d)}


async def test_a_company_sees_the_communities_it_serves_on_the_day(scopes: Any) -> None:
    assert seen(await scopes("pc-old", BEFORE)) == ALL_OF_C1
    assert seen(await scopes("pc-old", AFTER)) == set()  # handed over
    assert seen(await scopes("pc-new", BEFORE)) == set()
    assert seen(await scopes("pc-new", AFTER)) == ALL_OF_C1
    new = await scopes("pc-new", AFTER)
    assert new.whole("c1")
    assert not new.community("c2")


async def test_offices_committees_bureaux_and_centres_see_their_own(scopes: Any) -> None:
    north = {(c, d) for c in ("c1", "c2") for d in ("el-1", "fl-1", "gt-1")}
    assert seen(await scopes("so-n")) == north
    assert seen(await scopes("cc-2")) == {("c2", d) for d in ("el-1", "fl-1", "gt-1")}
    assert seen(await scopes("hb-s")) == {("c3", d) for d in ("el-1", "fl-1", "gt-1")}
    centre = await scopes("nc-1")
    assert {c for c in ("c1", "c2", "c3") if centre.whole(c)} == {"c2", "c3"}


async def test_supervisors_and_units_see_single_devices_only(scopes: Any) -> None:
    market = await scopes("ms-n")
    assert seen(market) == {("c1", "el-1"), ("c2", "el-1")}  # its district's elevators
    assert market.community("c1")
    assert not market.whole("c1")  # not the community's gates, lanes or gateways
    assert seen(await scopes("mu-a")) == {("c1", "el-1"), ("c2", "el-1")}  # what it maintains
    assert seen(await scopes("mu-b")) == {("c3", "el-1")}
    assert seen(await scopes("fr-n")) == {("c1", "fl-1"), ("c2", "fl-1")}
    assert seen(await scopes("po-x")) == set()  # no district: nothing


def test_the_rate_limiter_allows_bursts_then_the_rate_and_stays_bounded() -> None:
    limiter = RateLimiter(rate=2.0, burst=5, max_keys=3)
    assert [limiter.take("a", now=0.0) for _ in range(5)] == [0.0] * 5
    assert limiter.take("a", now=0.0) == pytest.approx(0.5)  # empty: 1 request per 0.5 s
    assert limiter.take("a", now=0.5) == 0.0
    assert limiter.wait("a", now=0.5) == pytest.approx(0.5)
    assert limiter.take("b", now=0.5) == 0.0  # another key has its own bucket
    for key in "cdefg":
        limiter.take(key, now=1.0)
    assert len(limiter._buckets) == 3  # the longest idle were dropped
