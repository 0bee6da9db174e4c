"""``linli influx setup``: the database or bucket, retention and hourly roll-ups.

InfluxDB 1.x (done here, idempotent; run it again after changing a setting):

* database ``influx_database``;
* retention policy ``raw`` (``influx_raw_days``, default 90) as the DEFAULT, where the
  writer's points land;
* retention policy ``rollup`` (``influx_rollup_days``, default 1095 = 3 years);
* one continuous query per measurement writing hourly roll-ups into ``rollup``:
  ``<kind>_1h`` with each field's last value, and for numeric fields ``<f>_min``,
  ``<f>_max`` and ``<f>_mean``; ``events_1h`` with the number of events per device, event
  and state (``n``). The CQs resample the last :data:`RESAMPLE_FOR` every hour, so a
  gateway's backlog that arrives within that window still counts; ``--backfill-days N``
  recomputes the roll-ups of the last N days by hand (after a longer outage, or when
  roll-ups are set up on a database that already holds data).

InfluxDB 2.x: the buckets ``<bucket>`` (raw, ``influx_raw_days``) and ``<bucket>_rollup``
(``influx_rollup_days``) and the DBRP mappings that let InfluxQL reach them as
``<database>.raw`` (default) and ``<database>.rollup``. 2.x has no continuous queries: the
equivalent Flux tasks are printed (:func:`flux_tasks`) and documented in
docs/telemetry.md; create them with ``influx task create`` or the UI. InfluxDB 3.x creates
a database on first write and has neither CQs nor tasks; see docs/telemetry.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from collectors.points import field_type
from collectors.wire import FIELDS_BY_KIND
from server.telemetry.influx import InfluxTarget
from server.telemetry.influxql import ident
from server.telemetry.lineproto import EVENTS_MEASUREMENT

__all__ = ["SetupError", "backfill_statements", "continuous_queries", "flux_tasks", "setup"]

RAW_RP: Final = "raw"
ROLLUP_RP: Final = "rollup"
RESAMPLE_FOR: Final = "6h"
TIMEOUT: Final = aiohttp.ClientTimeout(total=120)


class SetupError(Exception):
    """Setup could not finish; the message names the step and InfluxDB's answer."""


def _why(exc: BaseException) -> str:
    """An exception as a technician reads it (a timeout has no message of its own)."""
    return str(exc) or type(exc).__name__


def _rollup_select(kind: str) -> str:
    parts = []
    for name in FIELDS_BY_KIND[kind].__struct_fields__:
        ft = field_type(kind, name)
        assert ft is not None
        parts.append(f"last({ident(name)}) AS {ident(name)}")
        if ft[0] in ("int", "float"):
            parts.extend(
                f"{fn}({ident(name)}) AS {ident(f'{name}_{fn}')}" for fn in ("min", "max", "mean")
            )
    return ", ".join(parts)


def _rollups(db: str) -> Iterator[tuple[str, str, str]]:
    """(CQ name, SELECT … INTO … FROM … part, GROUP BY part) per measurement."""
    for kind in FIELDS_BY_KIND:
        yield (
            f"linli_{kind}_1h",
            f"SELECT {_rollup_select(kind)}"
            f" INTO {ident(db)}.{ident(ROLLUP_RP)}.{ident(kind + '_1h')}"
            f" FROM {ident(db)}.{ident(RAW_RP)}.{ident(kind)}",
            "GROUP BY time(1h), *",
        )
    yield (
        f"linli_{EVENTS_MEASUREMENT}_1h",
        f'SELECT count("data") AS "n" INTO {ident(db)}.{ident(ROLLUP_RP)}.'
        f"{ident(EVENTS_MEASUREMENT + '_1h')} FROM {ident(db)}.{ident(RAW_RP)}."
        f"{ident(EVENTS_MEASUREMENT)}",
        "GROUP BY time(1h), *",
    )


def continuous_queries(db: str) -> dict[str, str]:
    """The CREATE CONTINUOUS QUERY statements, by CQ name."""
    return {
        name: (
            f"CREATE CONTINUOUS QUERY {ident(name)} ON {ident(db)}"
            f" RESAMPLE EVERY 1h FOR {RESAMPLE_FOR} BEGIN {select} {group} END"
        )
        for name, select, group in _rollups(db)
    }


