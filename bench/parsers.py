"""Frames parsed per second, per parser (issue 3). Run: .venv/bin/python bench/parsers.py

Each parser turns a stream of wire bytes (or JSON payloads) into samples, the full path a
collector takes minus the I/O. Machines here are noisy, so each figure comes with a
baseline measured in the same run over the same bytes: the least work any parser of that
protocol must do (computing the frame checksums for the serial formats, unpacking the
registers for Modbus, plain JSON decoding for MQTT). The ratio is parser time / baseline
time; absolute rates are given for scale only.
"""

from __future__ import annotations

import gc
import json
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collectors.checksums import compute
from collectors.decode import FrameDecoder, ModbusPlan, MqttDecoder
from collectors.framing import FrameCodec, FrameParser
from collectors.profile import FramedProfile, ModbusProfile, MqttProfile, load_profile

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware_configs"
N = 20_000
REPEATS = 5


def best_of(fn: Callable[[], object]) -> float:
    """The best of REPEATS runs, in seconds (the least disturbed by other load)."""
    times = []
    for _ in range(REPEATS):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def framed(profile: FramedProfile, heads: list[bytes]) -> tuple[float, float]:
    codec = FrameCodec(profile.frame)
    wire = [codec.encode(h) for h in heads]
    stream = b"".join(wire)
    chunks = [stream[i : i + 64] for i in range(0, len(stream), 64)]  # as a UART delivers
    decoder = FrameDecoder(profile)
    spec = profile.frame

    def parse() -> None:
        parser = FrameParser(spec)
        n = 0
        for chunk in chunks:
            parser.feed(chunk)
            while (frame := parser.next_frame()) is not None:
                decoder.decode(frame.data)
                n += 1
        assert n == len(heads), n

    def baseline() -> None:
        for w in wire:
            compute(spec.checksum, w[spec.checksum_from : len(w) - codec.trailer])

    return best_of(parse), best_of(baseline)


def modbus(profile: ModbusProfile) -> tuple[float, float]:
    plan = ModbusPlan(profile)
    blocks = [struct.pack(">11H", *[(i * 7 + k) & 0x7 for k in range(11)]) for i in range(N)]

    def parse() -> None:
        for block in blocks:
            plan.decode([block])

    def baseline() -> None:
        for block in blocks:
            struct.unpack(">11H", block)

    return best_of(parse), best_of(baseline)


def mqtt(profile: MqttProfile) -> tuple[float, float]:
    decoder = MqttDecoder(profile)
    payloads = [
        json.dumps(
            {
                "ts": 1795300000000 + i,
                "zone": "AB"[i % 2],
                "occupied": i % 3 == 0,
                "dwell": i % 600,
                "cls": "car",
                "plate": "浙A12345",
                "snapshot": f"s/{i}.jpg",
            }
        ).encode()
        for i in range(N)
    ]

    def parse() -> None:
        for p in payloads:
            decoder.decode("aibox/box-01/firelane", p)

    def baseline() -> None:
        for p in payloads:
            msgspec.json.decode(p)

    return best_of(parse), best_of(baseline)


def main() -> None:
    lane = load_profile(FIRMWARE / "fire_lane" / "lk-fl200.yaml")
    gate = load_profile(FIRMWARE / "gate" / "jt-gc4.yaml")
    elevator = load_profile(FIRMWARE / "elevator" / "hx-em100.yaml")
    camera = load_profile(FIRMWARE / "fire_lane" / "aibox-lane.yaml")
    assert isinstance(lane, FramedProfile)
    assert isinstance(gate, FramedProfile)
    assert isinstance(elevator, ModbusProfile)
    assert isinstance(camera, MqttProfile)
    lane_heads = [
        bytes([0xAA, 0x55, 0, 1 + i % 4, 1, i % 2, (i >> 8) & 0xFF, i & 0xFF, i % 4, 0])
        for i in range(N)
    ]
    # Gate frames with passages counters that often contain 0x7E/0x7D (stuffed bytes).
    gate_heads = [
        bytes([0x7E, 1, 0x10, i & 0x7, 0]) + (0x7E7D0000 + i).to_bytes(4, "little")
        for i in range(N)
    ]
    rows = [
        ("lk-fl200 (framed, sum8, length field)", *framed(lane, lane_heads), "checksums only"),
        (
            "jt-gc4 (framed, HDLC stuffing, CRC-16/CCITT)",
            *framed(gate, gate_heads),
            "checksums only",
        ),
        ("hx-em100 (Modbus, 11 registers)", *modbus(elevator), "struct.unpack only"),
        ("aibox-lane (MQTT JSON)", *mqtt(camera), "msgspec JSON decode only"),
    ]
    print(f"# parsers: {N} frames each, best of {REPEATS}, Python {sys.version.split()[0]}")
    print("| parser | frames/s | baseline | baseline frames/s | ratio (parser time / baseline) |")
    print("| --- | ---: | --- | ---: | ---: |")
    for name, t_parse, t_base, what in rows:
        print(
            f"| {name} | {N / t_parse:,.0f} | {what} | {N / t_base:,.0f} "
            f"| {t_parse / t_base:.1f}x |"
        )


if __name__ == "__main__":
    main()
