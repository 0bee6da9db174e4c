"""Reading telemetry back from InfluxDB with InfluxQL over ``/query``: one path for 1.x,
2.x (through its DBRP mapping, which ``linli influx setup`` creates) and 3.x.

Each method of :class:`~server.telemetry.queries.TelemetryReader` is one InfluxQL
statement; identifiers are double-quoted and string literals escaped, and every value that
reaches a statement is a registry id or a name from the wire schema. Times go in as epoch
ms (``1795300000000ms``) and come back as epoch ms (``epoch=ms``).

Auth: 1.x with ``u``/``p`` when a username is set; 2.x/3.x with ``Authorization: Token``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterator
from typing import Any, Final

import aiohttp

from collectors.points import field_type
from collectors.wire import FIELDS_BY_KIND
from server.telemetry.base import TelemetryWriteError
from server.telemetry.influx import InfluxWriter
from server.telemetry.lineproto import EVENTS_MEASUREMENT
from server.telemetry.queries import EventRow, TelemetryQueryError, numeric_fields

__all__ = ["InfluxQLReader", "ident", "literal"]

log = logging.getLogger(__name__)

QUERY_TIMEOUT_S: Final = 60.0


def _why(exc: BaseException) -> str:
    """An exception as a technician reads it (a timeout has no message of its own)."""
    return str(exc) or type(exc).__name__


def ident(name: str) -> str:
    """A double-quoted InfluxQL identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def literal(value: str) -> str:
    """A single-quoted InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _names_match(names: Collection[str]) -> str:
    return " OR ".join(f'"event" = {literal(n)}' for n in sorted(names))


class InfluxQLReader:
    """A :class:`~server.telemetry.queries.TelemetryReader` over InfluxDB's ``/query``."""

    def __init__(self, writer: InfluxWriter) -> None:
        self.target = writer.target
        self._writer = writer
        self.queries = 0

    # --- plumbing -----------------------------------------------------------------------

    async def query(self, statement: str) -> list[dict[str, Any]]:
        """Run one statement; return its series (``name``, ``tags``, ``columns``,
        ``values``). InfluxDB's own message becomes a :class:`TelemetryQueryError`."""
        t = self.target
        try:
            version = await self._writer.detect_version()
        except (aiohttp.ClientError, TimeoutError, TelemetryWriteError) as exc:
            raise TelemetryQueryError(f"InfluxDB at {t.url} did not answer: {_why(exc)}") from exc
        params = {"db": t.database, "q": statement, "epoch": "ms"}
        headers = {}
        if version in ("2", "3"):
            headers["Authorization"] = f"Token {t.token or ''}"
        elif t.username:
            params.update(u=t.username, p=t.password or "")
        self.queries += 1
        timeout = aiohttp.ClientTimeout(total=QUERY_TIMEOUT_S)
        try:
            async with self._writer.http.post(
                f"{t.url}/query", data=params, headers=headers, timeout=timeout
            ) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TelemetryQueryError(f"InfluxDB at {t.url} did not answer: {_why(exc)}") from exc
        try:
            body = json.loads(text)
        except ValueError:
            body = {"error": text[:300]}
        if status >= 300 or "error" in body:
            raise TelemetryQueryError(
                f"InfluxDB refused a query (HTTP {status}): {body.get('error', text[:300])}"
            )
        results = body.get("results") or [{}]
        if "error" in results[0]:
            raise TelemetryQueryError(f"InfluxDB query failed: {results[0]['error']}")
        series: list[dict[str, Any]] = results[0].get("series", [])
        return series

    @staticmethod
    def _rows(series: list[dict[str, Any]]) -> Iterator[tuple[dict[str, str], dict[str, Any]]]:
        for s in series:
            tags = s.get("tags") or {}
            columns = s["columns"]
            for values in s.get("values", []):
                yield tags, dict(zip(columns, values, strict=True))

    @staticmethod
    def _where(community: str, since: int, until: int) -> str:
        return f'"community" = {literal(community)} AND time >= {since}ms AND time < {until}ms'

    # --- the reader interface -----------------------------------------------------------

    async def items(
        self, community: str, dev: str, kind: str, *, since: int, until: int, limit: int
    ) -> list[dict[str, Any]]:
        """A device's raw readings and events, oldest first, at most ``limit``."""
        fields = FIELDS_BY_KIND[kind].__struct_fields__
        where = f'{self._where(community, since, until)} AND "device" = {literal(dev)}'
        readings = await self.query(
            f"SELECT {', '.join(ident(f) for f in fields)} FROM {ident(kind)}"
            f" WHERE {where} ORDER BY time LIMIT {limit}"
        )
        events = await self.query(
            f'SELECT "data", "event", "state" FROM {ident(EVENTS_MEASUREMENT)}'
            f" WHERE {where} ORDER BY time LIMIT {limit}"
        )
        rows: list[dict[str, Any]] = [
            {"t": r["time"], "fields": {f: r[f] for f in fields if r.get(f) is not None}}
            for _, r in self._rows(readings)
        ]
        rows += [
            {
                "t": r["time"],
                "event": r["event"],
                "state": r["state"],
                "data": json.loads(r["data"]),
            }
            for _, r in self._rows(events)
        ]
        rows.sort(key=lambda r: r["t"])
        return rows[:limit]

    async def series(
        self, community: str, dev: str, kind: str, *, since: int, until: int, interval: int
    ) -> list[dict[str, Any]]:
        """Buckets of ``interval`` ms aligned to ``since``: last value, min and max."""
        numeric = numeric_fields(kind)
        selects = [
            f"last({ident(f)}) AS {ident(f)}" for f in FIELDS_BY_KIND[kind].__struct_fields__
        ]
        for f in numeric:
            selects += [f"min({ident(f)}) AS {ident(f + ':min')}"]
            selects += [f"max({ident(f)}) AS {ident(f + ':max')}"]
        series = await self.query(
            f"SELECT {', '.join(selects)} FROM {ident(kind)}"
            f' WHERE {self._where(community, since, until)} AND "device" = {literal(dev)}'
            f" GROUP BY time({interval}ms, {since % interval}ms) fill(none)"
        )
        out = []
        for _, r in self._rows(series):
            t = r.pop("time")
            point: dict[str, Any] = {"t": t, "fields": {}, "min": {}, "max": {}}
            for key, value in r.items():
                if value is None:
                    continue
                name, _, which = key.partition(":")
                point[which or "fields"][name] = value
            out.append(point)
        return out

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
        only = f' AND "device" = {literal(dev)}' if dev is not None else ""
        series = await self.query(
            f'SELECT "data", "device", "event", "state" FROM {ident(EVENTS_MEASUREMENT)}'
            f' WHERE {self._where(community, since, until)} AND "kind" = {literal(kind)}'
            f" AND ({_names_match(names)}){only}"
        )
        rows = [
            EventRow(r["time"], r["device"], r["event"], r["state"], json.loads(r["data"]))
            for _, r in self._rows(series)
        ]
        rows.sort(key=lambda r: r.t)
        return rows

    async def last_events(
        self, community: str, kind: str, names: Collection[str], *, after: int, before: int
    ) -> list[EventRow]:
        """The latest event per (device, name, state) in ``[after, before)``."""
        series = await self.query(
            f'SELECT last("data") AS "data" FROM {ident(EVENTS_MEASUREMENT)}'
            f' WHERE {self._where(community, after, before)} AND "kind" = {literal(kind)}'
            f' AND ({_names_match(names)}) GROUP BY "device", "event", "state"'
        )
        return [
            EventRow(r["time"], tags["device"], tags["event"], tags["state"], json.loads(r["data"]))
            for tags, r in self._rows(series)
        ]

    async def field_points(
        self, community: str, kind: str, field: str, *, since: int, until: int
    ) -> list[tuple[int, str, Any]]:
        """Every stored value of one field, oldest first."""
        _check_field(kind, field)
        series = await self.query(
            f'SELECT {ident(field)}, "device" FROM {ident(kind)}'
            f" WHERE {self._where(community, since, until)}"
        )
        rows = [
            (r["time"], r["device"], r[field])
            for _, r in self._rows(series)
            if r[field] is not None
        ]
        rows.sort(key=lambda r: r[0])
        return rows

    async def last_field(
        self, community: str, kind: str, field: str, *, after: int, before: int
    ) -> dict[str, tuple[int, Any]]:
        """Per device, the latest value of one field in ``[after, before)``."""
        return await self._selector("last", community, kind, field, (after, before))

    async def first_field(
        self, community: str, kind: str, field: str, *, since: int, until: int
    ) -> dict[str, tuple[int, Any]]:
        """Per device, the earliest value of one field in ``[since, until)``."""
        return await self._selector("first", community, kind, field, (since, until))

    async def _selector(
        self, fn: str, community: str, kind: str, field: str, span: tuple[int, int]
    ) -> dict[str, tuple[int, Any]]:
        _check_field(kind, field)
        series = await self.query(
            f"SELECT {fn}({ident(field)}) AS v FROM {ident(kind)}"
            f' WHERE {self._where(community, *span)} GROUP BY "device"'
        )
        return {tags["device"]: (r["time"], r["v"]) for tags, r in self._rows(series)}

    async def daily_range(
        self, community: str, kind: str, field: str, *, since: int, until: int, offset_ms: int
    ) -> dict[tuple[str, int], tuple[float, float]]:
        """Per (device, local day start), the field's minimum and maximum."""
        _check_field(kind, field)
        day = 86_400_000
        series = await self.query(
            f"SELECT min({ident(field)}) AS lo, max({ident(field)}) AS hi FROM {ident(kind)}"
            f" WHERE {self._where(community, since, until)}"
            f' GROUP BY time(1d, {(-offset_ms) % day}ms), "device" fill(none)'
        )
        return {(tags["device"], r["time"]): (r["lo"], r["hi"]) for tags, r in self._rows(series)}


def _check_field(kind: str, field: str) -> None:
    if field_type(kind, field) is None:
        raise ValueError(f"{kind} has no field {field!r}")
