"""The gateway's store-and-forward queue: SQLite in WAL mode on the gateway's own disk.

Theory of operation
-------------------
Every item a collector produces is **committed here before anything else happens to it**
(:meth:`DiskQueue.put` returns once its transaction is durable). Puts that arrive while a
commit is running wait for the next one, so a burst costs one commit, not one per item
(group commit).

Events (*urgent*) and readings (*routine*) live in two tables, ``events`` and ``items``, each
keyed by an ``AUTOINCREMENT`` id, so ids only grow. A batch takes every pending event first,
then fills up with the oldest readings, so an event never waits behind a backlog of samples.

The uplink asks for the next batch with :meth:`DiskQueue.next_batch`. The items stay where
they are: one transaction records the batch in ``flight`` (its ``seq``, its ``sent`` time and
the id range it took from each table) and advances ``meta.next_seq``. Because each table is
cut in id order, everything at or below a table's highest cut id is in flight, and
everything above it is pending: the queue keeps that *cursor* per table in memory and
recomputes it from ``flight`` when it opens. The batch leaves the queue only when
:meth:`DiskQueue.ack` is called after the broker's PUBACK: then its id ranges and its
``flight`` row are deleted, in one transaction with later acknowledgements (the deletes are
grouped; see :meth:`DiskQueue.ack`). After a crash or a lost connection the batch is rebuilt
from its ranges and its ``sent`` time, byte for byte the envelope first published, with the
same ``seq`` (see :meth:`DiskQueue.inflight`), so delivery is at least once and the server
drops duplicates by ``seq``; a number is never reused for other items. Each item is written
once: cutting a batch copies nothing (on a gateway's SD card, half the write wear of copying
it into an outbox).

Disk budget: when the items' bytes exceed ``budget_bytes``, the oldest pending routine
readings are thinned (every second one of the oldest fifth, repeated until the queue is back
under 95 % of the budget). Events are never thinned, nor are batches already in flight.
Every thinned reading is counted in ``meta.thinned`` (it survives restarts and goes out in
the health item).

Queues written by earlier versions (one ``items`` table with an ``urgent`` column, and an
``inflight`` table holding envelopes) are converted when opened; their in-flight envelopes
are published again as they were.

Durability: ``synchronous`` is ``full`` by default, so a commit survives a power cut; ``normal``
survives a crash of the process (kill -9) but may lose the last commits on power loss.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import itertools
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
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    t INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    t INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS flight (
    seq INTEGER PRIMARY KEY,
    sent INTEGER NOT NULL,
    e_lo INTEGER NOT NULL,
    e_hi INTEGER NOT NULL,
    r_lo INTEGER NOT NULL,
    r_hi INTEGER NOT NULL,
    items INTEGER NOT NULL,
    urgent INTEGER NOT NULL,
    oldest_t INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

#: The first layout (before 0.5): one ``items`` table with an ``urgent`` column, envelopes
#: copied into ``inflight``. Converted in place by :meth:`DiskQueue._upgrade`.
_UPGRADE: Final = """
CREATE TABLE items_v2 (id INTEGER PRIMARY KEY AUTOINCREMENT, t INTEGER NOT NULL,
                       body BLOB NOT NULL);
CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, t INTEGER NOT NULL,
                     body BLOB NOT NULL);
