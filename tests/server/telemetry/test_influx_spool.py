"""The InfluxDB writer's spool while InfluxDB is unreachable: bounded, oldest dropped first,
every drop counted, and the byte count kept in memory agrees with the file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosqlite

from collectors.wire import Reading
from server.telemetry.influx import BATCH_LINES, InfluxTarget, open_influx_writer
from tests.conftest import free_port

T0 = 1_795_300_000_000


async def test_spool_is_bounded_and_drops_the_oldest(tmp_path: Path) -> None:
    # Nothing listens on this port: every send fails and is retried.
    target = InfluxTarget(url=f"http://127.0.0.1:{free_port()}", version="1")
    spool = tmp_path / "spool.db"
    async with open_influx_writer(target, spool, spool_max_bytes=40_000, backoff=False) as w:
        for batch in range(6):
            items = [
                Reading(T0 + (batch * BATCH_LINES + i) * 10, "el-1-1", "elevator", {"trips": i})
                for i in range(BATCH_LINES)
            ]
            await w.write("c-1", "gw-1", items)
            await w.commit({("c-1", "gw-1"): b"mark %d" % batch})
            assert (await w.stats())["memory_lines"] == 0
            await asyncio.sleep(0.02)  # the sender tries and fails
        stats = await w.stats()
        assert stats["retries"] > 0
        assert stats["last_error"]
        # Each chunk is ~20-30 KB: the budget keeps the newest one or two (the chunk being
        # retried is never dropped: it may already be in InfluxDB).
        assert stats["spool_lines"] + stats["spool_dropped_lines"] == 6 * BATCH_LINES
        assert stats["spool_dropped_lines"] >= 3 * BATCH_LINES
        kept_bytes = stats["spool_bytes"]
    async with aiosqlite.connect(spool) as db:
        async with db.execute("SELECT 0, sum(length(body)) FROM chunks") as cur:
            row = await cur.fetchone()
        async with db.execute("SELECT max(id) FROM chunks") as cur:
            newest = await cur.fetchone()
    assert row is not None
    assert newest is not None
    assert row[1] == kept_bytes  # the counter and the file agree
    assert newest[0] == 6  # the newest batch is kept
    # The marks of the last commit were spooled with it (and survive the bound).
    async with open_influx_writer(target, spool, spool_max_bytes=40_000, backoff=False) as w:
        assert await w.load_marks() == {("c-1", "gw-1"): b"mark 5"}
