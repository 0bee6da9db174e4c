"""The gateway's store-and-forward queue: SQLite in WAL mode on the gateway's own disk.

Theory of operation
-------------------
Every item a collector produces is **committed here before anything else happens to it**
(:meth:`DiskQueue.put` returns once its transaction is durable). Puts that arrive while a
commit is running wait for the next one, so a burst costs one commit, not one per item
(group commit).

The uplink asks for the next batch with :meth:`DiskQueue.next_batch`. In one transaction the
batch's items move from ``items`` to ``inflight`` as the exact envelope bytes that will be
published, under the next sequence number, and ``meta.next_seq`` is advanced. The batch
leaves the queue only when :meth:`DiskQueue.ack` is called after the broker's PUBACK. After a
crash or a lost connection the same bytes, with the same ``seq``, are published again (see
:meth:`DiskQueue.inflight`), so delivery is at least once and the server drops duplicates by
``seq``; a number is never reused for other items.

Events are *urgent*: a batch takes every pending event first, then fills up with the oldest
readings, so an event never waits behind a backlog of samples.

Disk budget: when the items' bytes exceed ``budget_bytes``, the oldest routine readings are
thinned (every second one of the oldest fifth, repeated until the queue is back under 95 % of
the budget). Events are never thinned, nor are batches already in flight. Every thinned
reading is counted in ``meta.thinned`` (it survives restarts and goes out in the health item).

Durability: ``synchronous`` is ``full`` by default, so a commit survives a power cut; ``normal``
survives a crash of the process (kill -9) but may lose the last commits on power loss.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, TypeVar

import msgspec

from collectors.wire import PROTOCOL_VERSION, Event, Item

__all__ = ["Batch", "DiskQueue", "QueueError", "QueueStats"]

T = TypeVar("T")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    t INTEGER NOT NULL,
    urgent INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS items_urgent ON items (urgent, id);
CREATE TABLE IF NOT EXISTS inflight (
    seq INTEGER PRIMARY KEY,
    payload BLOB NOT NULL,
    items INTEGER NOT NULL,
    urgent INTEGER NOT NULL,
    oldest_t INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

#: Bytes of envelope around the items (keys, ids, numbers), reserved when cutting a batch.
_ENVELOPE_OVERHEAD: Final = 200
#: Thinning target, as a share of the budget (hysteresis: a full queue is not thinned on
#: every single put).
_THIN_TARGET: Final = 0.95
#: Acknowledged batches are deleted with the next cut, or after this delay if none comes.
_ACK_DELAY_S: Final = 0.05
_encode = msgspec.json.Encoder().encode
#: The oldest pending item's time, read off the first row of each class (items are committed
#: in arrival order, so this is exact up to a device's clock) instead of scanning the table.
_OLDEST_PENDING: Final = (
    "SELECT min(t) FROM (SELECT t FROM (SELECT t FROM items WHERE urgent = 0 ORDER BY id LIMIT 1)"
    " UNION ALL SELECT t FROM (SELECT t FROM items WHERE urgent = 1 ORDER BY id LIMIT 1))"
)


class QueueError(Exception):
    """The queue file cannot be opened or written; names the file and why."""


@dataclass(frozen=True, slots=True)
class Batch:
    """One envelope as it will be published: its number, bytes and what it carries."""

    seq: int
    payload: bytes
    items: int
    urgent: int


@dataclass(frozen=True, slots=True)
class QueueStats:
    """What the health item reports about the queue."""

    depth: int  # items not yet acknowledged (pending + in flight)
    oldest_t: int | None  # device time of the oldest unacknowledged item
    disk_bytes: int  # the database file and its WAL
    thinned: int  # routine readings dropped under the disk budget, ever


class DiskQueue:
    """The queue of one gateway (see the module docstring).

    All SQLite work runs on one dedicated thread, a whole transaction per hop, so the event
    loop never waits on the disk and the connection is only ever used from that thread.
    """

    def __init__(
        self,
        path: Path,
        *,
        gateway: str,
        community: str,
        budget_bytes: int = 256 * 1024 * 1024,
        synchronous: Literal["full", "normal"] = "full",
        legacy_seq_file: Path | None = None,
    ) -> None:
        self.path = path
        self.budget_bytes = budget_bytes
        self._head = b'{"v":%d,"gw":%s,"community":%s,"seq":' % (
            PROTOCOL_VERSION,
            _encode(gateway),
            _encode(community),
        )
        self._synchronous = synchronous
        self._legacy_seq_file = legacy_seq_file
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gw-queue")
        self._db: sqlite3.Connection | None = None
        self._buffer: list[tuple[int, int, bytes]] = []
        self._group: asyncio.Future[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self.pending = 0
        self.pending_urgent = 0
        self.pending_bytes = 0
        self.inflight_bytes = 0
        self.oldest_pending_t: int | None = None
        self.next_seq = 0
        self.thinned = 0
        self._freed_by_thinning = 0
        self._acked: list[int] = []  # appended on the loop, swapped out on the queue's thread
        self._ack_flush: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()  # set whenever items were committed

    # --- thread side ---------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _conn(self) -> sqlite3.Connection:
        assert self._db is not None, "the queue is not open"
        return self._db

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
            db.executescript(_SCHEMA)
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if "next_seq" not in meta:
                meta["next_seq"] = self._legacy_seq()
                db.execute("INSERT INTO meta VALUES ('next_seq', ?)", (meta["next_seq"],))
            counts = db.execute(
                "SELECT count(*), coalesce(sum(urgent), 0), coalesce(sum(length(body)), 0)"
                " FROM items"
            ).fetchone()
            oldest = db.execute(_OLDEST_PENDING).fetchone()[0]
            inflight = db.execute("SELECT coalesce(sum(length(payload)), 0) FROM inflight")
            self.inflight_bytes = inflight.fetchone()[0]
        except sqlite3.Error as exc:
            raise QueueError(f"{self.path}: cannot open the queue: {exc}") from exc
        except OSError as exc:
            raise QueueError(f"{self.path}: cannot open the queue: {exc.strerror}") from exc
        self._db = db
        self.pending, self.pending_urgent, self.pending_bytes = counts
        self.oldest_pending_t = oldest
        self.next_seq = meta["next_seq"]
        self.thinned = meta.get("thinned", 0)

    def _legacy_seq(self) -> int:
        """The next number from the plain seq file of earlier versions, if there is one."""
        path = self._legacy_seq_file
        if path is None or not path.exists():
            return 0
        text = path.read_text(encoding="ascii").strip()
        if not text.isdigit():
            raise QueueError(f"{path}: holds {text[:20]!r}, not a sequence number")
        return int(text)

    def _insert(self, rows: Sequence[tuple[int, int, bytes]]) -> int:
        """Commit ``rows`` (t, urgent, body); thin under the budget; return readings thinned."""
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT INTO items (t, urgent, body) VALUES (?, ?, ?)", rows)
            added = sum(len(r[2]) for r in rows)
            thinned = 0
            if self.pending_bytes + added + self.inflight_bytes > self.budget_bytes:
                thinned = self._thin(db, added)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return thinned

    def _thin(self, db: sqlite3.Connection, added: int) -> int:
        target = int(self.budget_bytes * _THIN_TARGET)
        total = self.pending_bytes + added + self.inflight_bytes
        dropped = freed = 0
        while total - freed > target:
            routine = db.execute("SELECT count(*) FROM items WHERE urgent = 0").fetchone()[0]
            if routine < 2:
                break  # only events (and in-flight batches) left: never thinned
            rows = db.execute(
                "SELECT id, length(body) FROM items WHERE urgent = 0 ORDER BY id LIMIT ?",
                (max(2, routine // 5),),
            ).fetchall()
            victims = rows[1::2]  # every second of the oldest fifth
            db.executemany("DELETE FROM items WHERE id = ?", [(r[0],) for r in victims])
            dropped += len(victims)
            freed += sum(r[1] for r in victims)
        if dropped:
            db.execute(
                "INSERT INTO meta VALUES ('thinned', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
                (dropped,),
            )
        self._freed_by_thinning = freed
        return dropped

    def _cut(
        self, max_items: int, max_bytes: int, sent: int
    ) -> tuple[Batch, int, int | None] | None:
        """Move the next batch into ``inflight``; return it, its bytes and the new oldest t."""
        db = self._conn()
        budget = max_bytes - len(self._head) - _ENVELOPE_OVERHEAD
        rows = db.execute(
            "SELECT id, urgent, body, t FROM items WHERE urgent = 1 ORDER BY id LIMIT ?",
            (max_items,),
        ).fetchall()
        if len(rows) < max_items:
            rows += db.execute(
                "SELECT id, urgent, body, t FROM items WHERE urgent = 0 ORDER BY id LIMIT ?",
                (max_items - len(rows),),
            ).fetchall()
        size = 0
        take = 0
        for _, _, body, _ in rows:
            if take and size + len(body) + 1 > budget:
                break
            size += len(body) + 1
            take += 1
        rows = rows[:take]
        if not rows:
            return None
        seq = self.next_seq
        payload = b"".join(
            (
                self._head,
                b'%d,"sent":%d,"items":[' % (seq, sent),
                b",".join(r[2] for r in rows),
                b"]}",
            )
        )
        urgent = sum(r[1] for r in rows)
        bodies = sum(len(r[2]) for r in rows)
        oldest = min(r[3] for r in rows)
        db.execute("BEGIN IMMEDIATE")
        try:
            self._forget(db)
            db.execute(
                "DELETE FROM items WHERE id IN (SELECT value FROM json_each(?))",
                (_encode([r[0] for r in rows]),),
            )
            db.execute(
                "INSERT INTO inflight VALUES (?, ?, ?, ?, ?)",
                (seq, payload, len(rows), urgent, oldest),
            )
            db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq + 1,))
            new_oldest = db.execute(_OLDEST_PENDING).fetchone()[0]
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return Batch(seq, payload, len(rows), urgent), bodies, new_oldest

    def _forget(self, db: sqlite3.Connection) -> None:
        """Delete the batches acknowledged since the last transaction (inside one)."""
        acked, self._acked = self._acked, []
        if acked:
            db.executemany("DELETE FROM inflight WHERE seq = ?", [(s,) for s in acked])

    def _flush_acks(self) -> None:
        if not self._acked:
            return  # a cut already took them
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            self._forget(db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _inflight(self) -> list[Batch]:
        self._flush_acks()
        rows = (
            self._conn()
            .execute("SELECT seq, payload, items, urgent FROM inflight ORDER BY seq")
            .fetchall()
        )
        return [Batch(*r) for r in rows]

    def _stats(self) -> tuple[int, int | None, int]:
        self._flush_acks()
        db = self._conn()
        disk = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                disk += os.path.getsize(f"{self.path}{suffix}")
        items = db.execute("SELECT coalesce(sum(items), 0) FROM inflight").fetchone()[0]
        pending = db.execute(_OLDEST_PENDING).fetchone()[0]
        flying = db.execute("SELECT min(oldest_t) FROM inflight").fetchone()[0]
        known = [t for t in (pending, flying) if t is not None]
        return items, min(known) if known else None, disk

    # --- loop side -----------------------------------------------------------------

    async def open(self) -> None:
        """Open (or create) the queue file and load its counters."""
        await self._call(self._open)

    async def close(self) -> None:
        """Commit what is buffered and close the file."""
        if self._flusher is not None:
            await self._flusher
        if self._ack_flush is not None:
            self._ack_flush.cancel()
        if self._db is not None:
            await self._call(self._flush_acks)
            await self._call(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def put(self, item: Item) -> None:
        """Commit one item to the queue; returns once the commit is durable."""
        urgent = 1 if isinstance(item, Event) else 0
        self._buffer.append((item.t, urgent, _encode(item)))
        if self._group is None:
            self._group = asyncio.get_running_loop().create_future()
        group = self._group
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="gw-queue-flush")
        await asyncio.shield(group)

    async def _flush(self) -> None:
        while self._buffer:
            rows, self._buffer = self._buffer, []
            group, self._group = self._group, None
            assert group is not None
            self._freed_by_thinning = 0
            try:
                thinned = await self._call(self._insert, rows)
            except Exception as exc:  # noqa: BLE001 (handed to every waiting put)
                # Not committed: the items go back for the next attempt and their puts fail,
                # so the collectors see it (nothing is silently lost).
                self._buffer[:0] = rows
                if self._group is None:
                    self._group = asyncio.get_running_loop().create_future()
                group.set_exception(
                    QueueError(f"{self.path}: cannot commit to the queue: {exc}")
                    if isinstance(exc, sqlite3.Error)
                    else exc
                )
                group.exception()  # retrieved here; each put re-raises it
                return
            self.pending += len(rows) - thinned
            self.pending_urgent += sum(r[1] for r in rows)
            self.pending_bytes += sum(len(r[2]) for r in rows) - self._freed_by_thinning
            self.thinned += thinned
            first = min(r[0] for r in rows)
            if self.oldest_pending_t is None or first < self.oldest_pending_t:
                self.oldest_pending_t = first
            group.set_result(None)
            self.changed.set()

    async def next_batch(self, max_items: int, max_bytes: int, sent: int) -> Batch | None:
        """Cut the next batch (urgent items first); ``None`` when nothing is pending."""
        if not self.pending:
            return None
        cut = await self._call(self._cut, max_items, max_bytes, sent)
        if cut is None:
            return None
        batch, bodies, oldest = cut
        self.pending -= batch.items
        self.pending_urgent -= batch.urgent
        self.pending_bytes -= bodies
        self.inflight_bytes += len(batch.payload)
        self.oldest_pending_t = oldest
        self.next_seq = batch.seq + 1
        return batch

    async def ack(self, seq: int, size: int) -> None:
        """The broker acknowledged batch ``seq`` (of ``size`` bytes): it leaves the queue.

        The delete rides on the next transaction (the next cut, or its own if none comes
        first), so a drain costs one durable commit per batch, not two. A crash before that
        commit only means the batch is published again, and the server drops it by ``seq``.
        """
        self._acked.append(seq)
        self.inflight_bytes -= size
        if self._ack_flush is None or self._ack_flush.done():
            self._ack_flush = asyncio.create_task(self._flush_acks_soon())

    async def _flush_acks_soon(self) -> None:
        await asyncio.sleep(_ACK_DELAY_S)
        await self._call(self._flush_acks)

    async def inflight(self) -> list[Batch]:
        """Batches cut but not acknowledged, oldest first (to publish again, unchanged)."""
        return await self._call(self._inflight)

    async def stats(self) -> QueueStats:
        """Counters for the health item."""
        items, oldest, disk = await self._call(self._stats)
        return QueueStats(
            depth=self.pending + items,
            oldest_t=oldest,
            disk_bytes=disk,
            thinned=self.thinned,
        )
