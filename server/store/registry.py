"""The registry: organisations, communities, gateways, devices and contracts, as declared in YAML.

``linli registry import FILE`` loads a registry file into SQL. The import is idempotent: each
record is keyed by its id (contracts by community, company and start date) and created or
updated in place, so importing the same file twice changes nothing the second time. Records
that a file does not mention are left alone (a registry can be split over several files).

The server keeps a :class:`RegistryIndex` in memory for ingest: which communities, gateways and
devices exist. It is rebuilt from SQL, never from YAML, so that API edits count too.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from collectors.wire import ID_PATTERN, DeviceKind
from collectors.yamlconf import load_yaml
from server.store import models

__all__ = [
    "ImportCounts",
    "RegistryFile",
    "RegistryIndex",
    "import_registry",
    "load_registry",
    "load_registry_index",
]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

OrgKind = Literal[
    "property_company",
    "maintenance_unit",
    "community_committee",
    "street_office",
    "market_supervision",
    "fire_rescue",
    "law_enforcement",
    "police",
    "housing_bureau",
    "neighbourhood_centre",
]


class _Decl(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class ChannelDecl(_Decl, frozen=True):
    """Where an organisation receives its alerts (server/notifier.py): at most one per kind.

    ``webhook``: ``url`` and ``secret`` (the HMAC key, at least 16 characters); ``robot``:
    a WeCom/DingTalk robot ``url``; ``mqtt``: the feed ``{prefix}/org/{org}/alerts``;
    ``email``: ``address``."""

    kind: Literal["webhook", "robot", "mqtt", "email"]
    url: str = ""
    secret: str = ""
    address: str = ""


class OrganisationDecl(_Decl, frozen=True):
    """An organisation (DOMAIN.md, "Who answers for what")."""

    id: str
    kind: OrgKind
    name: str
    name_en: str = ""
    district: str = ""
    parent: str | None = None
    channels: list[ChannelDecl] = []


class GatewayDecl(_Decl, frozen=True):
    """A community's edge gateway. ``retired``: taken out of service; its envelopes are
    rejected, its broker account dropped, its history kept (devices must move first)."""

    id: str
    name: str = ""
    retired: bool = False


class DeviceDecl(_Decl, frozen=True):
    """A monitored device; elevators keep the identity fields regulator platforms need."""

    id: str
    kind: DeviceKind
    name: str
    gateway: str
    name_en: str = ""
    building: str = ""
    floors: int | None = None
    maintenance_unit: str | None = None
    registration_code: str | None = None  # 设备注册代码
    use_registration_no: str | None = None  # 使用登记证编号
    rescue_code: str | None = None  # 应急救援识别码 (96333-style)
    next_inspection: dt.date | None = None  # 下次检验日期
    last_maintained: dt.date | None = None  # the last maintenance before Linli kept records


class CommunityDecl(_Decl, frozen=True):
    """A residential community (小区) and the devices watched in it."""

    id: str
    name: str
    committee: str
    street_office: str
    district: str
    name_en: str = ""
    condition_class: Literal[1, 2, 3] | None = None  # 山亭 classes communities 1/2/3
    arrival_deadline_min: int = 30  # TSG T5002: 30 min in a city district, 60 elsewhere
    gateways: list[GatewayDecl] = []
    devices: list[DeviceDecl] = []


class ContractDecl(_Decl, frozen=True):
    """A property-service contract: ``company`` serves ``community`` from start to end."""

    community: str
    company: str
    start: dt.date
    end: dt.date | None = None


class CentreDecl(_Decl, frozen=True):
    """A neighbourhood centre (邻里中心) and the communities its screens show."""

    org: str
    communities: list[str]


class ScreenDecl(_Decl, frozen=True):
    """A live screen (docs/screens.md): whose it is, which communities it shows (default: the
    organisation's own: a centre's, a street office's street, a company's contracts of the
    day, a committee's community, a bureau's district), its language, density and the
    seconds each page of communities stays up. Its token is made with ``linli screens``."""

    id: str
    org: str
    name: str = ""
    communities: list[str] | None = None
    lang: Literal["zh", "en"] = "zh"
    density: Literal["normal", "compact"] = "normal"
    rotate_s: int = 15


SCREEN_ORGS: Final = ("neighbourhood_centre", "property_company", "street_office",
                      "community_committee", "housing_bureau")  # fmt: skip


class RegistryFile(_Decl, frozen=True):
    """The whole registry file."""

    version: Literal[1]
    organisations: list[OrganisationDecl] = []
    communities: list[CommunityDecl] = []
    contracts: list[ContractDecl] = []
    neighbourhood_centres: list[CentreDecl] = []
    screens: list[ScreenDecl] = []


def _check(reg: RegistryFile) -> Iterator[tuple[str, str]]:
    """Cross-references and uniqueness that the types cannot express."""
    orgs = {o.id: o for o in reg.organisations}
    seen: set[str] = set()
    for i, org in enumerate(reg.organisations):
        if not ID_PATTERN.match(org.id):
            yield f"organisations[{i}].id", f"{org.id!r} is not a slug like 'pc-anju'"
        if org.id in seen:
            yield f"organisations[{i}].id", f"organisation {org.id!r} is declared twice"
        seen.add(org.id)
        if org.parent is not None and org.parent not in orgs:
            yield f"organisations[{i}].parent", f"unknown organisation {org.parent!r}"
        kinds = [c.kind for c in org.channels]
        for j, ch in enumerate(org.channels):
            path = f"organisations[{i}].channels[{j}]"
            if kinds.count(ch.kind) > 1 and kinds.index(ch.kind) != j:
                yield f"{path}.kind", f"a second {ch.kind} channel: declare one per kind"
            if ch.kind in ("webhook", "robot") and not ch.url.startswith(("http://", "https://")):
                yield f"{path}.url", f"{ch.url!r} must start with http:// or https://"
            if ch.kind == "webhook" and len(ch.secret) < 16:
                yield f"{path}.secret", "a webhook needs a secret of at least 16 characters"
            if ch.kind == "email" and not _EMAIL.match(ch.address):
                yield f"{path}.address", f"{ch.address!r} is not an email address"

    def want(path: str, org_id: str | None, kind: str) -> Iterator[tuple[str, str]]:
        if org_id is None:
            return
        org = orgs.get(org_id)
        if org is None:
            yield path, f"unknown organisation {org_id!r}"
        elif org.kind != kind:
            yield path, f"{org_id!r} is a {org.kind}, expected a {kind}"

    communities: set[str] = set()
    for i, com in enumerate(reg.communities):
        base = f"communities[{i}]"
        if not ID_PATTERN.match(com.id):
            yield f"{base}.id", f"{com.id!r} is not a slug like 'meihuayuan'"
        if com.id in communities:
            yield f"{base}.id", f"community {com.id!r} is declared twice"
        communities.add(com.id)
        yield from want(f"{base}.committee", com.committee, "community_committee")
        yield from want(f"{base}.street_office", com.street_office, "street_office")
        gateways = {g.id for g in com.gateways}
        retired = {g.id for g in com.gateways if g.retired}
        for j, gw in enumerate(com.gateways):
            if not ID_PATTERN.match(gw.id):
                yield f"{base}.gateways[{j}].id", f"{gw.id!r} is not a slug like 'gw-1'"
        if len(gateways) != len(com.gateways):
            yield f"{base}.gateways", "a gateway id is declared twice"
        devices: set[str] = set()
        for j, dev in enumerate(com.devices):
            path = f"{base}.devices[{j}]"
            if not ID_PATTERN.match(dev.id):
                yield f"{path}.id", f"{dev.id!r} is not a slug like 'el-1-1'"
            if dev.id in devices:
                yield f"{path}.id", f"device {dev.id!r} is declared twice in {com.id}"
            devices.add(dev.id)
            if dev.gateway not in gateways:
                yield f"{path}.gateway", f"gateway {dev.gateway!r} is not declared in {com.id}"
            elif dev.gateway in retired:
                yield f"{path}.gateway", f"gateway {dev.gateway!r} is retired: move the device"
            yield from want(f"{path}.maintenance_unit", dev.maintenance_unit, "maintenance_unit")
            if dev.kind == "elevator" and dev.floors is not None and dev.floors < 2:
                yield f"{path}.floors", "an elevator serves at least 2 floors"
            if dev.kind != "elevator" and (dev.next_inspection or dev.last_maintained):
                yield f"{path}.kind", "maintenance and inspection dates are for elevators"
    by_community: dict[str, list[tuple[int, ContractDecl]]] = {}
    for i, con in enumerate(reg.contracts):
        if con.community not in communities:
            yield f"contracts[{i}].community", f"unknown community {con.community!r}"
        yield from want(f"contracts[{i}].company", con.company, "property_company")
        if con.end is not None and con.end < con.start:
            yield f"contracts[{i}].end", f"ends ({con.end}) before it starts ({con.start})"
        by_community.setdefault(con.community, []).append((i, con))
    for entries in by_community.values():
        entries.sort(key=lambda e: e[1].start)
        for (_, a), (j, b) in itertools.pairwise(entries):
            if a.end is None or a.end >= b.start:
                yield (
                    f"contracts[{j}].start",
                    f"overlaps the contract of {a.company!r} from {a.start} for {b.community}",
                )
    for i, centre in enumerate(reg.neighbourhood_centres):
        yield from want(f"neighbourhood_centres[{i}].org", centre.org, "neighbourhood_centre")
        for j, cid in enumerate(centre.communities):
            if cid not in communities:
                yield f"neighbourhood_centres[{i}].communities[{j}]", f"unknown community {cid!r}"
    screen_ids: set[str] = set()
    by_id = {c.id: c for c in reg.communities}
    for i, sc in enumerate(reg.screens):
        base = f"screens[{i}]"
        if not ID_PATTERN.match(sc.id):
            yield f"{base}.id", f"{sc.id!r} is not a slug like 'nc-1-hall'"
        elif sc.id in screen_ids:
            yield f"{base}.id", f"screen {sc.id!r} is declared twice"
        screen_ids.add(sc.id)
        owner = orgs.get(sc.org)
        if owner is None:
            yield f"{base}.org", f"unknown organisation {sc.org!r}"
        elif owner.kind not in SCREEN_ORGS:
            yield f"{base}.org", (f"{sc.org} is a {owner.kind}; screens belong to a "
                                  f"{', '.join(SCREEN_ORGS)}")  # fmt: skip
        if sc.communities is not None and not sc.communities:
            yield f"{base}.communities", "list at least one, or leave it out for the org's own"
        for j, cid in enumerate(sc.communities or []):
            listed = by_id.get(cid)
            if listed is None:
                yield f"{base}.communities[{j}]", f"unknown community {cid!r}"
            elif owner is not None and not _screen_may_show(reg, owner, listed):
                why = f"{sc.org} does not serve {cid}: a screen shows its own communities"
                yield f"{base}.communities[{j}]", why
        if not 5 <= sc.rotate_s <= 600:
            yield f"{base}.rotate_s", "must be 5..600 seconds"


def _screen_may_show(reg: RegistryFile, org: OrganisationDecl, com: CommunityDecl) -> bool:
    """Whether ``org``'s screens may list ``com`` (the runtime narrows a company's to its
    contracts of the day; here any contract will do)."""
    if org.kind == "neighbourhood_centre":
        return any(c.org == org.id and com.id in c.communities for c in reg.neighbourhood_centres)
    if org.kind == "street_office":
        return com.street_office == org.id
    if org.kind == "community_committee":
        return com.committee == org.id
    if org.kind == "housing_bureau":
        return com.district == org.district
    return any(k.company == org.id and k.community == com.id for k in reg.contracts)


def load_registry(path: Path) -> RegistryFile:
    """Load and check a registry file; raise ConfigError listing every problem."""
    return load_yaml(path, RegistryFile, check=_check)


@dataclass
class ImportCounts:
    """What an import did, per record: created, updated, or already as declared."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0