def backfill_statements(db: str, since_ms: int, until_ms: int) -> list[str]:
    """The roll-up queries over ``[since, until)`` (hour-aligned by the caller)."""
    where = f"WHERE time >= {since_ms}ms AND time < {until_ms}ms"
    return [f"{select} {where} {group}" for _, select, group in _rollups(db)]


def flux_tasks(bucket: str, org: str) -> str:
    """The 2.x equivalent of the CQs: one Flux task per measurement (printed, documented)."""
    out = [
        (
            f'option task = {{name: "linli_{kind}_1h", every: 1h, offset: 5m}}\n'
            f'from(bucket: "{bucket}")\n'
            f"  |> range(start: -{RESAMPLE_FOR})\n"
            f'  |> filter(fn: (r) => r._measurement == "{kind}")\n'
            "  |> aggregateWindow(every: 1h, fn: last, createEmpty: false)\n"
            f'  |> set(key: "_measurement", value: "{kind}_1h")\n'
            f'  |> to(bucket: "{bucket}_rollup", org: "{org}")\n'
        )
        for kind in FIELDS_BY_KIND
    ]
    out.append(
        f'option task = {{name: "linli_events_1h", every: 1h, offset: 5m}}\n'
        f'from(bucket: "{bucket}")\n'
        f"  |> range(start: -{RESAMPLE_FOR})\n"
        f'  |> filter(fn: (r) => r._measurement == "events")\n'
        "  |> aggregateWindow(every: 1h, fn: count, createEmpty: false)\n"
        '  |> set(key: "_measurement", value: "events_1h")\n'
        f'  |> to(bucket: "{bucket}_rollup", org: "{org}")\n'
    )
    return "\n".join(out)


