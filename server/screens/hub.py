"""The screens' live feed (issue 16): one fan-out per change, whatever the number of screens.

A change (a device's state from ingest, a gateway's status, an alert opened or moved) is made
public once (no person, plate, picture or note: :func:`public_device`, :func:`public_alert`),
serialised once, and handed to the subscribers of its community as bytes; each subscriber
keeps only the latest bytes per thing (a slow screen skips intermediate states, never grows)
and numbers the frames it sends, so that a page sees a gap and asks for a new snapshot.

Alerts are read from SQL once a second by one query for the whole server (any worker may have
moved them); device and gateway changes come from this worker's live state.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from sqlalchemy import select

from alerts.lifecycle import OPEN_STATES
from alerts.routing import CommunityFacts, ContractTerm, company_on
from server.store import models
from server.store.db import Database
from server.telemetry.queries import TelemetryReader, elevator_availability, fire_lane_occupancy
from server.web.livestate import DeviceState, LiveState

__all__ = [
    "PUBLIC_FIELDS",
    "RESYNC",
    "ScreenHub",
    "ScreenSub",
    "communities_of_screen",
    "make_screen_token",
    "public_alert",
    "public_device",
]

log = logging.getLogger(__name__)

#: What a screen may show of a device: states and counts, never evidence, plates or people.
PUBLIC_FIELDS: Final[dict[str, frozenset[str]]] = {
    "elevator": frozenset(
        {"running", "direction", "floor", "door", "door_zone", "occupied", "service_mode", "power"}
    ),
    "fire_lane": frozenset({"occupied", "dwell_s", "object"}),
    "gate": frozenset({"open", "locked", "mode", "passages"}),
    "fire_panel": frozenset({"alarm"}),
}
ALERT_POLL_S: Final = 1.0
#: Frames go out this often: the changes in between are folded into one frame per group.
FRAME_S: Final = 0.4
#: Frames a screen may fall behind before it is told to take a new snapshot.
MAX_BACKLOG: Final = 50
RESYNC: Final = b"resync"
STRIP_CACHE_S: Final = 60.0
HOUR_MS: Final = 3_600_000


def make_screen_token() -> str:
    """A new screen token (shown once; stored as its SHA-256)."""
    return "scr_" + secrets.token_urlsafe(24)


Names = tuple[str, str]  # Chinese, English (the English falls back to the Chinese)


def public_device(state: dict[str, Any], name: Names) -> dict[str, Any]:
    """A device's state as a screen shows it (LiveState's form, filtered)."""
    allowed = PUBLIC_FIELDS.get(state["kind"], frozenset())
    return {
        "type": "device",
        "community": state["community"],
        "dev": state["dev"],
        "kind": state["kind"],
        "name": name[0],
        "name_en": name[1],
        "t": state.get("t"),
        "fields": {k: v for k, v in (state.get("fields") or {}).items() if k in allowed},
        "active": list(state.get("active") or []),
    }


def public_alert(row: models.Alert, device_name: Names, handler: Names | None) -> dict[str, Any]:
    """An alert as a screen shows it: what, where, since when, its state, who handles it
    (an organisation's public name); no notes, evidence or people."""
    return {
        "type": "alert",
        "id": row.id,
        "community": row.community_id,
        "device": row.device,
        "device_name": device_name[0],
        "device_name_en": device_name[1],
        "rule": row.rule,
        "severity": row.severity,
        "state": row.state,
        "open": row.state in OPEN_STATES,
        "opened_t": row.opened_t,
        "updated_t": row.updated_t,
        "level": row.level,
        "handler": handler[0] if handler else None,
        "handler_en": handler[1] if handler else None,
    }


class ScreenSub:
    """One connected screen: the frames of its group not yet written to it."""

    def __init__(self, group: _Group) -> None:
        self.group = group
        self.frames: collections.deque[bytes] = collections.deque()
        self.ready = asyncio.Event()
        #: Set when the screen fell more than MAX_BACKLOG frames behind: its frames were
        #: dropped and it must take a new snapshot (the page sees the event and does).
        self.overflowed = False

    @property
    def communities(self) -> frozenset[str]:
        return self.group.communities

    def push(self, frame: bytes) -> None:
        if len(self.frames) >= MAX_BACKLOG:
            self.frames.clear()
            self.overflowed = True
        else:
            self.frames.append(frame)
        self.ready.set()

    async def next_frame(self, wait_s: float) -> bytes | None:
        """The next frame, ``RESYNC`` after an overflow, or None after ``wait_s``."""
        if not self.frames and not self.overflowed:
            self.ready.clear()
            try:
                await asyncio.wait_for(self.ready.wait(), wait_s)
            except TimeoutError:
                return None
        if self.overflowed:
            self.overflowed = False
            return RESYNC
        return self.frames.popleft() if self.frames else None


class _Group:
    """The screens showing one set of communities: one pending set of changes, one frame
    built per tick for all of them, numbered in order."""

    def __init__(self, communities: frozenset[str]) -> None:
        self.communities = communities
        self.communities_sorted = sorted(communities)
        #: What changed since the last frame, by thing: built into the next frame.
        self.pending: dict[str, Any] = {}
        self.seq = 0
        self.subs: set[ScreenSub] = set()


async def communities_of_screen(session: Any, screen: models.Screen, day: dt.date) -> list[str]:
    """The communities a screen shows, ordered by id: its organisation's (a centre's, a
    street office's street, a company's contracts of ``day``, a committee's community, a
    bureau's district), narrowed to the screen's own list when it has one (a list never
    widens what the organisation sees: a company's screen loses a community at a handover)."""
    org = await session.get(models.Organisation, screen.org_id)
    if org is None:
        return []
    own: set[str] = set()
    if org.kind == "property_company":
        by_com: dict[str, list[ContractTerm]] = {}
        for k in (await session.scalars(select(models.Contract))).all():
            by_com.setdefault(k.community_id, []).append(ContractTerm(k.company_id, k.start, k.end))
        for cid, terms in by_com.items():
            if company_on(CommunityFacts(cid, "", "", "", tuple(terms)), day) == org.id:
                own.add(cid)
    else:
        query = select(models.Community.id)
        if org.kind == "neighbourhood_centre":
            query = select(models.CentreCommunity.community_id).where(
                models.CentreCommunity.centre_id == org.id
            )
        elif org.kind == "street_office":
            query = query.where(models.Community.street_office_id == org.id)
        elif org.kind == "community_committee":
            query = query.where(models.Community.committee_id == org.id)
        elif org.kind == "housing_bureau":
            query = query.where(models.Community.district == org.district)
        else:
            return []
        own = set((await session.scalars(query)).all())
    if screen.communities:
        own &= set(json.loads(screen.communities))
    return sorted(own)


class ScreenHub:
    """Subscribers by community, the live state's listener, and the alert poller."""

    def __init__(
        self,
        db: Database,
        live: LiveState,
        *,
        reader: Callable[[], TelemetryReader | None] = lambda: None,
        tz: str = "Asia/Shanghai",
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.db, self.live, self.reader, self.tz = db, live, reader, tz
        self.clock = clock or (lambda: time.time_ns() // 1_000_000)
        #: Changes on restart: a page that sees another epoch takes a new snapshot.
        self.epoch = secrets.token_hex(8)
        self._groups: dict[frozenset[str], _Group] = {}
        self._by_community: dict[str, set[_Group]] = {}
        self._names: dict[tuple[str, str], Names] = {}
        self._org_names: dict[str, Names] = {}
        self._alerts_seen_t = self.clock()
        self._strips: dict[str, tuple[float, dict[str, Any]]] = {}
        self.changes = 0  # changes fanned out (each serialised once)
        live.listeners.append(self._on_live)

    # --- subscribers ----------------------------------------------------------------------

    def subscribe(self, communities: Iterable[str]) -> ScreenSub:
        key = frozenset(communities)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(key)
            for c in key:
                self._by_community.setdefault(c, set()).add(group)
        sub = ScreenSub(group)
        group.subs.add(sub)
        return sub

    def unsubscribe(self, sub: ScreenSub) -> None:
        group = sub.group
        group.subs.discard(sub)
        if group.subs:
            return
        del self._groups[group.communities]
        for c in group.communities:
            groups = self._by_community.get(c)
            if groups is not None:
                groups.discard(group)
                if not groups:
                    del self._by_community[c]

    @property
    def connections(self) -> int:
        return sum(len(g.subs) for g in self._groups.values())

    def _fan_out(self, community: str, key: str, source: Any) -> None:
        """Note that ``key`` changed (its source: a DeviceState, a gateway entry, a public
        alert); nothing is built until the next frame."""
        groups = self._by_community.get(community)
        if not groups:
            return
        self.changes += 1
        for group in groups:
            group.pending[key] = source

    def _encode(self, key: str, source: Any) -> bytes:
        if isinstance(source, DeviceState):
            name = self._names.get((source.community, source.dev), (source.dev, source.dev))
            update = public_device(source.as_json(), name)
        elif key.startswith("g/"):
            update = public_gateway(source)
        else:
            update = source
        return json.dumps(update, ensure_ascii=False, separators=(",", ":")).encode()

    def flush(self) -> int:
        """Build each group's frame (each change encoded once, whatever the groups) and hand
        it to its screens; frames built."""
        built = 0
        encoded: dict[str, bytes] = {}
        for group in self._groups.values():
            if not group.pending:
                continue
            parts = []
            for key, source in group.pending.items():
                data = encoded.get(key)
                if data is None:
                    data = encoded[key] = self._encode(key, source)
                parts.append(data)
            group.pending = {}
            group.seq += 1
            frame = b'{"seq":%d,"updates":[%s]}' % (group.seq, b",".join(parts))
            built += 1
            for sub in group.subs:
                sub.push(frame)
        return built

    def _on_live(self, key: str, community: str, source: Any) -> None:
        if community in self._by_community:
            self._fan_out(community, key, source)

    # --- alerts ---------------------------------------------------------------------------

    async def load_names(self) -> None:
        async with self.db.session() as session:
            D, Org = models.Device, models.Organisation  # noqa: N806
            for c, d, name, name_en in await session.execute(
                select(D.community_id, D.id, D.name, D.name_en)
            ):
                self._names[c, d] = (name, name_en or name)
            for oid, name, name_en in await session.execute(select(Org.id, Org.name, Org.name_en)):
                self._org_names[oid] = (name, name_en or name)

    async def run(self) -> None:
        """Every FRAME_S, one frame per group of screens; every ALERT_POLL_S, the alert
        changes of the whole server (one query), fanned out."""
        await self.load_names()
        next_poll = time.monotonic() + ALERT_POLL_S
        while True:
            await asyncio.sleep(FRAME_S)
            self.flush()
            if time.monotonic() < next_poll:
                continue
            next_poll = time.monotonic() + ALERT_POLL_S
            if not self._by_community:
                self._alerts_seen_t = self.clock() - 5_000
                continue
            try:
                await self._poll_alerts()
            except OSError as exc:  # the database went away for a moment
                log.warning("screens: alerts not read: %s", exc)

    async def _poll_alerts(self) -> None:
        since = self._alerts_seen_t
        async with self.db.session() as session:
            rows = (
                await session.scalars(
                    select(models.Alert)
                    .where(
                        models.Alert.updated_t >= since,
                        models.Alert.community_id.in_(list(self._by_community)),
                    )
                    .order_by(models.Alert.updated_t)
                )
            ).all()
            handlers = await self._handlers(session, [r.id for r in rows])
        for row in rows:
            self._alerts_seen_t = max(self._alerts_seen_t, row.updated_t)
            name = self._names.get((row.community_id, row.device), (row.device, row.device))
            update = public_alert(row, name, handlers.get(row.id))
            self._fan_out(row.community_id, f"a/{row.id}", update)

    async def _handlers(self, session: Any, ids: Sequence[int]) -> dict[int, Names]:
        if not ids:
            return {}
        rows = await session.execute(
            select(models.AlertRecipient.alert_id, models.AlertRecipient.org_id).where(
                models.AlertRecipient.alert_id.in_(ids),
                models.AlertRecipient.step == "first",
                models.AlertRecipient.role.in_(("company", "community_committee")),
            )
        )
        return {aid: self._org_names.get(org, (org, org)) for aid, org in rows}

    # --- snapshots ------------------------------------------------------------------------

    async def snapshot(
        self, screen: models.Screen, communities: Sequence[str], sub: ScreenSub | None = None
    ) -> dict[str, Any]:
        """Everything a screen shows now, for its communities only. With the stream's
        ``sub``, ``seq`` is its group's last frame number, read together with the live state
        (nothing awaited in between): frames up to it are already in the snapshot."""
        now = self.clock()
        async with self.db.session() as session:
            coms = {
                c.id: c
                for c in (
                    await session.scalars(
                        select(models.Community).where(models.Community.id.in_(communities))
                    )
                ).all()
            }
            devices = (
                await session.scalars(
                    select(models.Device)
                    .where(models.Device.community_id.in_(communities))
                    .order_by(models.Device.community_id, models.Device.kind, models.Device.id)
                )
            ).all()
            gateways = (
                await session.scalars(
                    select(models.Gateway).where(
                        models.Gateway.community_id.in_(communities),
                        models.Gateway.retired.is_(False),
                    )
                )
            ).all()
            alerts = (
                await session.scalars(
                    select(models.Alert)
                    .where(
                        models.Alert.community_id.in_(communities),
                        models.Alert.state.in_(tuple(OPEN_STATES)),
                    )
                    .order_by(models.Alert.opened_t)
                )
            ).all()
            handlers = await self._handlers(session, [a.id for a in alerts])
            org = await session.get(models.Organisation, screen.org_id)
            hourly = await self._hourly_alerts(session, communities, now)
        strips = {}
        for cid in communities:
            kinds = [{"dev": d.id, "kind": d.kind} for d in devices if d.community_id == cid]
            strips[cid] = await self._strip(cid, kinds, now, hourly.get(cid))
        # From here on nothing is awaited: the live state and the frame number agree.
        seq = sub.group.seq if sub is not None else 0
        out_coms = []
        for cid in communities:
            c = coms.get(cid)
            if c is None:
                continue
            devs = []
            for d in devices:
                if d.community_id != cid:
                    continue
                self._names[cid, d.id] = (d.name, d.name_en or d.name)
                state = self.live.devices.get((cid, d.id))
                base = (
                    state.as_json()
                    if state is not None
                    else {
                        "community": cid,
                        "dev": d.id,
                        "kind": d.kind,
                        "t": None,
                        "fields": {},
                        "active": [],
                    }
                )
                devs.append(public_device(base, (d.name, d.name_en or d.name)))
            gws = [
                public_gateway(
                    self.live.gateways.get(
                        (cid, g.id), {"community": cid, "gateway": g.id, "status": None}
                    )
                )
                for g in gateways
                if g.community_id == cid
            ]
            out_coms.append(
                {
                    "id": cid,
                    "name": c.name,
                    "name_en": c.name_en or c.name,
                    "devices": devs,
                    "gateways": gws,
                    "strip": strips[cid],
                }
            )
        return {
            "epoch": self.epoch,
            "seq": seq,
            "now": now,
            "screen": {
                "id": screen.id,
                "name": screen.name,
                "lang": screen.lang,
                "density": screen.density,
                "rotate_s": screen.rotate_s,
                "org": org.name if org is not None else "",
                "org_en": (org.name_en or org.name) if org is not None else "",
            },
            "communities": out_coms,
            "alerts": [
                public_alert(
                    a,
                    self._names.get((a.community_id, a.device), (a.device, a.device)),
                    handlers.get(a.id),
                )
                for a in alerts
            ],
        }

    async def _hourly_alerts(
        self, session: Any, communities: Sequence[str], now: int
    ) -> dict[str, list[int]]:
        since = now - 24 * HOUR_MS
        out: dict[str, list[int]] = {}
        for cid, opened in await session.execute(
            select(models.Alert.community_id, models.Alert.opened_t).where(
                models.Alert.community_id.in_(communities), models.Alert.opened_t >= since
            )
        ):
            hours = out.setdefault(cid, [0] * 24)
            hours[min(23, (opened - since) // HOUR_MS)] += 1
        return out

    async def _strip(
        self, community: str, devices: list[dict[str, Any]], now: int, hourly: list[int] | None
    ) -> dict[str, Any]:
        """The 24-hour strip: alerts per hour, fire-lane occupied minutes and elevator
        availability (the telemetry figures, cached for a minute per community)."""
        cached = self._strips.get(community)
        strip: dict[str, Any]
        if cached is not None and time.monotonic() - cached[0] < STRIP_CACHE_S:
            strip = dict(cached[1])
        else:
            strip = {"lane_min": None, "availability": None}
            reader = self.reader()
            lanes = [d["dev"] for d in devices if d["kind"] == "fire_lane"]
            lifts = [d["dev"] for d in devices if d["kind"] == "elevator"]
            if reader is not None:
                since = now - 24 * HOUR_MS
                try:
                    if lanes:
                        occ = await fire_lane_occupancy(
                            reader,
                            community,
                            lanes,
                            since=since,
                            until=now,
                            tz=self.tz,
                            lookback_ms=24 * HOUR_MS,
                        )
                        strip["lane_min"] = round(
                            sum(v.get("occupied_min", 0) for v in occ.values())
                        )
                    if lifts:
                        av = await elevator_availability(
                            reader,
                            community,
                            lifts,
                            since=since,
                            until=now,
                            tz=self.tz,
                            lookback_ms=24 * HOUR_MS,
                        )
                        ratios = [v["ratio"] for v in av.values() if v.get("ratio") is not None]
                        strip["availability"] = (
                            round(sum(ratios) / len(ratios), 4) if ratios else None
                        )
                except (OSError, RuntimeError) as exc:
                    log.warning("screens: telemetry for %s not read: %s", community, exc)
            self._strips[community] = (time.monotonic(), dict(strip))
        strip["alerts_per_hour"] = hourly or [0] * 24
        return strip


def public_gateway(entry: dict[str, Any]) -> dict[str, Any]:
    """A gateway as a screen shows it: online or not, and whether its devices all answer."""
    health = entry.get("health") or {}
    devices, ok = health.get("devices"), health.get("devices_ok")
    return {
        "type": "gateway",
        "community": entry.get("community"),
        "gateway": entry.get("gateway"),
        "status": entry.get("status"),
        "t": entry.get("t") or entry.get("health_t"),
        "devices": devices,
        "devices_ok": ok,
    }