def _apply(
    session: AsyncSession, existing: object | None, new: models.Base, n: ImportCounts
) -> None:
    if existing is None:
        session.add(new)
        n.created += 1
        return
    changed = False
    for column in new.__table__.columns:
        value = getattr(new, column.key)
        if column.primary_key or getattr(existing, column.key) == value:
            continue
        setattr(existing, column.key, value)
        changed = True
    if changed:
        n.updated += 1
    else:
        n.unchanged += 1


async def import_registry(session: AsyncSession, reg: RegistryFile) -> ImportCounts:
    """Create or update every record of ``reg``; the caller commits."""
    n = ImportCounts()
    for o in reg.organisations:
        row = models.Organisation(
            id=o.id,
            kind=o.kind,
            name=o.name,
            name_en=o.name_en,
            district=o.district,
            parent_id=o.parent,
        )
        _apply(session, await session.get(models.Organisation, o.id), row, n)
        await _import_channels(session, o, n)
    for c in reg.communities:
        com = models.Community(
            id=c.id,
            name=c.name,
            name_en=c.name_en,
            committee_id=c.committee,
            street_office_id=c.street_office,
            district=c.district,
            condition_class=c.condition_class,
            arrival_deadline_min=c.arrival_deadline_min,
        )
        _apply(session, await session.get(models.Community, c.id), com, n)
        for g in c.gateways:
            gw = models.Gateway(community_id=c.id, id=g.id, name=g.name, retired=g.retired)
            _apply(session, await session.get(models.Gateway, (c.id, g.id)), gw, n)
        for d in c.devices:
            dev = models.Device(
                community_id=c.id,
                id=d.id,
                kind=d.kind,
                name=d.name,
                name_en=d.name_en,
                gateway_id=d.gateway,
                building=d.building,
                floors=d.floors,
                maintenance_unit_id=d.maintenance_unit,
                registration_code=d.registration_code,
                use_registration_no=d.use_registration_no,
                rescue_code=d.rescue_code,
            )
            _apply(session, await session.get(models.Device, (c.id, d.id)), dev, n)
            if d.next_inspection is not None:
                due = models.Inspection(community_id=c.id, device=d.id, next_date=d.next_inspection)
                _apply(session, await session.get(models.Inspection, (c.id, d.id)), due, n)
            if d.last_maintained is not None:
                await _seed_maintenance(session, c.id, d, n)
    for k in reg.contracts:
        found = await session.scalar(
            select(models.Contract).where(
                models.Contract.community_id == k.community,
                models.Contract.company_id == k.company,
                models.Contract.start == k.start,
            )
        )
        con = models.Contract(
            community_id=k.community, company_id=k.company, start=k.start, end=k.end
        )
        if found is not None:
            con.id = found.id
        _apply(session, found, con, n)
    for centre in reg.neighbourhood_centres:
        for cid in centre.communities:
            link = models.CentreCommunity(centre_id=centre.org, community_id=cid)
            _apply(session, await session.get(models.CentreCommunity, (centre.org, cid)), link, n)
    for sc in reg.screens:
        screen = models.Screen(
            id=sc.id, org_id=sc.org, name=sc.name or sc.id,
            communities=json.dumps(sc.communities) if sc.communities is not None else "",
            lang=sc.lang, density=sc.density, rotate_s=sc.rotate_s,
        )  # fmt: skip
        _apply(session, await session.get(models.Screen, sc.id), screen, n)
    await session.flush()
    return n


