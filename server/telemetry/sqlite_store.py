"""The embedded telemetry store: one SQLite file, for the demo and single small sites.

Writes are buffered in memory and stored by :meth:`SqliteTelemetryStore.commit`, in one
transaction with the marks ingest gives it (each gateway's sequence window), so that after a
crash the store holds exactly the messages whose marks it holds: what ingest acknowledged.
Rows nobody committed are dropped at close (their messages were not acknowledged, and the
broker delivers them again). Readings keep their fields as JSON, events their data; times
are device times in epoch ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec

from collectors.points import field_type
from collectors.wire import Item, Reading
from server.telemetry.queries import GATEWAY_KIND, GATEWAY_OFFLINE, EventRow, bucket_rows

__all__ = ["SqliteTelemetryStore", "open_sqlite_store"]

log = logging.getLogger(__name__)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    t INTEGER NOT NULL, community TEXT NOT NULL, gateway TEXT NOT NULL,
    dev TEXT NOT NULL, kind TEXT NOT NULL, fields TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS readings_dev_t ON readings (community, dev, t);
CREATE TABLE IF NOT EXISTS events (
    t INTEGER NOT NULL, community TEXT NOT NULL, gateway TEXT NOT NULL,
    dev TEXT NOT NULL, kind TEXT NOT NULL, event TEXT NOT NULL, state TEXT NOT NULL,
    data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_dev_t ON events (community, dev, t);
CREATE INDEX IF NOT EXISTS events_kind_t ON events (community, kind, event, t);
CREATE INDEX IF NOT EXISTS readings_kind_t ON readings (community, kind, t);
CREATE TABLE IF NOT EXISTS marks (
    community TEXT NOT NULL, gateway TEXT NOT NULL, mark BLOB NOT NULL,
    PRIMARY KEY (community, gateway));
"""

_encode = msgspec.json.Encoder().encode