@dataclass
class _Client:
    target: InfluxTarget
    http: aiohttp.ClientSession
    log: list[str]

    async def influxql(self, statement: str) -> list[dict[str, Any]]:
        t = self.target
        params = {"q": statement}
        if t.username:
            params.update(u=t.username, p=t.password or "")
        async with self.http.post(f"{t.url}/query", data=params, timeout=TIMEOUT) as resp:
            text = await resp.text()
            status = resp.status
        body: dict[str, Any] = json.loads(text) if text.startswith("{") else {"error": text[:300]}
        error = body.get("error") or next(
            (r["error"] for r in body.get("results", []) if "error" in r), None
        )
        if status >= 300 or error:
            raise SetupError(f"{statement.split(' BEGIN ', maxsplit=1)[0]}: {error or text[:300]}")
        series: list[dict[str, Any]] = body.get("results", [{}])[0].get("series", [])
        return series

    async def api(self, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Token {self.target.token or ''}"}
        async with self.http.request(
            method, f"{self.target.url}{path}", headers=headers, timeout=TIMEOUT, **kw
        ) as resp:
            text = await resp.text()
            if resp.status >= 300:
                try:
                    message = json.loads(text).get("message", text)
                except ValueError:
                    message = text
                raise SetupError(f"{method} {path}: HTTP {resp.status}: {message[:300]}")
            return json.loads(text) if text else None


async def _detect(client: _Client) -> str:
    if client.target.version != "auto":
        return client.target.version
    async with client.http.get(f"{client.target.url}/ping", timeout=TIMEOUT) as resp:
        header = resp.headers.get("X-Influxdb-Version", "")
    major = header.lstrip("v").split(".", 1)[0]
    if major not in ("1", "2", "3"):
        raise SetupError(f"{client.target.url}/ping gave no InfluxDB version ({header!r})")
    return major


async def _setup_v1(
    c: _Client, raw_days: int, rollup_days: int, backfill: tuple[int, int] | None
) -> None:
    db = c.target.database
    await c.influxql(f"CREATE DATABASE {ident(db)}")
    c.log.append(f"database {db}: ready")
    existing = {
        row[0]: row
        for s in await c.influxql(f"SHOW RETENTION POLICIES ON {ident(db)}")
        for row in s.get("values", [])
    }
    for rp, days, default in ((RAW_RP, raw_days, True), (ROLLUP_RP, rollup_days, False)):
        verb = "ALTER" if rp in existing else "CREATE"
        await c.influxql(
            f"{verb} RETENTION POLICY {ident(rp)} ON {ident(db)} DURATION {days}d"
            f" REPLICATION 1{' DEFAULT' if default else ''}"
        )
        c.log.append(
            f"retention policy {rp}: {days} days{' (default)' if default else ''}"
            f" ({'updated' if verb == 'ALTER' else 'created'})"
        )
    have = {
        row[0]: row[1]
        for s in await c.influxql("SHOW CONTINUOUS QUERIES")
        if s.get("name") == db
        for row in s.get("values", [])
    }
    for name, statement in continuous_queries(db).items():
        if name in have and _same_cq(have[name], statement):
            c.log.append(f"continuous query {name}: unchanged")
            continue
        if name in have:
            await c.influxql(f"DROP CONTINUOUS QUERY {ident(name)} ON {ident(db)}")
        await c.influxql(statement)
        c.log.append(f"continuous query {name}: {'replaced' if name in have else 'created'}")
    if backfill is not None:
        for statement in backfill_statements(db, *backfill):
            series = await c.influxql(statement)
            written = sum(v[1] for s in series for v in s.get("values", []))
            c.log.append(f"backfill {statement.split(' INTO ')[1].split(' ')[0]}: {written} points")


def _same_cq(shown: str, wanted: str) -> bool:
    # InfluxDB echoes the statement with its own spacing and quoting.
    def norm(s: str) -> str:
        return "".join(s.replace('"', "").split()).lower()

    return norm(shown) == norm(wanted)


async def _setup_v2(c: _Client, raw_days: int, rollup_days: int) -> None:
    t = c.target
    if not (t.token and t.org):
        raise SetupError("InfluxDB 2.x needs influx_token and influx_org")
    bucket = t.bucket or t.database
    orgs = (await c.api("GET", "/api/v2/orgs", params={"org": t.org}))["orgs"]
    if not orgs:
        raise SetupError(f"no organisation {t.org!r} in InfluxDB")
    org_id = orgs[0]["id"]
    ids = {}
    for name, days, rp in (
        (bucket, raw_days, RAW_RP),
        (f"{bucket}_rollup", rollup_days, ROLLUP_RP),
    ):
        found = (await c.api("GET", "/api/v2/buckets", params={"orgID": org_id, "name": name}))[
            "buckets"
        ]
        rules = [{"type": "expire", "everySeconds": days * 86400}]
        if found:
            ids[rp] = found[0]["id"]
            await c.api("PATCH", f"/api/v2/buckets/{ids[rp]}", json={"retentionRules": rules})
            c.log.append(f"bucket {name}: {days} days (updated)")
        else:
            made = await c.api(
                "POST",
                "/api/v2/buckets",
                json={"orgID": org_id, "name": name, "retentionRules": rules},
            )
            ids[rp] = made["id"]
            c.log.append(f"bucket {name}: {days} days (created)")
    mappings = (
        await c.api("GET", "/api/v2/dbrps", params={"orgID": org_id, "db": t.database})
    ).get("content", [])
    for rp, bucket_id in ids.items():
        if any(m.get("retention_policy") == rp for m in mappings):
            c.log.append(f"DBRP {t.database}/{rp}: present")
            continue
        await c.api(
            "POST",
            "/api/v2/dbrps",
            json={
                "orgID": org_id,
                "bucketID": bucket_id,
                "database": t.database,
                "retention_policy": rp,
                "default": rp == RAW_RP,
            },
        )
        c.log.append(f"DBRP {t.database}/{rp} -> bucket {bucket_id}: created")
    c.log.append(
        "roll-ups: 2.x has no continuous queries; create these Flux tasks"
        " (also in docs/telemetry.md):\n" + flux_tasks(bucket, t.org)
    )


async def setup(
    target: InfluxTarget,
    *,
    raw_days: int,
    rollup_days: int,
    backfill: tuple[int, int] | None = None,
) -> list[str]:
    """Create or update everything; return one line per step (what was done)."""
    async with aiohttp.ClientSession() as http:
        client = _Client(target, http, [])
        try:
            version = await _detect(client)
            client.log.append(f"InfluxDB {version}.x at {target.url}")
            if version == "1":
                await _setup_v1(client, raw_days, rollup_days, backfill)
            elif version == "2":
                await _setup_v2(client, raw_days, rollup_days)
            else:
                client.log.append(
                    "3.x: the database is created on first write; retention and roll-ups are"
                    " set with the 3.x tools (docs/telemetry.md); nothing to do here"
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SetupError(f"InfluxDB at {target.url} did not answer: {_why(exc)}") from exc
    return client.log