async def _seed_maintenance(
    session: AsyncSession, community: str, d: DeviceDecl, n: ImportCounts
) -> None:
    """The registry's last maintenance day, as a record of the maintenance unit (once)."""
    found = await session.scalar(
        select(models.MaintenanceRecord).where(
            models.MaintenanceRecord.community_id == community,
            models.MaintenanceRecord.device == d.id,
            models.MaintenanceRecord.day == d.last_maintained,
        )
    )
    if found is not None:
        n.unchanged += 1
        return
    session.add(
        models.MaintenanceRecord(community_id=community, device=d.id, day=d.last_maintained,
                                 org_id=d.maintenance_unit or "", note="registry",
                                 created_t=time.time_ns() // 1_000_000)
    )  # fmt: skip
    n.created += 1


async def _import_channels(session: AsyncSession, org: OrganisationDecl, n: ImportCounts) -> None:
    """One channel per kind: declared ones created or updated, undeclared ones disabled (kept,
    since deliveries refer to them)."""
    await session.flush()  # the organisation row first (foreign key)
    existing = {
        c.kind: c
        for c in (
            await session.scalars(
                select(models.OrgChannel).where(models.OrgChannel.org_id == org.id)
            )
        ).all()
    }
    for ch in org.channels:
        target = ch.address if ch.kind == "email" else ch.url
        new = models.OrgChannel(
            org_id=org.id, kind=ch.kind, target=target, secret=ch.secret, enabled=True
        )
        found = existing.pop(ch.kind, None)
        if found is not None:
            new.id = found.id
        _apply(session, found, new, n)
    for stale in existing.values():
        if stale.enabled:
            stale.enabled = False
            n.updated += 1


@dataclass(frozen=True)
class DeviceInfo:
    """What ingest needs to know about a device."""

    community: str
    gateway: str
    kind: str
    building: str = ""


@dataclass(frozen=True)
class RegistryIndex:
    """The registry as ingest sees it: what may publish what."""

    communities: frozenset[str]
    gateways: frozenset[tuple[str, str]]  # in service
    devices: dict[tuple[str, str], DeviceInfo]
    retired: frozenset[tuple[str, str]] = frozenset()


async def load_registry_index(session: AsyncSession) -> RegistryIndex:
    """Read the ids ingest checks against from SQL."""
    communities = frozenset((await session.scalars(select(models.Community.id))).all())
    rows = (await session.scalars(select(models.Gateway))).all()
    gateways = frozenset((r.community_id, r.id) for r in rows if not r.retired)
    retired = frozenset((r.community_id, r.id) for r in rows if r.retired)
    devices = {
        (d.community_id, d.id): DeviceInfo(d.community_id, d.gateway_id, d.kind, d.building or "")
        for d in (await session.scalars(select(models.Device))).all()
    }
    return RegistryIndex(communities, gateways, devices, retired)
