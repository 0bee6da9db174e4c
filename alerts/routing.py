"""Who is told: the organisations an alert goes to, derived from the registry at the moment
of the event (DOMAIN.md, "Who answers for what").

* ``company``: the property company whose contract covers the community on the day of the
  event. Alerts raised before a handover stay with the old company, later ones go to the
  new one. A community with no company that day falls to its community committee and its
  street office (社区托管), marked ``standing_in``.
* ``maintenance_unit``: the elevator's own maintenance unit.
* ``community_committee``, ``street_office``: the community's own.
* ``market_supervision``, ``fire_rescue``, ``law_enforcement``, ``police``: the community's
  district's. Market supervision receives every special-equipment alert (elevators), read
  only where the ladder does not name it.

Pure: the caller passes the registry facts and the local day of the event.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args

__all__ = [
    "DISTRICT_ROLES",
    "READ_ONLY_ROLES",
    "CommunityFacts",
    "ContractTerm",
    "Recipient",
    "Role",
    "company_on",
    "recipients",
]

Role = Literal[
    "company",
    "maintenance_unit",
    "community_committee",
    "street_office",
    "market_supervision",
    "fire_rescue",
    "law_enforcement",
    "police",
]
ROLES: Final = frozenset(get_args(Role))
#: Roles held by one organisation per district.
DISTRICT_ROLES: Final = frozenset(
    {"market_supervision", "fire_rescue", "law_enforcement", "police"}
)


@dataclass(frozen=True, slots=True)
class ContractTerm:
    """A property-service contract; ``end`` is the last day served (None: open-ended)."""

    company: str
    start: dt.date
    end: dt.date | None = None

    def covers(self, day: dt.date) -> bool:
        return self.start <= day and (self.end is None or day <= self.end)


@dataclass(frozen=True, slots=True)
class CommunityFacts:
    """What routing needs of a community."""

    id: str
    committee: str
    street_office: str
    district: str
    contracts: tuple[ContractTerm, ...] = ()


#: Roles that are informed and never act: market supervision supervises special equipment
#: (DOMAIN.md), it does not acknowledge or clear alerts, whether a ladder names it or not.
READ_ONLY_ROLES: frozenset[str] = frozenset({"market_supervision"})


@dataclass(frozen=True, slots=True)
class Recipient:
    """One organisation told of an alert, and in which role."""

    org: str
    role: Role
    #: Told but may not act (acknowledge, arrive, resolve): the roles in
    #: :data:`READ_ONLY_ROLES`. The one place this is decided: the webhook payload, the
    #: organisation feed and the alert API all read it from the stored recipient.
    read_only: bool = False
    #: Standing in for a company the community does not have.
    standing_in: bool = False


def company_on(community: CommunityFacts, day: dt.date) -> str | None:
    """The company under contract on ``day``; of overlapping contracts (a handover period),
    the one that started last."""
    current = [c for c in community.contracts if c.covers(day)]
    return max(current, key=lambda c: c.start).company if current else None


def recipients(
    roles: Iterable[Role],
    community: CommunityFacts,
    day: dt.date,
    *,
    maintenance_unit: str | None = None,
    district_orgs: Mapping[tuple[str, str], str],
    special_equipment: bool = False,
) -> list[Recipient]:
    """The organisations for ``roles`` on ``day``, each once, in the order of ``roles``.

    ``district_orgs`` maps (district, role) to an organisation id. A role with nobody to
    hold it (no maintenance unit recorded, no such office in the district) is skipped; the
    server reports it as a routing gap.
    """
    out: list[Recipient] = []
    for role in roles:
        if role == "company":
            company = company_on(community, day)
            if company is not None:
                out.append(Recipient(company, "company"))
            else:
                out.append(Recipient(community.committee, "community_committee", standing_in=True))
                out.append(Recipient(community.street_office, "street_office", standing_in=True))
        elif role == "maintenance_unit":
            if maintenance_unit is not None:
                out.append(Recipient(maintenance_unit, role))
        elif role == "community_committee":
            out.append(Recipient(community.committee, role))
        elif role == "street_office":
            out.append(Recipient(community.street_office, role))
        else:
            org = district_orgs.get((community.district, role))
            if org is not None:
                out.append(Recipient(org, role, read_only=role in READ_ONLY_ROLES))
    if special_equipment and all(r.role != "market_supervision" for r in out):
        org = district_orgs.get((community.district, "market_supervision"))
        if org is not None:
            out.append(Recipient(org, "market_supervision", read_only=True))
    seen: set[str] = set()
    unique: list[Recipient] = []
    for r in out:
        if r.org not in seen:
            seen.add(r.org)
            unique.append(r)
    return unique