INSERT INTO items_v2 (t, body) SELECT t, body FROM items WHERE urgent = 0 ORDER BY id;
INSERT INTO events (t, body) SELECT t, body FROM items WHERE urgent = 1 ORDER BY id;
DROP TABLE items;
ALTER TABLE items_v2 RENAME TO items;
"""

#: Bytes of envelope around the items (keys, ids, numbers), reserved when cutting a batch.
_ENVELOPE_OVERHEAD: Final = 200
#: Thinning target, as a share of the budget (hysteresis: a full queue is not thinned on
#: every single put).
_THIN_TARGET: Final = 0.95
#: Acknowledged batches are deleted together: once this many are waiting (a draining
#: backlog deletes in long runs of ids, which costs far less per item than batch by batch),
#: or this long after the first when the uplink goes quiet.
_ACK_GROUP: Final = 16
_ACK_DELAY_S: Final = 0.5
_encode = msgspec.json.Encoder().encode
#: Table name by class (1 urgent, 0 routine).
_TABLES: Final = ("items", "events")


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
class _Flight:
    """A ``flight`` row: when the batch was first sent and where its items are, ids
    ``lo..hi`` of each table (``lo > hi``: none from that table)."""

    sent: int
    e_lo: int
    e_hi: int
    r_lo: int
    r_hi: int
    items: int
    urgent: int
    oldest_t: int


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
        self._lock_fd: int | None = None
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
        self._acked: list[int] = []  # appended on the loop, taken on the queue's thread
        # Thread side: the highest id cut from each table (index: 0 items, 1 events), the
        # batches in flight, and in-flight envelopes of the first layout.
        self._cursor = [0, 0]
        self._flights: dict[int, _Flight] = {}
        self._legacy: dict[int, tuple[Batch, int]] = {}
        self._ack_flush: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()  # set whenever items were committed

    # --- thread side ---------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _conn(self) -> sqlite3.Connection:
        assert self._db is not None, "the queue is not open"
        return self._db

    def _lock(self) -> None:
        """Hold an exclusive lock on the state directory (its file ``state.lock``) for as
        long as the queue is open: a second gateway process on the same state directory
        would share the client id and the sequence numbers, and corrupt both."""
        path = self.path.parent / "state.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise QueueError(
                f"{self.path.parent}: the state directory is in use by another gateway "
                f"process (pid {holder}); each gateway needs its own state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
            columns = {row[1] for row in db.execute("PRAGMA table_info(items)")}
            if "urgent" in columns:
                self._upgrade(db)
            db.executescript(_SCHEMA)
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if "next_seq" not in meta:
                meta["next_seq"] = self._legacy_seq()
                db.execute("INSERT INTO meta VALUES ('next_seq', ?)", (meta["next_seq"],))
            legacy = db.execute("SELECT name FROM sqlite_master WHERE name = 'inflight'")
            if legacy.fetchone() is not None:
                for seq, payload, items, urgent, oldest in db.execute(
                    "SELECT seq, payload, items, urgent, oldest_t FROM inflight ORDER BY seq"
                ):
                    self._legacy[seq] = (Batch(seq, payload, items, urgent), oldest)
            for row in db.execute(
                "SELECT seq, sent, e_lo, e_hi, r_lo, r_hi, items, urgent, oldest_t FROM flight"
            ):
                self._flights[row[0]] = _Flight(*row[1:])
            for f in self._flights.values():
                self._cursor[1] = max(self._cursor[1], f.e_hi)
                self._cursor[0] = max(self._cursor[0], f.r_hi)
            counts = [
                db.execute(
                    f"SELECT count(*), coalesce(sum(length(body)), 0) FROM {table} WHERE id > ?",  # noqa: S608 (table names are constants)
                    (self._cursor[urgent],),
                ).fetchone()
                for urgent, table in enumerate(_TABLES)
            ]
            self._db = db
            oldest = self._oldest_pending()
            inflight_bytes = sum(len(b.payload) for b in self._rebuild_all())
        except sqlite3.Error as exc:
            self._db = None
            self._unlock()
            raise QueueError(f"{self.path}: cannot open the queue: {exc}") from exc
        except OSError as exc:
            self._db = None
            self._unlock()
            raise QueueError(f"{self.path}: cannot open the queue: {exc.strerror}") from exc
        self.pending = counts[0][0] + counts[1][0]
        self.pending_urgent = counts[1][0]
        self.pending_bytes = counts[0][1] + counts[1][1]
        self.inflight_bytes = inflight_bytes
        self.oldest_pending_t = oldest
        self.next_seq = meta["next_seq"]
        self.thinned = meta.get("thinned", 0)

    def _upgrade(self, db: sqlite3.Connection) -> None:
        """Convert a queue of the first layout: split ``items``; keep ``inflight`` as it is."""
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DROP INDEX IF EXISTS items_urgent")
            for statement in _UPGRADE.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _legacy_seq(self) -> int:
        """The next number from the plain seq file of earlier versions, if there is one."""
        path = self._legacy_seq_file
        if path is None or not path.exists():
            return 0
        text = path.read_text(encoding="ascii").strip()
        if not text.isdigit():
            raise QueueError(f"{path}: holds {text[:20]!r}, not a sequence number")
        return int(text)

    def _oldest_pending(self) -> int | None:
        """The oldest pending item's time, read off the first pending row of each table (items
        are committed in arrival order, so this is exact up to a device's clock)."""
        db = self._conn()
        found = [
            row[0]
            for urgent, table in enumerate(_TABLES)
            for row in db.execute(
                f"SELECT t FROM {table} WHERE id > ? ORDER BY id LIMIT 1",  # noqa: S608
                (self._cursor[urgent],),
            )
        ]
        return min(found) if found else None

    def _insert(self, rows: Sequence[tuple[int, int, bytes]]) -> int:
        """Commit ``rows`` (t, urgent, body); thin under the budget; return readings thinned."""
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO items (t, body) VALUES (?, ?)",
                [(r[0], r[2]) for r in rows if not r[1]],
            )
            db.executemany(
                "INSERT INTO events (t, body) VALUES (?, ?)", [(r[0], r[2]) for r in rows if r[1]]
            )
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
        cursor = self._cursor[0]  # readings at or below it are in flight: never thinned
        dropped = freed = 0
        while total - freed > target:
            routine = db.execute("SELECT count(*) FROM items WHERE id > ?", (cursor,)).fetchone()[0]
            if routine < 2:
                break  # only events (and in-flight batches) left: never thinned
            rows = db.execute(
                "SELECT id, length(body) FROM items WHERE id > ? ORDER BY id LIMIT ?",
                (cursor, max(2, routine // 5)),
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

    def _envelope(self, seq: int, sent: int, bodies: Sequence[bytes]) -> bytes:
        return b"".join(
            (self._head, b'%d,"sent":%d,"items":[' % (seq, sent), b",".join(bodies), b"]}")
        )

    def _cut(
        self, max_items: int, max_bytes: int, sent: int
    ) -> tuple[Batch, int, int | None] | None:
        """Record the next batch in ``flight``; return it, its items' bytes and the new oldest t."""
        db = self._conn()
        budget = max_bytes - len(self._head) - _ENVELOPE_OVERHEAD
        e_cur, r_cur = self._cursor[1], self._cursor[0]
        events = db.execute(
            "SELECT id, body, t FROM events WHERE id > ? ORDER BY id LIMIT ?", (e_cur, max_items)
        ).fetchall()
        readings = []
        if len(events) < max_items:
            readings = db.execute(
                "SELECT id, body, t FROM items WHERE id > ? ORDER BY id LIMIT ?",
                (r_cur, max_items - len(events)),
            ).fetchall()
        size = take = 0
        for _, body, _ in itertools.chain(events, readings):
            if take and size + len(body) + 1 > budget:
                break
            size += len(body) + 1
            take += 1
        if not take:
            return None
        events, readings = events[:take], readings[: max(0, take - len(events))]
        rows = events + readings
        seq = self.next_seq
        flight = _Flight(
            sent=sent,
            e_lo=e_cur + 1,
            e_hi=events[-1][0] if events else e_cur,
            r_lo=r_cur + 1,
            r_hi=readings[-1][0] if readings else r_cur,
            items=len(rows),
            urgent=len(events),
            oldest_t=min(r[2] for r in rows),
        )
        payload = self._envelope(seq, sent, [r[1] for r in rows])
        db.execute("BEGIN IMMEDIATE")
        try:
            if len(self._acked) >= _ACK_GROUP:
                self._forget(db)
            db.execute(
                "INSERT INTO flight VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, *dataclasses.astuple(flight)),
            )
            db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq + 1,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._flights[seq] = flight
        self._cursor[1], self._cursor[0] = flight.e_hi, flight.r_hi
        self.next_seq = seq + 1
        batch = Batch(seq, payload, len(rows), len(events))
        return batch, size - len(rows), self._oldest_pending()

    def _forget(self, db: sqlite3.Connection) -> None:
        """Delete the batches acknowledged so far (inside a transaction): their ``flight`` rows
        and their items, adjacent id ranges merged into one delete."""
        n = len(self._acked)  # ack() may append meanwhile, on the loop: those stay for later
        acked = self._acked[:n]
        del self._acked[:n]
        ranges: list[list[tuple[int, int]]] = [[], []]
        for seq in acked:
            if seq in self._legacy:
                del self._legacy[seq]
                db.execute("DELETE FROM inflight WHERE seq = ?", (seq,))
                continue
            f = self._flights.pop(seq, None)
            if f is None:
                continue  # acknowledged twice (published again after a reconnect)
            ranges[1].append((f.e_lo, f.e_hi))
            ranges[0].append((f.r_lo, f.r_hi))
            db.execute("DELETE FROM flight WHERE seq = ?", (seq,))
        for urgent, table in enumerate(_TABLES):
            merged: list[list[int]] = []
            for lo, hi in sorted(r for r in ranges[urgent] if r[0] <= r[1]):
                if merged and lo <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], hi)
                else:
                    merged.append([lo, hi])
            db.executemany(
                f"DELETE FROM {table} WHERE id BETWEEN ? AND ?",  # noqa: S608
                [tuple(m) for m in merged],
            )

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

    def _rebuild(self, seq: int, f: _Flight) -> Batch:
        """The envelope of in-flight batch ``seq``, byte for byte as first published."""
        db = self._conn()
        bodies = [
            row[0]
            for table, lo, hi in (("events", f.e_lo, f.e_hi), ("items", f.r_lo, f.r_hi))
            for row in db.execute(
                f"SELECT body FROM {table} WHERE id BETWEEN ? AND ? ORDER BY id",  # noqa: S608
                (lo, hi),
            )
        ]
        if len(bodies) != f.items:
            raise QueueError(
                f"{self.path}: batch {seq} should hold {f.items} items but {len(bodies)} remain"
            )
        return Batch(seq, self._envelope(seq, f.sent, bodies), f.items, f.urgent)

    def _rebuild_all(self) -> list[Batch]:
        batches = [b for b, _ in self._legacy.values()]
        batches += [self._rebuild(seq, f) for seq, f in self._flights.items()]
        return sorted(batches, key=lambda b: b.seq)

    def _inflight(self) -> list[Batch]:
        self._flush_acks()
        return self._rebuild_all()

    def _stats(self) -> tuple[int, int | None, int]:
        self._flush_acks()
        disk = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                disk += os.path.getsize(f"{self.path}{suffix}")
        items = sum(f.items for f in self._flights.values())
        items += sum(b.items for b, _ in self._legacy.values())
        known = [f.oldest_t for f in self._flights.values()]
        known += [oldest for _, oldest in self._legacy.values()]
        pending = self._oldest_pending()
        if pending is not None:
            known.append(pending)
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
        await self._call(self._unlock)
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
        return batch

    async def ack(self, seq: int, size: int) -> None:
        """The broker acknowledged batch ``seq`` (of ``size`` bytes): it leaves the queue.

        Deletes are grouped: they ride on the first cut after ``_ACK_GROUP`` batches were
        acknowledged, or get their own transaction ``_ACK_DELAY_S`` after the first, so a
        drain costs one durable commit per batch, not two, and deletes long runs of ids at a
        time. A crash before that commit only means the batches are published again, and
        the server drops them by ``seq``.
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
