"""The registry: the demo data, cross-reference errors with lines, idempotent import."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from collectors.yamlconf import ConfigError
from server.store import models
from server.store.db import open_database
from server.store.registry import import_registry, load_registry, load_registry_index
from tests.conftest import DEMO_REGISTRY


def test_demo_registry_has_the_shancheng_communities() -> None:
    reg = load_registry(DEMO_REGISTRY)
    names = {c.name for c in reg.communities}
    assert len(reg.communities) >= 20
    assert {
        "梅花园",
        "龙珠百合",
        "锦绣花园",
        "银光上城",
        "欧亚城",
        "枣花园",
        "丰泽嘉苑",
        "四十中宿舍",
        "建行宿舍",
    } <= names
    with_company = {k.community for k in reg.contracts}
    assert {"sishizhong-sushe", "jianhang-sushe"}.isdisjoint(with_company)
    committees = {c.committee for c in reg.communities}
    assert committees == {"cc-meiyuan", "cc-ziwei", "cc-fengze", "cc-dongxilu"}
    kinds = {d.kind for c in reg.communities for d in c.devices}
    assert kinds == {"elevator", "fire_lane", "gate"}


BROKEN = """\
version: 1
organisations:
  - {id: so-1, kind: street_office, name: 街道}
  - {id: cc-1, kind: community_committee, name: 居委会}
  - {id: pc-1, kind: property_company, name: 物业}
communities:
  - id: c-1
    name: 小区
    committee: so-1
    street_office: so-1
    district: d
    gateways: [{id: gw-1}]
    devices:
      - {id: el-1, kind: elevator, name: 1号梯, gateway: gw-2}
      - {id: el-1, kind: elevator, name: 2号梯, gateway: gw-1, maintenance_unit: mu-x}
contracts:
  - {community: c-1, company: pc-1, start: 2024-01-01}
  - {community: c-1, company: pc-1, start: 2025-01-01, end: 2024-06-30}
  - {community: c-9, company: cc-1, start: 2024-01-01}
"""


def test_cross_reference_errors_are_all_listed_with_lines(tmp_path: Path) -> None:
    path = tmp_path / "reg.yaml"
    path.write_text(BROKEN)
    with pytest.raises(ConfigError) as info:
        load_registry(path)
    got = [str(p).replace(str(path), "reg.yaml") for p in info.value.problems]
    assert got == [
        "reg.yaml:9: communities[0].committee: "
        "'so-1' is a street_office, expected a community_committee",
        "reg.yaml:14: communities[0].devices[0].gateway: gateway 'gw-2' is not declared in c-1",
        "reg.yaml:15: communities[0].devices[1].id: device 'el-1' is declared twice in c-1",
        "reg.yaml:15: communities[0].devices[1].maintenance_unit: unknown organisation 'mu-x'",
        "reg.yaml:18: contracts[1].end: ends (2024-06-30) before it starts (2025-01-01)",
        "reg.yaml:19: contracts[2].community: unknown community 'c-9'",
        "reg.yaml:19: contracts[2].company: "
        "'cc-1' is a community_committee, expected a property_company",
        "reg.yaml:18: contracts[1].start: overlaps the contract of 'pc-1' from 2024-01-01 for c-1",
    ]


async def test_import_is_idempotent_and_updates_in_place(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    reg = load_registry(DEMO_REGISTRY)
    async with open_database(url) as db:
        async with db.session() as s:
            first = await import_registry(s, reg)
        async with db.session() as s:
            second = await import_registry(s, reg)
            n_devices = await s.scalar(select(func.count()).select_from(models.Device))
            index = await load_registry_index(s)
    assert first.created > 200
    assert first.updated == 0
    assert (second.created, second.updated) == (0, 0)
    assert second.unchanged == first.created
    assert n_devices == sum(len(c.devices) for c in reg.communities)
    assert ("meihuayuan", "gw-1") in index.gateways
    assert index.devices[("meihuayuan", "fl-1")].kind == "fire_lane"

    changed = tmp_path / "changed.yaml"
    changed.write_text(
        DEMO_REGISTRY.read_text(encoding="utf-8").replace('name: "梅花园"', 'name: "梅花园小区"'),
        encoding="utf-8",
    )
    async with open_database(url) as db:
        async with db.session() as s:
            third = await import_registry(s, load_registry(changed))
        async with db.session() as s:
            com = await s.get(models.Community, "meihuayuan")
    assert (third.created, third.updated) == (0, 1)
    assert com is not None
    assert com.name == "梅花园小区"


CHANNELS = """\
version: 1
organisations:
  - id: pc-1
    kind: property_company
    name: 一号物业
    channels:
      - {kind: webhook, url: "ftp://x", secret: short}
      - {kind: webhook, url: "https://a.example/hook", secret: 0123456789abcdef}
      - {kind: email, address: "not-an-address"}
      - {kind: pager, url: "https://x"}
