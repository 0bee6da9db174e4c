"""A sans-I/O parser for makers' serial frames, driven by a profile's :class:`Frame` spec.

Theory of operation. Bytes from the line go in with :meth:`FrameParser.feed`; complete,
checked frames come out of :meth:`FrameParser.next_frame`. The parser keeps one buffer of raw
bytes and always works on its head:

1. Find the start bytes. Anything before them is garbage: dropped and counted.
2. Read the frame, unescaping if the protocol stuffs bytes, until it is complete: its length
   field says how long it is, or its end marker arrives. Too little data: wait (return None).
3. Check the length and the checksum. A frame that fails either is not consumed: only its
   first start byte is dropped and the search starts again one byte later, so a torn frame
   followed by a good one costs the torn one only.
4. A good frame is consumed and returned, unescaped, from its first start byte to its last
   byte (so that profile byte positions match the maker's datasheet drawing).

Invariants: the buffer never holds more than ``cap`` bytes (older bytes are dropped and
counted as overflow); no input makes :meth:`feed`, :meth:`next_frame` or :meth:`idle` raise;
feeding a stream whole or byte by byte yields the same frames.

A frame whose tail never arrives would block the frames behind it; the I/O shell calls
:meth:`idle` when the line has been silent for an inter-frame gap, which abandons an
incomplete frame at the head (counted as ``torn``).

Example layout (the fire-lane sensor in firmware_configs/)::

    +------+------+-----+------+------+---------------+-------+
    | 0xAA | 0x55 | LEN | ADDR | TYPE | DATA ...      | CS    |
    +------+------+-----+------+------+---------------+-------+
      0      1      2     3      4      5               total-1
    LEN counts ADDR..DATA; total = LEN + 4; CS = sum8 of bytes 2..total-2
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Final

from collectors.checksums import WIDTH, compute
from collectors.profile import Frame, hex_bytes

__all__ = ["FrameCodec", "FrameParser", "ParsedFrame"]

#: The parser holds at most this many frames' worth of raw bytes (escaping can double a
#: frame's size on the wire) before it drops the oldest.
_CAP_FRAMES: Final = 4


@dataclass(frozen=True, slots=True)
class ParsedFrame:
    """One good frame: the unescaped bytes from the first start byte to the last byte."""

    data: bytes


class FrameCodec:
    """The parts of a frame format both directions need: escaping, checksum, length."""

    def __init__(self, spec: Frame) -> None:
        self.spec = spec
        self.start = hex_bytes(spec.start)
        self.end = hex_bytes(spec.end) if spec.end else b""
        self.escape = hex_bytes(spec.escape)[0] if spec.escape else None
        self.cs_width = WIDTH[spec.checksum]
        self.trailer = self.cs_width + len(self.end)
        specials = {self.start[0], *self.end}
        if self.escape is not None:
            specials.add(self.escape)
        self.specials = frozenset(specials)
        self.min_length = len(self.start) + self.trailer
        if spec.length_at is not None:
            self.min_length = max(self.min_length, spec.length_at + spec.length_size)

    def checksum_ok(self, frame: bytes | bytearray) -> bool:
        """True if the checksum stored in ``frame`` matches its covered bytes."""
        cs_at = len(frame) - self.trailer
        if cs_at < self.spec.checksum_from:
            return False
        want = compute(self.spec.checksum, bytes(frame[self.spec.checksum_from : cs_at]))
        got = int.from_bytes(frame[cs_at : cs_at + self.cs_width], self.spec.checksum_order)
        return want == got

    def encode(self, head: bytes) -> bytes:
        """The wire bytes of a frame whose unescaped bytes before the checksum are ``head``.

        ``head`` starts with the start bytes; the length field, if the format has one, is
        filled in here; the checksum and end marker are appended and the body is escaped.
        """
        spec = self.spec
        frame = bytearray(head)
        total = len(head) + self.trailer
        if spec.length_at is not None:
            value = total - spec.length_adjust
            frame[spec.length_at : spec.length_at + spec.length_size] = value.to_bytes(
                spec.length_size, spec.length_order
            )
        cs = compute(spec.checksum, bytes(frame[spec.checksum_from :]))
        frame += cs.to_bytes(self.cs_width, spec.checksum_order)
        n = len(self.start)
        body = bytes(frame[n:])
        if self.escape is not None:
            stuffed = bytearray()
            for b in body:
                if b in self.specials:
                    stuffed += bytes((self.escape, b ^ spec.escape_xor))
                else:
                    stuffed.append(b)
            body = bytes(stuffed)
        return self.start + body + self.end


class FrameParser:
    """Bytes in, checked frames out (see the module docstring). Counts live in ``counts``."""

    def __init__(self, spec: Frame) -> None:
        self.codec = FrameCodec(spec)
        self.spec = spec
        self.cap = _CAP_FRAMES * 2 * spec.max_length
        self._buf = bytearray()
        self.counts: Counter[str] = Counter()

    @property
    def buffered(self) -> int:
        """Raw bytes held for frames not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        """Append bytes from the line."""
        self._buf += data
        if len(self._buf) > self.cap:
            drop = len(self._buf) - self.cap
            del self._buf[:drop]
            self.counts["overflow_bytes"] += drop

    def idle(self) -> None:
        """The line went quiet: every incomplete frame in the buffer is torn; give them up.

        Complete frames (good or bad) stay for :meth:`next_frame`.
        """
        while True:
            start = self._buf.find(self.codec.start)
            if start < 0:
                if self._buf:
                    self._drop_garbage(len(self._buf))
                return
            if start > 0:
                self._drop_garbage(start)
            if self._try_head() is not None:
                return
            self.counts["torn"] += 1
            del self._buf[:1]

    def next_frame(self) -> ParsedFrame | None:
        """The next good frame, or None when more bytes are needed."""
        start = self.codec.start
        while True:
            at = self._buf.find(start)
            if at < 0:
                # Keep a tail that could be the beginning of the start bytes.
                keep = len(start) - 1
                if len(self._buf) > keep:
                    self._drop_garbage(len(self._buf) - keep)
                return None
            if at > 0:
                self._drop_garbage(at)
            result = self._try_head()
            if result is None:
                return None
            if isinstance(result, str):
                self.counts[result] += 1
                del self._buf[:1]  # resynchronise one byte later
                continue
            frame, used = result
            del self._buf[:used]
            self.counts["frames"] += 1
            return ParsedFrame(frame)

    def _drop_garbage(self, n: int) -> None:
        del self._buf[:n]
        self.counts["garbage_bytes"] += n

    def _try_head(self) -> tuple[bytes, int] | str | None:
        """Parse the frame at the head: (frame, raw bytes used), a reject reason, or None."""
        codec = self.codec
        spec = self.spec
        n_start = len(codec.start)
        frame, used, complete_at, ended = self._unescape(n_start)
        if isinstance(frame, str):
            return frame
        if spec.length_at is not None:
            lo, hi = spec.length_at, spec.length_at + spec.length_size
            if len(frame) < hi:
                return None
            total = int.from_bytes(frame[lo:hi], spec.length_order) + spec.length_adjust
            if not codec.min_length <= total <= spec.max_length or total <= hi:
                return "bad_length"
            if len(frame) < total:
                return None
            frame, used = frame[:total], complete_at[total - 1] if complete_at else total
            if codec.end and not frame.endswith(codec.end):
                return "bad_end"
            if not codec.checksum_ok(frame):
                return "checksum"
            return bytes(frame), used
        if codec.escape is not None:
            # With stuffing, the first raw end marker is the end of the frame.
            if not ended:
                return "too_long" if len(frame) >= spec.max_length else None
            if len(frame) > spec.max_length:
                return "too_long"
            if len(frame) < codec.min_length:
                # Two flags in a row: HDLC-style lines send them between frames.
                return "short"
            if not codec.checksum_ok(frame):
                return "checksum"
            return bytes(frame), used
        # No length field: the frame runs to its end marker. Without escaping, the marker may
        # also occur inside the data, so each occurrence is tried until the checksum fits.
        search_from = codec.min_length - len(codec.end)
        while True:
            at = frame.find(codec.end, search_from)
            if at < 0:
                if len(frame) >= spec.max_length:
                    return "too_long"
                return None
            total = at + len(codec.end)
            if total > spec.max_length:
                return "too_long"
            candidate = frame[:total]
            if codec.checksum_ok(candidate):
                return bytes(candidate), total
            search_from = at + 1

    def _unescape(self, n_start: int) -> tuple[bytearray | str, int, list[int], bool]:
        """The head frame unescaped as far as it has arrived.

        Returns (frame bytes, raw bytes scanned, raw end position of each frame byte, whether
        the end marker was reached); the positions are empty when the protocol does not stuff
        bytes. A new start byte inside a stuffed frame means the frame was torn: the reason
        ``torn`` comes back instead of the bytes.
        """
        codec = self.codec
        buf = self._buf
        limit = min(len(buf), 2 * self.spec.max_length + n_start)
        if codec.escape is None:
            return bytearray(buf[:limit]), limit, [], False
        out = bytearray(buf[:n_start])
        ends = list(range(1, n_start + 1))
        esc = codec.escape
        xor = self.spec.escape_xor
        end0 = codec.end[0] if codec.end else -1
        i = n_start
        while i < limit:
            b = buf[i]
            if b == esc:
                if i + 1 >= limit:
                    break
                out.append(buf[i + 1] ^ xor)
                i += 2
            elif b == end0 and codec.end and buf.startswith(codec.end, i):
                out += codec.end
                i += len(codec.end)
                ends.extend(i for _ in codec.end)
                return out, i, ends, True
            elif b == codec.start[0] and buf.startswith(codec.start, i):
                return "torn", i, ends, False
            else:
                out.append(b)
                i += 1
            ends.append(i)
        return out, i, ends, False
