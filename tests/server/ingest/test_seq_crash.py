"""Gaps and duplicates stay exact across crashes (issue 12): ingest over the real embedded
store, crashed at random points of its batches, restarted from what the store committed.

The broker is modelled as MQTT has it: messages stay queued until acknowledged, and after a
crash every unacknowledged one is delivered again, in order. Ingest is driven as
``run_acked_session`` drives it: the next batch is handled and sealed before the commit of
the previous one is written. A crash before a commit leaves
no trace; a crash after a commit but before the acknowledgement makes the broker deliver
the batch again, which then counts as duplicates because it is one. So the counters must
equal those of a crash-free run over the deliveries that were committed, and the store must
hold every delivered envelope exactly once.
"""

from __future__ import annotations

import asyncio
import collections
import json
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from server.ingest.mqtt import load_seq_states
from server.ingest.pipeline import Ingest
from server.ingest.seqtrack import SeqState
from server.store.db import open_database
from server.store.registry import DeviceInfo, RegistryIndex
from server.telemetry.sqlite_store import open_sqlite_store
from server.web.livestate import LiveState

T0 = 1_763_800_000_000
UP = "linli/v1/meihuayuan/gw-1/up"
KEY = ("meihuayuan", "gw-1")
REGISTRY = RegistryIndex(
    frozenset({"meihuayuan"}),
    frozenset({KEY}),
    {("meihuayuan", "fl-1"): DeviceInfo("meihuayuan", "gw-1", "fire_lane", "")},
)


def envelope(seq: int) -> bytes:
    item = {"t": T0 + seq, "dev": "fl-1", "kind": "fire_lane", "fields": {"occupied": True}}
    body = {"v": 1, "gw": "gw-1", "community": "meihuayuan", "seq": seq, "sent": T0}
    return json.dumps({**body, "items": [item]}).encode()


#: What the network hands the broker: the gateway's envelopes with some lost, some sent
#: twice (a PUBACK lost on the gateway's side), some swapped with their neighbour.
deliveries = st.lists(st.integers(0, 60), min_size=1, max_size=60)
plans = st.lists(st.sampled_from(["ok", "crash_before_commit", "crash_after_commit"]))


async def run(delivered: list[int], batch_sizes: list[int], plan: list[str], tmp: Path) -> None:
    pending = collections.deque(delivered)  # the broker's queue for the server's session
    committed: list[int] = []
    steps = iter(plan)
    sizes = iter(batch_sizes)

    async def no_reload() -> RegistryIndex:
        return REGISTRY

    async with open_database(f"sqlite+aiosqlite:///{tmp / 'r.db'}") as db:
        while pending:
            async with open_sqlite_store(tmp / "t.db") as store:  # a (re)started server
                ingest = Ingest(
                    prefix="linli/v1",
                    registry=REGISTRY,
                    load_registry=no_reload,
                    live=LiveState(),
                    writer=store,
                    seq=await load_seq_states(store, db),
                )
                # As run_acked_session does: a batch is handled and sealed while the commit
                # of the one before is still to be written; that commit is written and its
                # batch acknowledged before the next is started.
                handled = 0  # messages at the head of the queue this process has handled
                inflight: tuple[Callable[[], Awaitable[None]], list[int]] | None = None
                while True:
                    batch = list(pending)[handled : handled + next(sizes, 3)]
                    for seq in batch:
                        await ingest.handle(UP, envelope(seq))
                    handled += len(batch)
                    commit = ingest.seal()
                    if inflight is not None:
                        step = next(steps, "ok")
                        if step == "crash_before_commit":
                            break  # neither sealed batch written, nothing acknowledged
                        await inflight[0]()
                        committed += inflight[1]
                        if step == "crash_after_commit":
                            break  # committed, but the PUBACKs never left
                        for _ in inflight[1]:
                            pending.popleft()
                        handled -= len(inflight[1])
                    inflight = (commit, batch)
                    if not pending:
                        break
                stored = await store.counts()
            if not pending:
                break
        reference = SeqState()
        for seq in committed:
            reference.offer(seq)
        state = ingest.seq[KEY]
        assert (state.high, state.gaps, state.duplicates) == (
            reference.high,
            reference.gaps,
            reference.duplicates,
        )
        # Gaps: the numbers between the first delivered and the highest that never came,
        # each counted once.
        assert state.gaps == len(set(range(delivered[0], max(delivered))) - set(delivered))
        assert stored == {"meihuayuan/fl-1": {"readings": len(set(delivered)), "events": 0}}


@settings(max_examples=60, deadline=None)
@given(
    delivered=deliveries,
    batch_sizes=st.lists(st.integers(1, 8)),
    plan=plans,
)
def test_counters_and_store_are_exact_across_crashes(
    delivered: list[int], batch_sizes: list[int], plan: list[str]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(delivered, batch_sizes, plan, Path(tmp)))
