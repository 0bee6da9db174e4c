"""Sequence tracking: duplicates dropped, gaps counted, late arrivals fill gaps."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from server.ingest.seqtrack import WINDOW, SeqState, SeqVerdict


def test_in_order_with_duplicates_and_a_gap() -> None:
    s = SeqState()
    verdicts = [s.offer(n) for n in (0, 1, 1, 2, 5, 3, 5, 4)]
    assert verdicts == [
        SeqVerdict.NEW,
        SeqVerdict.NEW,
        SeqVerdict.DUPLICATE,
        SeqVerdict.NEW,
        SeqVerdict.NEW,
        SeqVerdict.NEW,
        SeqVerdict.DUPLICATE,
        SeqVerdict.NEW,
    ]
    assert (s.high, s.gaps, s.duplicates) == (5, 0, 2)


def test_gap_stays_counted_until_filled_and_restore_treats_all_below_high_as_seen() -> None:
    s = SeqState()
    for n in (10, 11, 15):
        s.offer(n)
    assert s.gaps == 3
    r = SeqState.restored(s.high or 0, s.gaps, s.duplicates)
    assert r.offer(12) is SeqVerdict.DUPLICATE
    assert r.offer(16) is SeqVerdict.NEW


def test_far_below_the_window_is_a_duplicate_and_big_jumps_count_gaps() -> None:
    s = SeqState()
    s.offer(0)
    s.offer(WINDOW * 3)
    assert s.gaps == WINDOW * 3 - 1
    assert s.offer(1) is SeqVerdict.DUPLICATE


@given(st.integers(1, 300), st.integers(0, 2**31), st.floats(0, 0.5))
def test_every_seq_accepted_exactly_once_whatever_the_order(n: int, seed: int, dup: float) -> None:
    rng = random.Random(seed)
    stream = list(range(n))
    stream += [rng.randrange(n) for _ in range(int(n * dup))]  # redeliveries
    rng.shuffle(stream)
    s = SeqState()
    accepted = [x for x in stream if s.offer(x) is SeqVerdict.NEW]
    assert sorted(accepted) == list(range(n))
    assert s.gaps == 0
    assert s.duplicates == len(stream) - n