class SqliteTelemetryStore:
    """Buffered writer and simple queries over the embedded store."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._readings: list[tuple[Any, ...]] = []
        self._events: list[tuple[Any, ...]] = []
        self._lock = asyncio.Lock()

    @property
    def buffered(self) -> int:
        """Rows waiting for the next commit."""
        return len(self._readings) + len(self._events)

    async def write(self, community: str, gateway: str, items: Sequence[Item]) -> None:
        """Queue the items of one envelope until the next :meth:`commit`."""
        for item in items:
            if isinstance(item, Reading):
                self._readings.append(
                    (item.t, community, gateway, item.dev, item.kind, _encode(item.fields))
                )
            else:
                self._events.append(
                    (
                        item.t,
                        community,
                        gateway,
                        item.dev,
                        item.kind,
                        item.event,
                        item.state,
                        _encode(item.data),
                    )
                )

    async def write_status(self, community: str, gateway: str, status: str, t: int) -> None:
        """Record a gateway's status change as its ``gateway_offline`` start or end."""
        state = "start" if status == "offline" else "end"
        self._events.append(
            (t, community, gateway, gateway, GATEWAY_KIND, GATEWAY_OFFLINE, state, "{}")
        )

    def seal(self, marks: Mapping[tuple[str, str], bytes]) -> Callable[[], Awaitable[None]]:
        """Take the rows queued so far and ``marks``; the returned function stores them in
        one transaction (again after a failure: a failed one is rolled back whole)."""
        readings, self._readings = self._readings, []
        events, self._events = self._events, []
        rows = [(c, g, mark) for (c, g), mark in marks.items()]

        async def write() -> None:
            if not (readings or events or rows):
                return
            async with self._lock:
                try:
                    await self._db.executemany(
                        "INSERT INTO readings VALUES (?,?,?,?,?,?)", readings
                    )
                    await self._db.executemany(
                        "INSERT INTO events VALUES (?,?,?,?,?,?,?,?)", events
                    )
                    await self._db.executemany("INSERT OR REPLACE INTO marks VALUES (?,?,?)", rows)
                    await self._db.commit()
                except BaseException:
                    await asyncio.shield(self._db.rollback())
                    raise

        return write

    async def commit(self, marks: Mapping[tuple[str, str], bytes]) -> None:
        """Store every row queued so far and ``marks`` in one transaction."""
        await self.seal(marks)()

    async def flush(self) -> None:
        """Store everything queued so far (no marks)."""
        await self.commit({})

    async def load_marks(self) -> dict[tuple[str, str], bytes]:
        """The marks of the last commit, per gateway."""
        async with self._db.execute("SELECT community, gateway, mark FROM marks") as cur:
            return {(c, g): bytes(mark) async for c, g, mark in cur}

    async def counts(self, community: str | None = None) -> dict[str, dict[str, int]]:
        """Stored readings and events per device (``community/dev``), for checks and the API."""
        out: dict[str, dict[str, int]] = {}
        for table in ("readings", "events"):
            sql = f"SELECT community, dev, count(*) FROM {table}"  # noqa: S608 (fixed names)
            args: tuple[str, ...] = ()
            if community is not None:
                sql += " WHERE community = ?"
                args = (community,)
            async with self._db.execute(sql + " GROUP BY community, dev", args) as cur:
                async for com, dev, n in cur:
                    out.setdefault(f"{com}/{dev}", {"readings": 0, "events": 0})[table] = n
        return out

    async def series(
        self, community: str, dev: str, kind: str, *, since: int, until: int, interval: int
    ) -> list[dict[str, Any]]:
        """Readings downsampled in Python (:func:`~server.telemetry.queries.bucket_rows`)."""
        async with self._db.execute(
            "SELECT t, fields FROM readings WHERE community=? AND dev=? AND t>=? AND t<?"
            " ORDER BY t",
            (community, dev, since, until),
        ) as cur:
            rows = [(t, msgspec.json.decode(f)) async for t, f in cur]
        return bucket_rows(rows, since=since, interval=interval, kind=kind)

    async def events(
        self,
        community: str,
        kind: str,
        names: Collection[str],
        *,
        since: int,
        until: int,
        dev: str | None = None,
    ) -> list[EventRow]:
        """Events of these names on devices of ``kind`` (or on ``dev`` only), oldest first."""
        marks = ",".join("?" * len(names))
        sql = (  # only '?' marks are formatted in
            "SELECT t, dev, event, state, data FROM events WHERE community=? AND kind=?"  # noqa: S608
            f" AND event IN ({marks}) AND t>=? AND t<? AND (? IS NULL OR dev = ?) ORDER BY t"
        )
        args = (community, kind, *names, since, until, dev, dev)
        async with self._db.execute(sql, args) as cur:
            return [
                EventRow(t, d, e, st, msgspec.json.decode(data)) async for t, d, e, st, data in cur
            ]

    async def last_events(
        self, community: str, kind: str, names: Collection[str], *, after: int, before: int
    ) -> list[EventRow]:
        """The latest event per (device, name, state) in [after, before)."""
        marks = ",".join("?" * len(names))
        # SQLite fills the bare columns from the row that holds max(t).
        sql = (  # only '?' marks are formatted in
            "SELECT max(t), dev, event, state, data FROM events WHERE community=? AND kind=?"  # noqa: S608
            f" AND event IN ({marks}) AND t>=? AND t<? GROUP BY dev, event, state"
        )
        async with self._db.execute(sql, (community, kind, *names, after, before)) as cur:
            return [
                EventRow(t, d, e, st, msgspec.json.decode(data)) async for t, d, e, st, data in cur
            ]

    async def field_points(
        self, community: str, kind: str, field: str, *, since: int, until: int
    ) -> list[tuple[int, str, Any]]:
        """Every stored value of one field, oldest first."""
        path = _json_path(kind, field)
        async with self._db.execute(
            "SELECT t, dev, json_extract(fields, ?) AS v FROM readings WHERE community=?"
            " AND kind=? AND t>=? AND t<? AND v IS NOT NULL ORDER BY t",
            (path, community, kind, since, until),
        ) as cur:
            return [(t, dev, _typed(kind, field, v)) async for t, dev, v in cur]

    async def last_field(
        self, community: str, kind: str, field: str, *, after: int, before: int
    ) -> dict[str, tuple[int, Any]]:
        """Per device, the latest value of one field in [after, before)."""
        return await self._extreme_field("max", community, kind, field, (after, before))

    async def first_field(
        self, community: str, kind: str, field: str, *, since: int, until: int
    ) -> dict[str, tuple[int, Any]]:
        """Per device, the earliest value of one field in [since, until)."""
        return await self._extreme_field("min", community, kind, field, (since, until))

    async def _extreme_field(
        self, agg: str, community: str, kind: str, field: str, span: tuple[int, int]
    ) -> dict[str, tuple[int, Any]]:
        lo, hi = span
        assert agg in ("min", "max")
        sql = (
            f"SELECT {agg}(t), dev, json_extract(fields, ?) AS v FROM readings"  # noqa: S608
            " WHERE community=? AND kind=? AND t>=? AND t<? AND v IS NOT NULL GROUP BY dev"
        )
        async with self._db.execute(sql, (_json_path(kind, field), community, kind, lo, hi)) as cur:
            return {dev: (t, _typed(kind, field, v)) async for t, dev, v in cur}

    async def daily_range(
        self, community: str, kind: str, field: str, *, since: int, until: int, offset_ms: int
    ) -> dict[tuple[str, int], tuple[float, float]]:
        """Per (device, local day start), the field's minimum and maximum."""
        path = _json_path(kind, field)
        async with self._db.execute(
            "SELECT dev, (t + ?) / 86400000 * 86400000 - ? AS day,"
            " min(json_extract(fields, ?)), max(json_extract(fields, ?)) FROM readings"
            " WHERE community=? AND kind=? AND t>=? AND t<?"
            " AND json_extract(fields, ?) IS NOT NULL GROUP BY dev, day",
            (offset_ms, offset_ms, path, path, community, kind, since, until, path),
        ) as cur:
            return {(dev, day): (lo, hi) async for dev, day, lo, hi in cur}

    async def items(
        self, community: str, dev: str, kind: str, *, since: int, until: int, limit: int
    ) -> list[dict[str, Any]]:
        """A device's readings and events in [since, until), oldest first, at most ``limit``."""
        rows: list[dict[str, Any]] = []
        async with self._db.execute(
            "SELECT t, fields FROM readings WHERE community=? AND dev=? AND t>=? AND t<?"
            " ORDER BY t LIMIT ?",
            (community, dev, since, until, limit),
        ) as cur:
            async for t, fields in cur:
                rows.append({"t": t, "fields": msgspec.json.decode(fields)})
        async with self._db.execute(
            "SELECT t, event, state, data FROM events WHERE community=? AND dev=? AND t>=?"
            " AND t<? ORDER BY t LIMIT ?",
            (community, dev, since, until, limit),
        ) as cur:
            async for t, name, state, data in cur:
                rows.append(
                    {"t": t, "event": name, "state": state, "data": msgspec.json.decode(data)}
                )
        rows.sort(key=lambda r: r["t"])
        return rows[:limit]


def _json_path(kind: str, field: str) -> str:
    if field_type(kind, field) is None:
        raise ValueError(f"{kind} has no field {field!r}")
    return f"$.{field}"


def _typed(kind: str, field: str, value: Any) -> Any:
    """json_extract gives 1/0 for JSON booleans; give them back as bool."""
    ft = field_type(kind, field)
    return bool(value) if ft is not None and ft[0] == "bool" else value


@contextlib.asynccontextmanager
async def open_sqlite_store(path: Path) -> AsyncIterator[SqliteTelemetryStore]:
    """Open the store, run its writer, and on exit store what is buffered and close."""
    path.parent.mkdir(parents=True, exist_ok=True)
    async with aiosqlite.connect(path) as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.executescript(_SCHEMA)
        await db.commit()
        store = SqliteTelemetryStore(db)
        try:
            yield store
        finally:
            if store.buffered:
                log.info("%d telemetry rows not committed: their messages were not "
                         "acknowledged and come again", store.buffered)  # fmt: skip