"""


def test_bad_channels_are_listed_with_lines(tmp_path: Path) -> None:
    path = tmp_path / "reg.yaml"
    path.write_text(CHANNELS.replace('      - {kind: pager, url: "https://x"}\n', ""))
    with pytest.raises(ConfigError) as info:
        load_registry(path)
    got = [str(p).replace(str(path), "reg.yaml") for p in info.value.problems]
    assert got == [
        "reg.yaml:7: organisations[0].channels[0].url: 'ftp://x' must start with http:// or "
        "https://",
        "reg.yaml:7: organisations[0].channels[0].secret: a webhook needs a secret of at "
        "least 16 characters",
        "reg.yaml:8: organisations[0].channels[1].kind: a second webhook channel: declare one "
        "per kind",
        "reg.yaml:9: organisations[0].channels[2].address: 'not-an-address' is not an email "
        "address",
    ]
    path.write_text(CHANNELS)
    with pytest.raises(ConfigError, match="pager"):
        load_registry(path)


async def test_channels_are_updated_in_place_and_undeclared_ones_disabled(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    path = tmp_path / "reg.yaml"
    two = ("version: 1\norganisations:\n  - id: pc-1\n    kind: property_company\n"
           "    name: 一号物业\n    channels:\n"
           "      - {kind: webhook, url: 'https://a.example/hook', secret: 0123456789abcdef}\n"
           "      - {kind: email, address: duty@pc1.example}\n")  # fmt: skip
    path.write_text(two)
    async with open_database(url) as db:
        async with db.session() as s:
            await import_registry(s, load_registry(path))
        path.write_text(two.replace("a.example", "b.example").rsplit("      - {kind: email", 1)[0])
        async with db.session() as s:
            counts = await import_registry(s, load_registry(path))
        async with db.session() as s:
            rows = (await s.scalars(select(models.OrgChannel).order_by(models.OrgChannel.id))).all()
    assert [(r.kind, r.target, r.enabled) for r in rows] == [
        ("webhook", "https://b.example/hook", True),
        ("email", "duty@pc1.example", False),
    ]
    assert counts.updated == 2


def test_the_documented_example_registry_is_valid() -> None:
    """docs/examples/registry.yaml shows every channel kind and a retired gateway."""
    from tests.conftest import ROOT  # noqa: PLC0415

    reg = load_registry(ROOT / "docs/examples/registry.yaml")
    kinds = {ch.kind for org in reg.organisations for ch in org.channels}
    assert kinds == {"webhook", "robot", "mqtt", "email"}
    assert any(g.retired for c in reg.communities for g in c.gateways)


def test_a_screen_shows_only_what_its_organisation_serves(tmp_path: Path) -> None:
    """From an outside test of issue 16: a company's screen listing another company's
    community was accepted (and then showed its live data)."""
    text = DEMO_REGISTRY.read_text() + (
        "  - {id: steal, org: pc-anju, communities: [longzhu-baihe]}\n"
        "  - {id: empty, org: nc-shancheng, communities: []}\n"
        "  - {id: shancheng-hall, org: fr-shanting}\n"
    )
    path = tmp_path / "reg.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_registry(path)
    got = [f"{p.path}: {p.reason}" for p in info.value.problems]
    assert got == [
        "screens[1].communities[0]: pc-anju does not serve longzhu-baihe: a screen shows its "
        "own communities",
        "screens[2].communities: list at least one, or leave it out for the org's own",
        "screens[3].id: screen 'shancheng-hall' is declared twice",
        "screens[3].org: fr-shanting is a fire_rescue; screens belong to a neighbourhood_centre, "
        "property_company, street_office, community_committee, housing_bureau",
    ]
