"""Sequence tracking: duplicates dropped, gaps counted, late arrivals fill gaps."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from server.ingest.seqtrack import CONFIRM, JUMP, WINDOW, SeqState, SeqVerdict


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
    s.offer(WINDOW - 1)  # within JUMP: adopted at once
    assert s.gaps == WINDOW - 2
    for n in range(CONFIRM):  # beyond JUMP: adopted once confirmed
        s.offer(WINDOW * 3 + n)
    assert s.high == WINDOW * 3 + CONFIRM - 1
    assert s.gaps == WINDOW * 3 - 2
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


def test_a_forged_jump_is_held_and_the_real_gateway_goes_on() -> None:
    """Issue 13: one envelope numbered 10^12 must not make the gateway's next ones
    duplicates; it is accepted once, counted as a jump, and not adopted."""
    state = SeqState()
    for seq in range(100):
        state.offer(seq)
    assert state.offer(10**12) is SeqVerdict.NEW
    assert state.offer(10**12) is SeqVerdict.DUPLICATE  # the forger's redelivery
    assert [state.offer(seq) for seq in range(100, 506)] == [SeqVerdict.NEW] * 406
    assert (state.high, state.gaps, state.jumps, state.duplicates) == (505, 0, 1, 1)
    # Even a run of forged numbers is not adopted while the real gateway keeps sending.
    for n in range(10):
        state.offer(10**12 + 1 + n)
        state.offer(506 + n)
    assert state.high == 515


def test_a_real_jump_is_adopted_after_its_confirmation() -> None:
    state = SeqState()
    for seq in range(10):
        state.offer(seq)
    far = 10 + JUMP + 50  # e.g. a gateway restored from an old backup of another's state
    verdicts = [state.offer(far + n) for n in range(CONFIRM)]
    assert verdicts == [SeqVerdict.NEW] * CONFIRM
    assert state.high == far + CONFIRM - 1
    assert state.gaps == far - 10  # the numbers skipped, once
    assert state.offer(far + CONFIRM) is SeqVerdict.NEW
    assert state.offer(far + 1) is SeqVerdict.DUPLICATE
    again = SeqState.from_bytes(state.to_bytes())
    assert again == state


def test_a_held_jump_survives_a_restart() -> None:
    state = SeqState()
    state.offer(0)
    state.offer(JUMP * 10)
    again = SeqState.from_bytes(state.to_bytes())
    assert (again.high, again.jumps, again.ahead) == (0, 1, [JUMP * 10])
    assert again.offer(JUMP * 10) is SeqVerdict.DUPLICATE
