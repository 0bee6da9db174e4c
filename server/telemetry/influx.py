"""The InfluxDB writer: line protocol through a disk spool, so an outage never blocks ingest.

Theory of operation. ``write`` encodes an envelope's items as line protocol
(:mod:`server.telemetry.lineproto`) into memory and returns. :meth:`InfluxWriter.commit`
gzips what is in memory into chunks of at most :data:`BATCH_LINES` lines and appends them to
the **spool**, a SQLite file (WAL), in one transaction with the marks ingest gives it (each
gateway's sequence window): after a crash the spool holds exactly the messages whose marks it
holds, which are the messages ingest acknowledged. Lines nobody committed are dropped at
close (their messages were not acknowledged; the broker delivers them again). A sender task
posts the spool's oldest chunks, several together up to :data:`BATCH_LINES` lines (InfluxDB's
guidance is about 5,000 per request; gzip members concatenate), and deletes them only when
InfluxDB answered 2xx, so chunks land in the order they were written, exactly once unless a
crash falls between InfluxDB's answer and the delete (then they are written again: same
points, same timestamps, and InfluxDB keeps one copy, as a point is identified by series and
time).

Errors: a timeout, a connection failure or a 5xx is retried with capped, jittered
exponential backoff; the chunk stays first. A 400 ``partial write`` means InfluxDB stored the
good lines and refused some: the cause is logged and counted, the chunk is done. Any other
4xx (a wrong token, a missing database) is logged with InfluxDB's own message and retried
at the slowest pace only, keeping the data: fixing the setting resumes delivery.

The spool is bounded (``spool_max_bytes``): past it, the oldest chunks are dropped and
counted. Spool size, lines waiting and the last error are in :meth:`InfluxWriter.stats`.

Versions: 1.x gets ``POST /write?db=…&precision=ms``; 2.x and 3.x get their v2 write API
through ``influxdb-client`` (token auth). The version comes from ``/ping``
(``X-Influxdb-Version``) unless it is forced in the settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import aiohttp
import aiosqlite

from collectors.wire import Item
from server.telemetry.base import TelemetryWriteError
from server.telemetry.lineproto import encode_items, encode_status

__all__ = ["InfluxTarget", "InfluxWriter", "open_influx_writer"]

log = logging.getLogger(__name__)

BATCH_LINES: Final = 5_000
#: Chunks read for one request at most (they are merged up to BATCH_LINES lines).
MERGE_CHUNKS: Final = 256
REQUEST_TIMEOUT_S: Final = 30.0
BACKOFF_FIRST_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0
#: The pace for errors that only a change of settings can fix (a wrong token).
CONFIG_ERROR_RETRY_S: Final = 60.0
#: Chunks up to this many bytes are also kept in memory until sent (see _spool_one).
FRESH_MAX_BYTES: Final = 16 * 1024 * 1024

Version = Literal["auto", "1", "2", "3"]


@dataclass(frozen=True)
class InfluxTarget:
    """Where to write: the URL, the version (or auto), and the database or org/bucket."""

    url: str
    version: Version = "auto"
    database: str = "linli"
    token: str | None = None
    org: str | None = None
    bucket: str | None = None
    username: str | None = None
    password: str | None = None
    #: Send gzip (the spool keeps chunks gzipped either way): less traffic for a remote or
    #: metered InfluxDB, more CPU for both sides; off pays on a LAN or the same host.
    gzip: bool = True


class _RejectedError(Exception):
    """InfluxDB answered 4xx: ``partial`` when it stored the rest of the batch."""

    def __init__(self, status: int, message: str, *, partial: bool) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.partial = partial


class InfluxWriter:
    """A :class:`~server.telemetry.base.TelemetryWriter` for InfluxDB (see the module doc)."""

    def __init__(
        self,
        target: InfluxTarget,
        spool: aiosqlite.Connection,
        http: aiohttp.ClientSession,
        *,
        spool_max_bytes: int,
        backoff: bool = True,
    ) -> None:
        self.target = target
        self._spool = spool
        self.http = http
        self._spool_max = spool_max_bytes
        self._backoff = backoff
        self._lines: list[str] = []
        #: Held by every use of the spool connection that spans awaits (see _send_loop).
        self._spool_lock = asyncio.Lock()
        self._chunk_ready = asyncio.Event()
        self._sent = asyncio.Condition()
        self.version: Version = target.version
        self.counts: dict[str, int] = {
            "lines_queued": 0,
            "lines_written": 0,
            "lines_rejected_batches": 0,
            "spool_dropped_lines": 0,
            "requests": 0,
            "retries": 0,
        }
        self.last_error: str | None = None
        self._last_id_spooled = 0
        self._last_id_sent = 0
        self._v2: Any = None
        self._database_checked = False
        #: Bytes in the spool, kept here so the bound costs no query per batch.
        self.spool_bytes = 0
        #: The chunk ids of the request under way (never dropped by the bound).
        self._inflight = (0, -1)
        self._fresh: dict[int, bytes] = {}
        self._fresh_bytes = 0
        #: ``(community, dev) -> building`` for the building tag; set once the registry is.
        self.building_of: Callable[[str, str], str] | None = None

    # --- the TelemetryWriter interface ------------------------------------------------

    async def write(self, community: str, gateway: str, items: Sequence[Item]) -> None:
        """Queue an envelope's items until the next :meth:`commit`."""
        lines = encode_items(community, gateway, items, self.building_of)
        self._lines.extend(lines)
        self.counts["lines_queued"] += len(lines)

    async def write_status(self, community: str, gateway: str, status: str, t: int) -> None:
        """Queue a gateway status change (see :func:`~.lineproto.encode_status`)."""
        self._lines.append(encode_status(community, gateway, status, t))
        self.counts["lines_queued"] += 1

    def seal(self, marks: Mapping[tuple[str, str], bytes]) -> Callable[[], Awaitable[None]]:
        """Take the lines queued so far and ``marks``; the returned function spools them in
        one transaction (InfluxDB gets them later, from the spool), and may be called again
        after a failure: a failed transaction is rolled back whole."""
        lines, self._lines = self._lines, []
        rows = [(c, g, mark) for (c, g), mark in marks.items()]
        bodies: list[tuple[int, bytes]] = []

        async def write() -> None:
            if not (lines or rows):
                return
            if not bodies and lines:
                # gzip off the event loop: ingest handles the next messages meanwhile
                bodies[:] = await asyncio.to_thread(_compress, lines)
            async with self._spool_lock:
                ids: list[int] = []
                try:
                    for count, body in bodies:
                        cur = await self._spool.execute(
                            "INSERT INTO chunks (lines, body) VALUES (?, ?)", (count, body)
                        )
                        assert cur.lastrowid is not None
                        ids.append(cur.lastrowid)
                    await self._spool.executemany(
                        "INSERT OR REPLACE INTO marks VALUES (?, ?, ?)", rows
                    )
                    await self._spool.commit()
                except BaseException:
                    await asyncio.shield(self._spool.rollback())
                    raise
                for chunk_id, (_count, body) in zip(ids, bodies, strict=True):
                    self.spool_bytes += len(body)
                    # The sender takes fresh chunks from memory, sparing a read of what was
                    # just written.
                    if self._fresh_bytes + len(body) <= FRESH_MAX_BYTES:
                        self._fresh[chunk_id] = body
                        self._fresh_bytes += len(body)
                if ids:
                    self._last_id_spooled = ids[-1]
                    await self._enforce_bound()
                    self._chunk_ready.set()

        return write

    async def commit(self, marks: Mapping[tuple[str, str], bytes]) -> None:
        """Spool every line queued so far and ``marks`` in one transaction."""
        await self.seal(marks)()

    async def load_marks(self) -> dict[tuple[str, str], bytes]:
        """The marks of the last commit, per gateway."""
        async with self._spool.execute("SELECT community, gateway, mark FROM marks") as cur:
            return {(c, g): bytes(mark) async for c, g, mark in cur}

    async def flush(self) -> None:
        """Spool what is queued and wait until InfluxDB has it (blocks during an outage)."""
        await self.commit({})
        target = self._last_id_spooled
        async with self._sent:
            await self._sent.wait_for(lambda: self._last_id_sent >= target)

    @property
    def buffered(self) -> int:
        """Lines waiting for the next commit."""
        return len(self._lines)

    # --- stats ------------------------------------------------------------------------

    async def stats(self) -> dict[str, Any]:
        """Health figures: spool size and progress, counters, the last error."""
        async with (
            self._spool_lock,
            self._spool.execute("SELECT count(*), coalesce(sum(lines), 0) FROM chunks") as cur,
        ):
            row = await cur.fetchone()
        assert row is not None
        return {
            "version": self.version,
            "spool_chunks": row[0],
            "spool_lines": row[1],
            "spool_bytes": self.spool_bytes,
            "memory_lines": len(self._lines),
            **self.counts,
            "last_error": self.last_error,
        }

    # --- the spool ---------------------------------------------------------------------

    async def _delete(self, chunk_id: int) -> bool:
        """Remove one chunk; False if it was already gone (dropped by the bound)."""
        fresh = self._fresh.pop(chunk_id, None)
        if fresh is not None:
            self._fresh_bytes -= len(fresh)
            size: int | None = len(fresh)
        else:
            async with self._spool.execute(
                "SELECT length(body) FROM chunks WHERE id = ?", (chunk_id,)
            ) as cur:
                row = await cur.fetchone()
            size = row[0] if row else None
        if size is None:
            return False
        await self._spool.execute("DELETE FROM chunks WHERE id = ?", (chunk_id,))
        await self._spool.commit()
        self.spool_bytes -= size
        return True

    async def _delete_sent(self, first: int, last: int) -> None:
        """Remove the chunks of a request InfluxDB took (some may have gone to the bound)."""
        async with self._spool.execute(
            "SELECT id, length(body) FROM chunks WHERE id BETWEEN ? AND ?", (first, last)
        ) as cur:
            sizes = list(await cur.fetchall())
        await self._spool.execute("DELETE FROM chunks WHERE id BETWEEN ? AND ?", (first, last))
        await self._spool.commit()
        for chunk_id, size in sizes:
            self.spool_bytes -= size
            fresh = self._fresh.pop(chunk_id, None)
            if fresh is not None:
                self._fresh_bytes -= len(fresh)

    async def _enforce_bound(self) -> None:
        """Drop the oldest chunks while the spool is over its budget; never the one being
        sent (it may already be in InfluxDB) nor the one just written."""
        while self.spool_bytes > self._spool_max:
            async with self._spool.execute(
                "SELECT id, lines FROM chunks WHERE id NOT BETWEEN ? AND ? AND id != ? "
                "ORDER BY id LIMIT 1",
                (*self._inflight, self._last_id_spooled),
            ) as cur:
                oldest = await cur.fetchone()
            if oldest is None:
                return
            if await self._delete(oldest[0]):
                self.counts["spool_dropped_lines"] += oldest[1]
                log.error("InfluxDB spool full: dropped %d oldest lines", oldest[1])

    # --- sending ----------------------------------------------------------------------

    async def _next_request(self) -> tuple[int, int, int, bytes] | None:
        """The oldest chunks, merged up to :data:`BATCH_LINES` lines (at least one chunk):
        first id, last id, lines, body; None when the spool is empty."""
        async with self._spool.execute(
            "SELECT id, lines FROM chunks ORDER BY id LIMIT ?", (MERGE_CHUNKS,)
        ) as cur:
            rows = list(await cur.fetchall())
        taken: list[tuple[int, int]] = []
        total = 0
        for chunk_id, lines in rows:
            if taken and total + lines > BATCH_LINES:
                break
            taken.append((chunk_id, lines))
            total += lines
        if not taken:
            return None
        bodies: list[bytes] = []
        for chunk_id, _lines in taken:
            body = self._fresh.get(chunk_id)
            if body is None:  # from an earlier run, or spooled while memory was full
                async with self._spool.execute(
                    "SELECT body FROM chunks WHERE id = ?", (chunk_id,)
                ) as cur:
                    found = await cur.fetchone()
                if found is None:  # dropped by the bound meanwhile: look again
                    return await self._next_request()
                body = found[0]
            bodies.append(body)
        return taken[0][0], taken[-1][0], total, b"".join(bodies)

    async def _send_loop(self) -> None:
        delay = BACKOFF_FIRST_S
        while True:
            # Cleared before looking, so a chunk spooled after the look still wakes us.
            self._chunk_ready.clear()
            # Spool reads and deletes wait for a commit under way: on one connection they
            # would see its rows before it committed, or commit them half done.
            async with self._spool_lock:
                request = await self._next_request()
            if request is None:
                await self._chunk_ready.wait()
                continue
            first, last, lines, body = request
            self._inflight = (first, last)
            try:
                await self._post(body)
            except _RejectedError as exc:
                self.last_error = str(exc)
                if not exc.partial:
                    log.error(  # noqa: TRY400 (InfluxDB's message says it all)
                        "InfluxDB refused a write (%s); retrying in %.0f s",
                        exc,
                        CONFIG_ERROR_RETRY_S,
                    )
                    await asyncio.sleep(CONFIG_ERROR_RETRY_S if self._backoff else 0.2)
                    continue
                log.error("InfluxDB stored a batch of %d lines only in part: %s", lines, exc)  # noqa: TRY400
                self.counts["lines_rejected_batches"] += 1
            except (aiohttp.ClientError, TimeoutError, TelemetryWriteError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.counts["retries"] += 1
                wait = random.uniform(delay / 2, delay) if self._backoff else 0.05  # noqa: S311
                log.warning("InfluxDB write failed (%s); retrying in %.1f s", self.last_error, wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            else:
                self.counts["lines_written"] += lines
                self.last_error = None
            delay = BACKOFF_FIRST_S
            async with self._spool_lock:
                await self._delete_sent(first, last)
            self._inflight = (0, -1)
            async with self._sent:
                self._last_id_sent = last
                self._sent.notify_all()

    async def detect_version(self) -> Version:
        """The InfluxDB major version: forced in the settings, or read from ``/ping`` once
        (1.x: the database is created then, if it is missing)."""
        if self.version != "auto":
            if self.version == "1" and not self._database_checked:
                await self._create_database()
            return self.version
        timeout = aiohttp.ClientTimeout(total=10)
        async with self.http.get(f"{self.target.url}/ping", timeout=timeout) as resp:
            header = resp.headers.get("X-Influxdb-Version", "")
        major = header.lstrip("v").split(".", 1)[0]
        if major not in ("1", "2", "3"):
            raise TelemetryWriteError(
                f"{self.target.url}/ping gave no InfluxDB version ({header!r})"
            )
        if major == "1":
            await self._create_database()
        self.version = major  # type: ignore[assignment]
        log.info("InfluxDB %s at %s", header, self.target.url)
        return self.version

    async def _create_database(self) -> None:
        """1.x: create the database if it is missing (idempotent; as Telegraf does)."""
        t = self.target
        params = {"q": f'CREATE DATABASE "{t.database}"'}
        if t.username:
            params.update(u=t.username, p=t.password or "")
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with self.http.post(f"{t.url}/query", params=params, timeout=timeout) as resp:
            self._database_checked = True
            if resp.status >= 300:
                # Without admin rights this fails; writes then say whether the database exists.
                log.warning(
                    "could not create InfluxDB database %r: HTTP %d %s",
                    t.database,
                    resp.status,
                    (await resp.text())[:200],
                )

    async def _post(self, body: bytes) -> None:
        version = await self.detect_version()
        self.counts["requests"] += 1
        if version == "1":
            await self._post_v1(body)
        else:
            await self._post_v2(body)

    async def _post_v1(self, body: bytes) -> None:
        t = self.target
        params = {"db": t.database, "precision": "ms"}
        if t.username:
            params.update(u=t.username, p=t.password or "")
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if t.gzip:
            headers["Content-Encoding"] = "gzip"
        else:  # the spool keeps chunks gzipped either way
            body = gzip.decompress(body)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with self.http.post(
            f"{t.url}/write", params=params, data=body, headers=headers, timeout=timeout
        ) as resp:
            if resp.status < 300:
                return
            text = (await resp.text())[:500]
            if resp.status >= 500:
                raise TelemetryWriteError(f"HTTP {resp.status}: {text}")
            raise _RejectedError(resp.status, text, partial="partial write" in text)

    async def _post_v2(self, body: bytes) -> None:
        from influxdb_client.client.exceptions import InfluxDBError  # noqa: PLC0415
        from influxdb_client.client.influxdb_client_async import (  # noqa: PLC0415
            InfluxDBClientAsync,
        )
        from influxdb_client.domain.write_precision import WritePrecision  # noqa: PLC0415

        t = self.target
        if self._v2 is None:
            self._v2 = InfluxDBClientAsync(
                url=t.url,
                token=t.token or "",
                org=t.org or "",
                enable_gzip=t.gzip,
                timeout=int(REQUEST_TIMEOUT_S * 1000),
            )
        records = gzip.decompress(body).decode()
        try:
            await self._v2.write_api().write(
                bucket=t.bucket or t.database,
                org=t.org or "",
                record=records,
                write_precision=WritePrecision.MS,
            )
        except InfluxDBError as exc:
            status = exc.response.status if exc.response is not None else 0
            message = exc.message or str(exc)
            if status >= 500 or status == 0:
                raise TelemetryWriteError(f"HTTP {status}: {message}") from exc
            # v2 refuses a batch with a bad line whole (1.x stores the rest): log and move on.
            raise _RejectedError(status, message, partial=status == 400) from exc

    async def aclose(self) -> None:
        """Close the v2 client, if one was opened."""
        if self._v2 is not None:
            await self._v2.close()


@contextlib.asynccontextmanager
async def open_influx_writer(
    target: InfluxTarget, spool_path: Path, *, spool_max_bytes: int, backoff: bool = True
) -> AsyncIterator[InfluxWriter]:
    """Open the spool and the HTTP session, run the batcher and sender, close in reverse.

    On exit what is queued goes to the spool (on disk) and is sent at the next start.
    """
    spool_path.parent.mkdir(parents=True, exist_ok=True)
    async with aiosqlite.connect(spool_path) as spool, aiohttp.ClientSession() as http:
        await spool.execute("PRAGMA journal_mode=WAL")
        await spool.execute("PRAGMA synchronous=NORMAL")
        await spool.execute(
            "CREATE TABLE IF NOT EXISTS chunks "
            "(id INTEGER PRIMARY KEY AUTOINCREMENT, lines INTEGER NOT NULL, body BLOB NOT NULL)"
        )
        await spool.execute(
            "CREATE TABLE IF NOT EXISTS marks (community TEXT NOT NULL, gateway TEXT NOT NULL, "
            "mark BLOB NOT NULL, PRIMARY KEY (community, gateway))"
        )
        await spool.commit()
        writer = InfluxWriter(target, spool, http, spool_max_bytes=spool_max_bytes, backoff=backoff)
        async with spool.execute("SELECT coalesce(sum(length(body)), 0) FROM chunks") as cur:
            row = await cur.fetchone()
        writer.spool_bytes = row[0] if row else 0
        tasks = [asyncio.create_task(writer._send_loop(), name="influx-sender")]
        started = time.monotonic()
        try:
            yield writer
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if writer.buffered:
                log.info("%d lines not committed: their messages were not acknowledged "
                         "and come again", writer.buffered)  # fmt: skip
            await writer.aclose()
            stats = await writer.stats()
            log.info(
                "InfluxDB writer stopped after %.0f s: %d lines written, %d left in the spool",
                time.monotonic() - started,
                stats["lines_written"],
                stats["spool_lines"],
            )


def _compress(lines: list[str]) -> list[tuple[int, bytes]]:
    """Lines as gzip bodies of at most :data:`BATCH_LINES` lines, with their counts."""
    return [
        (len(part), gzip.compress(("\n".join(part) + "\n").encode(), compresslevel=1))
        for part in (lines[i : i + BATCH_LINES] for i in range(0, len(lines), BATCH_LINES))
    ]
