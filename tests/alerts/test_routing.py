"""Routing on the day of the event: contracts and handovers, no company, maintenance units,
the district's offices, market supervision on every special-equipment alert."""

from __future__ import annotations

import datetime as dt

from alerts.routing import CommunityFacts, ContractTerm, Recipient, company_on, recipients

DISTRICT = {
    ("shanting", "market_supervision"): "shanting-scjgj",
    ("shanting", "fire_rescue"): "shanting-xfjy",
    ("shanting", "law_enforcement"): "shanting-zhzf",
}
GUIHUA = CommunityFacts(
    "guihuayuan", "guihua-jwh", "shancheng-jdb", "shanting",
    (ContractTerm("old-wuye", dt.date(2020, 1, 1), dt.date(2025, 6, 30)),
     ContractTerm("new-wuye", dt.date(2025, 7, 1))),
)  # fmt: skip
SUSHE = CommunityFacts("sishizhong-sushe", "sushe-jwh", "shancheng-jdb", "shanting")


def orgs(found: list[Recipient]) -> list[tuple[str, str]]:
    return [(r.org, r.role) for r in found]


def test_the_company_of_the_day_answers_before_and_after_a_handover() -> None:
    assert company_on(GUIHUA, dt.date(2025, 6, 30)) == "old-wuye"
    assert company_on(GUIHUA, dt.date(2025, 7, 1)) == "new-wuye"
    assert company_on(GUIHUA, dt.date(2019, 12, 31)) is None
    before = recipients(["company"], GUIHUA, dt.date(2025, 6, 30), district_orgs=DISTRICT)
    after = recipients(["company"], GUIHUA, dt.date(2025, 7, 1), district_orgs=DISTRICT)
    assert orgs(before) == [("old-wuye", "company")]
    assert orgs(after) == [("new-wuye", "company")]


def test_overlapping_contracts_go_to_the_one_that_started_last() -> None:
    overlap = CommunityFacts("c", "jwh", "jdb", "shanting",
                             (ContractTerm("a", dt.date(2024, 1, 1), dt.date(2025, 9, 30)),
                              ContractTerm("b", dt.date(2025, 9, 1))))  # fmt: skip
    assert company_on(overlap, dt.date(2025, 9, 15)) == "b"


def test_no_company_falls_to_the_committee_and_street_office() -> None:
    found = recipients(["company"], SUSHE, dt.date(2026, 11, 22), district_orgs=DISTRICT)
    assert orgs(found) == [("sushe-jwh", "community_committee"),
                           ("shancheng-jdb", "street_office")]  # fmt: skip
    assert all(r.standing_in for r in found)


def test_trapped_goes_to_company_maintenance_unit_and_market_supervision() -> None:
    found = recipients(["company", "maintenance_unit", "market_supervision"], GUIHUA,
                       dt.date(2026, 11, 22), maintenance_unit="xinda-dianti",
                       district_orgs=DISTRICT, special_equipment=True)  # fmt: skip
    assert orgs(found) == [("new-wuye", "company"), ("xinda-dianti", "maintenance_unit"),
                           ("shanting-scjgj", "market_supervision")]  # fmt: skip
    # Named by the ladder or not, market supervision is informed and never acts.
    assert [r.read_only for r in found] == [False, False, True]


def test_market_supervision_sees_every_special_equipment_alert_read_only() -> None:
    found = recipients(["company"], GUIHUA, dt.date(2026, 11, 22), district_orgs=DISTRICT,
                       special_equipment=True)  # fmt: skip
    assert found[-1] == Recipient("shanting-scjgj", "market_supervision", read_only=True)
    lane = recipients(["company"], GUIHUA, dt.date(2026, 11, 22), district_orgs=DISTRICT)
    assert "market_supervision" not in {r.role for r in lane}


def test_offices_nobody_holds_are_skipped_and_each_org_is_told_once() -> None:
    found = recipients(["street_office", "fire_rescue", "police", "company", "street_office"],
                       SUSHE, dt.date(2026, 11, 22), district_orgs=DISTRICT)  # fmt: skip
    assert orgs(found) == [("shancheng-jdb", "street_office"), ("shanting-xfjy", "fire_rescue"),
                           ("sushe-jwh", "community_committee")]  # fmt: skip
