"""The frame parser: round trips, any chunking, resynchronisation, and no exception ever."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.framing import FrameCodec, FrameParser
from collectors.profile import FramedProfile
from tests.collectors.profiles import GATE, LANE, gate_status, lane_status

PROFILES = [LANE, GATE]


def frames_of(parser: FrameParser) -> list[bytes]:
    out = []
    while (frame := parser.next_frame()) is not None:
        out.append(frame.data)
    return out


def lane_heads() -> st.SearchStrategy[bytes]:
    return st.builds(
        lane_status,
        st.integers(0, 255),
        st.integers(0, 1),
        st.integers(0, 0xFFFF),
        st.integers(0, 3),
        st.integers(0, 255),
    )


def gate_heads() -> st.SearchStrategy[bytes]:
    # Any payload bytes, including the flag and escape values that must be stuffed.
    return st.binary(min_size=1, max_size=40).map(lambda body: b"\x7e" + body)


def heads_for(profile: FramedProfile) -> st.SearchStrategy[bytes]:
    return lane_heads() if profile is LANE else gate_heads()


@given(st.data())
def test_round_trip(data: st.DataObject) -> None:
    for profile in PROFILES:
        codec = FrameCodec(profile.frame)
        head = data.draw(heads_for(profile))
        parser = FrameParser(profile.frame)
        parser.feed(codec.encode(head))
        [frame] = frames_of(parser)
        # The unescaped frame is the head (its length field filled in), checksum, end.
        assert len(frame) == len(head) + codec.trailer
        skip = set(range(2, 3)) if profile is LANE else set()
        assert [b for i, b in enumerate(frame[: len(head)]) if i not in skip] == [
            b for i, b in enumerate(head) if i not in skip
        ]
        assert codec.checksum_ok(frame)


@given(st.data(), st.lists(st.integers(1, 7), min_size=1, max_size=50))
def test_whole_or_in_pieces_gives_the_same_frames(data: st.DataObject, cuts: list[int]) -> None:
    for profile in PROFILES:
        codec = FrameCodec(profile.frame)
        heads = data.draw(st.lists(heads_for(profile), min_size=1, max_size=5))
        stream = b"".join(codec.encode(h) for h in heads)
        whole = FrameParser(profile.frame)
        whole.feed(stream)
        expected = frames_of(whole)
        assert len(expected) == len(heads)
        pieces = FrameParser(profile.frame)
        got: list[bytes] = []
        i = 0
        for cut in cuts * (len(stream) // len(cuts) + 1):
            if i >= len(stream):
                break
            pieces.feed(stream[i : i + cut])
            got.extend(frames_of(pieces))
            i += cut
        assert got == expected


@settings(max_examples=300)
@given(st.binary(max_size=2000), st.sampled_from(PROFILES))
def test_random_bytes_never_raise_and_the_buffer_stays_bounded(
    junk: bytes, profile: FramedProfile
) -> None:
    parser = FrameParser(profile.frame)
    for i in range(0, len(junk), 97):
        parser.feed(junk[i : i + 97])
        frames_of(parser)
        parser.idle()
        frames_of(parser)
        assert parser.buffered <= parser.cap


@given(st.binary(max_size=60), st.data())
def test_garbage_before_a_frame_costs_nothing(junk: bytes, data: st.DataObject) -> None:
    for profile in PROFILES:
        codec = FrameCodec(profile.frame)
        head = data.draw(heads_for(profile))
        good = codec.encode(head)
        parser = FrameParser(profile.frame)
        parser.feed(junk)
        parser.idle()  # the line went quiet after the junk
        frames_of(parser)
        parser.feed(good)
        got = frames_of(parser)
        assert got[-1:] == [decode_alone(profile, good)]


def decode_alone(profile: FramedProfile, wire: bytes) -> bytes:
    parser = FrameParser(profile.frame)
    parser.feed(wire)
    [frame] = frames_of(parser)
    return frame


def test_torn_frame_then_good_frame_without_waiting_for_more() -> None:
    codec = FrameCodec(LANE.frame)
    first = codec.encode(lane_status(1, 1, 12, 1))
    second = codec.encode(lane_status(1, 0, 0, 0))
    parser = FrameParser(LANE.frame)
    parser.feed(first[:6])  # the sensor reset mid-frame
    parser.feed(second)
    # The torn frame's length field claims bytes that belong to the next frame: the checksum
    # fails, the parser skips ahead and finds the good frame.
    assert frames_of(parser) == [second]
    assert parser.counts["checksum"] + parser.counts["bad_length"] >= 1


def test_torn_frame_at_the_end_is_given_up_when_the_line_goes_quiet() -> None:
    codec = FrameCodec(LANE.frame)
    good = codec.encode(lane_status(2, 1, 30, 1))
    parser = FrameParser(LANE.frame)
    parser.feed(good[:7])
    assert frames_of(parser) == []
    parser.idle()
    assert parser.counts["torn"] == 1
    parser.feed(good)
    assert frames_of(parser) == [good]


def test_stuffed_frame_torn_by_a_new_flag() -> None:
    codec = FrameCodec(GATE.frame)
    good = codec.encode(gate_status(1, 0b11, 0, 0x7E7D))
    parser = FrameParser(GATE.frame)
    parser.feed(good[:5] + good)
    [frame] = frames_of(parser)
    assert frame[:3] == bytes([0x7E, 1, 0x10])
    # The passages value contained both special bytes: they were stuffed on the wire.
    assert b"\x7d\x5e" in good
    assert b"\x7d\x5d" in good


def test_checksum_error_is_counted_and_the_next_frame_survives() -> None:
    codec = FrameCodec(GATE.frame)
    bad = bytearray(codec.encode(gate_status(1, 1, 0, 5)))
    bad[3] ^= 0x01
    good = codec.encode(gate_status(1, 0, 0, 6))
    parser = FrameParser(GATE.frame)
    parser.feed(bytes(bad) + good)
    frames = frames_of(parser)
    assert len(frames) == 1
    assert frames[0][3] == 0
    assert parser.counts["checksum"] == 1
