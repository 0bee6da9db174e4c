"""The disk queue on a real SQLite file: commits, batch bounds, events first, what survives a
reopen (in-flight batches, seq, drop counts), the disk budget, and bad files."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import msgspec
import pytest

from collectors.wire import Event, Reading, decode_envelope
from gateway.queue import DiskQueue, QueueError
from tests.conftest import run_linli

T0 = 1_763_800_000_000


def queue(tmp_path: Path, **kw: object) -> DiskQueue:
    return DiskQueue(tmp_path / "q.sqlite3", gateway="gw-1", community="c-1", **kw)  # type: ignore[arg-type]


def reading(i: int, pad: int = 0) -> Reading:
    fields: dict[str, bool | int | float | str] = {"occupied": i % 2 == 0}
    if pad:
        fields["evidence"] = "x" * pad
    return Reading(T0 + i, "fl-1", "fire_lane", fields)


def event(i: int) -> Event:
    return Event(T0 + i, "fl-1", "fire_lane", "obstruction", "start", {"n": i})


async def test_batches_respect_bounds_keep_order_and_decode(tmp_path: Path) -> None:
    q = queue(tmp_path)
    await q.open()
    for i in range(20):
        await q.put(reading(i, pad=700))
    seen: list[int] = []
    seqs: list[int] = []
    while q.pending:
        batch = await q.next_batch(1000, 4096, T0)
        assert batch is not None
        assert len(batch.payload) <= 4096
        env = decode_envelope(batch.payload)  # the concatenated bytes are a valid envelope
        assert (env.gw, env.community, env.seq) == ("gw-1", "c-1", batch.seq)
        assert len(env.items) == batch.items
        seen += [item.t - T0 for item in env.items]
        seqs.append(batch.seq)
        await q.ack(batch.seq, len(batch.payload))
    assert seen == list(range(20))
    assert seqs == list(range(len(seqs)))
    assert len(seqs) > 1
    assert (await q.stats()).depth == 0
    await q.close()


async def test_events_go_first_past_a_backlog(tmp_path: Path) -> None:
    q = queue(tmp_path)
    await q.open()
    for i in range(50):
        await q.put(reading(i))
    await q.put(event(50))
    assert q.pending_urgent == 1
    batch = await q.next_batch(10, 64 * 1024, T0)
    assert batch is not None
    items = json.loads(batch.payload)["items"]
    assert items[0]["event"] == "obstruction"
    assert [it["t"] - T0 for it in items[1:]] == list(range(9))
    assert q.pending == 41
    assert q.pending_urgent == 0
    await q.close()


async def test_unacknowledged_batches_and_seq_survive_a_reopen(tmp_path: Path) -> None:
    q = queue(tmp_path)
    await q.open()
    for i in range(10):
        await q.put(reading(i))
    first = await q.next_batch(4, 64 * 1024, T0)
    second = await q.next_batch(4, 64 * 1024, T0)
    assert first is not None
    assert second is not None
    await q.ack(first.seq, len(first.payload))
    await q.close()  # the process goes away with `second` in flight

    again = queue(tmp_path)
    await again.open()
    inflight = await again.inflight()
    assert [(b.seq, b.payload) for b in inflight] == [(second.seq, second.payload)]
    assert again.pending == 2
    assert again.next_seq == 2
    third = await again.next_batch(10, 64 * 1024, T0)
    assert third is not None
    assert third.seq == 2  # never reused
    assert [it["t"] - T0 for it in json.loads(third.payload)["items"]] == [8, 9]
    stats = await again.stats()
    assert stats.depth == 6  # second (4) and third (2) in flight
    assert stats.oldest_t == T0 + 4
    await again.close()


async def test_seq_continues_from_the_plain_file_of_earlier_versions(tmp_path: Path) -> None:
    (tmp_path / "seq").write_text("41\n")
    q = queue(tmp_path, legacy_seq_file=tmp_path / "seq")
    await q.open()
    await q.put(reading(0))
    batch = await q.next_batch(10, 64 * 1024, T0)
    assert batch is not None
    assert batch.seq == 41
    await q.close()


async def test_budget_thins_old_readings_and_never_events(tmp_path: Path) -> None:
    budget = 40_000
    q = queue(tmp_path, budget_bytes=budget)
    await q.open()
    readings = events = 0
    for i in range(3000):
        if i % 10 == 0:
            await q.put(event(i))
            events += 1
        else:
            await q.put(reading(i, pad=50))
            readings += 1
    assert q.thinned > 0
    assert q.pending_bytes <= budget
    assert q.pending == readings + events - q.thinned
    delivered: list[dict[str, object]] = []
    while q.pending:
        batch = await q.next_batch(500, 128 * 1024, T0)
        assert batch is not None
        delivered += json.loads(batch.payload)["items"]
        await q.ack(batch.seq, len(batch.payload))
    got_events = [d for d in delivered if "event" in d]
    got_readings = [d for d in delivered if "fields" in d]
    assert len(got_events) == events  # every event, none thinned
    assert len(got_readings) == readings - q.thinned
    # The newest readings are kept whole; thinning took from the oldest.
    assert got_readings[-1]["t"] == T0 + 2999
    assert (await q.stats()).thinned == q.thinned
    await q.close()
    reopened = queue(tmp_path, budget_bytes=budget)
    await reopened.open()
    assert reopened.thinned == q.thinned  # the count survives a restart
    await reopened.close()


async def test_a_file_that_is_not_a_database_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    q = DiskQueue(path, gateway="gw-1", community="c-1")
    with pytest.raises(QueueError, match=r"q\.sqlite3: cannot open the queue"):
        await q.open()


async def test_a_bad_legacy_seq_file_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "seq").write_text("forty")
    q = queue(tmp_path, legacy_seq_file=tmp_path / "seq")
    with pytest.raises(QueueError, match="seq: holds 'forty'"):
        await q.open()


async def test_commits_are_durable_in_the_file(tmp_path: Path) -> None:
    q = queue(tmp_path)
    await q.open()
    for i in range(5):
        await q.put(reading(i))
    # Read by another connection while the queue is open: the puts are committed.
    db = sqlite3.connect(tmp_path / "q.sqlite3")
    assert db.execute("SELECT count(*) FROM items").fetchone()[0] == 5
    db.close()
    await q.close()


async def test_a_queue_of_the_first_layout_is_converted_and_loses_nothing(tmp_path: Path) -> None:
    """Earlier versions kept events and readings in one table and copied each batch's
    envelope into ``inflight``: both survive the upgrade, the envelope byte for byte."""
    path = tmp_path / "q.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, t INTEGER NOT NULL,"
        " urgent INTEGER NOT NULL, body BLOB NOT NULL);"
        "CREATE INDEX items_urgent ON items (urgent, id);"
        "CREATE TABLE inflight (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL,"
        " items INTEGER NOT NULL, urgent INTEGER NOT NULL, oldest_t INTEGER NOT NULL);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "INSERT INTO meta VALUES ('next_seq', 8), ('thinned', 3);"
    )
    envelope = b'{"v":1,"gw":"gw-1","community":"c-1","seq":7,"sent":5,"items":[]}'
    old.execute("INSERT INTO inflight VALUES (7, ?, 0, 0, ?)", (envelope, T0))
    rows = [(T0 + i, 1 if i == 3 else 0, msgspec.json.encode(event(i) if i == 3 else reading(i)))
            for i in range(6)]  # fmt: skip
    old.executemany("INSERT INTO items (t, urgent, body) VALUES (?, ?, ?)", rows)
    old.commit()
    old.close()

    q = queue(tmp_path)
    await q.open()
    assert (q.pending, q.pending_urgent, q.next_seq, q.thinned) == (6, 1, 8, 3)
    assert [(b.seq, b.payload) for b in await q.inflight()] == [(7, envelope)]
    batch = await q.next_batch(100, 64 * 1024, T0)
    assert batch is not None
    assert batch.seq == 8
    assert [it["t"] - T0 for it in json.loads(batch.payload)["items"]] == [3, 0, 1, 2, 4, 5]
    await q.ack(7, len(envelope))
    await q.ack(8, len(batch.payload))
    assert (await q.stats()).depth == 0
    assert await q.inflight() == []
    await q.close()


async def test_reopened_in_flight_batches_are_rebuilt_exactly_and_acks_delete_them(
    tmp_path: Path,
) -> None:
    """Several batches in flight, some acknowledged (deletes waiting for their group), then
    the process ends: the reopened queue rebuilds exactly the unacknowledged envelopes."""
    q = queue(tmp_path)
    await q.open()
    for i in range(40):
        await q.put(event(i) if i % 7 == 0 else reading(i))
    batches = [await q.next_batch(5, 64 * 1024, T0 + 100 + n) for n in range(6)]
    assert all(b is not None for b in batches)
    for b in batches[:4:2]:  # 0 and 2 acknowledged, out of order with 1 and 3
        assert b is not None
        await q.ack(b.seq, len(b.payload))
    pending_before = q.pending
    await q.close()

    again = queue(tmp_path)
    await again.open()
    expected = [b for i, b in enumerate(batches) if i not in (0, 2)]
    assert await again.inflight() == expected
    assert again.pending == pending_before
    rest = await again.next_batch(100, 64 * 1024, T0)
    assert rest is not None
    delivered = [json.loads(b.payload)["items"] for b in [*batches, rest] if b is not None]
    assert sorted(it["t"] - T0 for items in delivered for it in items) == list(range(40))
    for b in [*expected, rest]:
        assert b is not None
        await again.ack(b.seq, len(b.payload))
    stats = await again.stats()
    assert (stats.depth, stats.oldest_t) == (0, None)
    await again.close()
    db = sqlite3.connect(tmp_path / "q.sqlite3")
    left = [db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("items", "events", "flight")]  # fmt: skip
    db.close()
    assert left == [0, 0, 0]


async def test_a_second_process_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    """Two gateways on one state directory would share client id and seq (issue 12): the
    second refuses to start, naming the directory and the holder; the first keeps working."""
    first = queue(tmp_path)
    await first.open()
    second = queue(tmp_path)
    with pytest.raises(
        QueueError, match=rf"in use by another gateway process \(pid {os.getpid()}\)"
    ):
        await second.open()
    await first.put(reading(1))  # unharmed
    # `linli gateway` on the same state_dir: a clear message and exit status 1, no traceback.
    site = tmp_path / "site.yaml"
    site.write_text(
        "version: 1\ngateway: gw-1\ncommunity: c-1\n"
        f"state_dir: {tmp_path}\nuplink: {{url: 'mqtt://127.0.0.1:1'}}\n"
        "collectors:\n  - {type: simulator, devices: [{id: gt-1, kind: gate}]}\n"
    )
    done = run_linli("gateway", "--config", str(site))
    assert done.returncode == 1, done.stderr
    assert "the state directory is in use by another gateway process" in done.stderr
    assert "Traceback" not in done.stderr
    await first.close()
    third = queue(tmp_path)
    await third.open()  # the lock went with the first
    await third.close()
