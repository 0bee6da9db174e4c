"""Per-gateway sequence tracking: drop duplicate envelopes, count gaps.

Theory of operation
-------------------
Each gateway numbers its envelopes 0, 1, 2, … and never repeats a number (DESIGN.md). For
each gateway we keep the highest ``seq`` seen and a bitmap of which of the :data:`WINDOW`
numbers at and below it have arrived. A new number above the high mark moves the window up
and counts the numbers it skipped as gaps; a number inside the window is either a duplicate
(bit set) or a late arrival that fills a gap (bit clear); a number below the window is taken
for a duplicate, because a gateway sends its backlog in order.

Invariants: ``gaps`` = numbers below ``high`` never seen (within what the window could tell);
an envelope is accepted at most once per gateway while its number is in the window.

**A jump is held, not adopted** (issue 13). A number more than :data:`JUMP` above the high
mark (a forged or corrupt ``seq``, e.g. 10^12) would otherwise move the window there, and the
gateway's real envelopes would all be taken for duplicates. Such an envelope is accepted
(its number remembered, so that it is accepted once) and counted in ``jumps``, but the high
mark stays. Only when :data:`CONFIRM` consecutive numbers have come from up there, with none
of the gateway's ordinary ones in between, is the jump adopted: the window moves up and the
numbers skipped count as gaps. A real gateway that jumped (a restored state directory) is
thus followed after a few envelopes; a forger racing a live gateway never is.

The whole state is saved with the telemetry it accounts for (:meth:`SeqState.to_bytes`, in
the same transaction), so after a crash it is exactly what it was for the messages the store
holds, and the messages after them, which the broker delivers again, count as they would
have. A state restored from an older server's mark (``high`` only) takes everything at or
below ``high`` as seen.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

import msgspec

__all__ = ["CONFIRM", "JUMP", "WINDOW", "SeqState", "SeqVerdict"]

#: How far below the high mark a late envelope can still be told from a duplicate.
WINDOW: Final = 4096
_MASK: Final = (1 << WINDOW) - 1
#: How far above the high mark a number is taken as the gateway's next without question.
JUMP: Final = WINDOW
#: Consecutive numbers from beyond a jump, and none ordinary between, that adopt it.
CONFIRM: Final = 3
#: Numbers from beyond a jump remembered, so that each is accepted once.
_AHEAD_KEPT: Final = 64


class _Mark(msgspec.Struct, array_like=True, frozen=True):
    high: int | None
    seen: bytes
    gaps: int
    duplicates: int
    floor: int
    jumps: int = 0
    ahead: list[int] = []
    run: int = 0


_MARK_ENCODER: Final = msgspec.msgpack.Encoder()
_MARK_DECODER: Final = msgspec.msgpack.Decoder(_Mark)


class SeqVerdict(enum.Enum):
    """What to do with an envelope, by its sequence number."""

    NEW = "new"
    DUPLICATE = "duplicate"


@dataclass
class SeqState:
    """One gateway's sequence window."""

    high: int | None = None
    seen: int = 0  # bit k set: high - k has arrived
    gaps: int = 0
    duplicates: int = 0
    #: The first number seen: gaps are counted from here up, so a late number below it
    #: (out-of-order first contact) is new but fills no counted gap.
    floor: int = 0
    #: Envelopes numbered beyond a jump (held, not adopted).
    jumps: int = 0
    #: Numbers accepted from beyond a jump, oldest first (at most _AHEAD_KEPT).
    ahead: list[int] = field(default_factory=list)
    #: How many of the latest ``ahead`` are consecutive with no ordinary number between.
    run: int = 0

    @classmethod
    def restored(cls, high: int, gaps: int, duplicates: int) -> SeqState:
        """State after a restart: everything at or below ``high`` counts as seen."""
        return cls(high=high, seen=_MASK, gaps=gaps, duplicates=duplicates, floor=high)

    def to_bytes(self) -> bytes:
        """The whole state, for :meth:`from_bytes`."""
        return _MARK_ENCODER.encode(
            _Mark(
                self.high,
                self.seen.to_bytes(WINDOW // 8, "little"),
                self.gaps,
                self.duplicates,
                self.floor,
                self.jumps,
                self.ahead,
                self.run,
            )
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> SeqState:
        """A state saved by :meth:`to_bytes`; ``ValueError`` if ``raw`` is not one."""
        try:
            mark = _MARK_DECODER.decode(raw)
        except msgspec.DecodeError as exc:
            raise ValueError(f"not a sequence mark: {exc}") from exc
        seen = int.from_bytes(mark.seen, "little") & _MASK
        return cls(mark.high, seen, mark.gaps, mark.duplicates, mark.floor, mark.jumps,
                   list(mark.ahead), mark.run)  # fmt: skip

    def offer(self, seq: int) -> SeqVerdict:
        """Record ``seq``; say whether its envelope is new or a duplicate."""
        if self.high is None:
            self.high, self.seen, self.floor = seq, 1, seq
            return SeqVerdict.NEW
        if seq > self.high + JUMP:
            return self._beyond(seq)
        self.run = 0  # an ordinary number: whatever came from beyond is not confirmed
        if seq > self.high:
            self._advance(seq)
            return SeqVerdict.NEW
        back = self.high - seq
        if back < WINDOW and not self.seen >> back & 1:
            self.seen |= 1 << back
            if seq > self.floor:
                self.gaps -= 1
            return SeqVerdict.NEW
        self.duplicates += 1
        return SeqVerdict.DUPLICATE

    def _beyond(self, seq: int) -> SeqVerdict:
        """A number more than :data:`JUMP` above the high mark (see the module docstring)."""
        if seq in self.ahead:
            self.duplicates += 1
            return SeqVerdict.DUPLICATE
        self.jumps += 1
        self.run = self.run + 1 if self.ahead and self.run and seq == self.ahead[-1] + 1 else 1
        self.ahead = [*self.ahead, seq][-_AHEAD_KEPT:]
        if self.run >= CONFIRM:
            # Adopted: the window moves up to the run, whose numbers count as seen.
            run = self.ahead[-self.run :]
            self.ahead, self.run = self.ahead[: -len(run)], 0
            for number in run:
                self._advance(number)
        return SeqVerdict.NEW

    def _advance(self, seq: int) -> None:
        assert self.high is not None
        shift = seq - self.high
        self.gaps += shift - 1
        self.seen = ((self.seen << shift) | 1) & _MASK if shift < WINDOW else 1
        self.high = seq
