"""Every construct of the profile language, fed as real bytes through one running gateway
(issue 14): two Modbus terminals answering from pymodbus's own server on a pty, a framed gate
controller writing to another pty, and an MQTT box publishing JSON on mosquitto. The profiles
below are written for this test, one construct per point, and the items the gateway records
are checked exactly (values worked out by hand beside each input).

And each decode failure an outside user met at run time is now refused by the validator, and
the gateway refuses the same profile at start, before it reads a byte."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import serial
import yaml
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from collectors.framing import FrameCodec
from collectors.profile import FramedProfile, load_profile
from tests.conftest import ROOT, Broker, run_linli, start_pty_pair

pytestmark = pytest.mark.functional

COMMON = "profile: 1\nmaker: Test\nmodel: grammar\nreport_interval_s: 0.3\nheartbeat_s: 3600\n"

#: Elevator terminal A: bits (bool, set/clear, invert, event), two bit groups of one word,
#: offset, a low-word-first u32, an f32 with a deadband, BCD fault codes, byte-swapped text.
GM_A = (
    COMMON
    + """\
protocol: modbus_rtu
id: gm-a
kind: elevator
serial: {parity: N}
timeout_ms: 200
points:
  - address: 0
    bits:
      0: {field: running}
      1: {field: door, set: open, clear: closed}
      3: {event: trapped}
      4: {field: occupied, invert: true}
  - {address: 1, mask: 0x0003, field: direction, enum: {0: none, 1: up, 2: down}}
  - {address: 1, mask: 0x0F00, field: service_mode,
     enum: {0: normal, 1: inspection, 3: fire_return}}
  - {address: 2, offset: -3, field: floor}
  - {address: 3, type: u32, word_order: little, field: trips}
  - {address: 5, type: f32, field: run_hours, deadband: 0.5}
  - {address: 7, type: bcd16, codes: {3: door_open_fault, 10: overtravel_bottom}}
  - {address: 8, type: string, length: 4, byte_order: little, field: power,
     enum: {AC: mains, BAT: battery}}
"""
)

#: Elevator terminal B: signed 16, unsigned 64, a scaled i32, BCD 32, ASCII and GBK text.
GM_B = (
    COMMON
    + """\
protocol: modbus_rtu
id: gm-b
kind: elevator
serial: {parity: N}
timeout_ms: 200
points:
  - {address: 0, type: i16, field: floor}
  - {address: 1, type: u64, field: trips}
  - {address: 5, type: i32, scale: 0.25, field: run_hours}
  - {address: 7, type: bcd32, codes: {1: safety_circuit_open}}
  - {address: 9, type: string, length: 2, field: direction, enum: {UP: up, DN: down, "--": none}}
  - {address: 10, type: string, length: 4, encoding: gbk, field: door,
     enum: {开门: open, 关门: closed}}
"""
)

#: A gate controller's frames: inverted bits, text to a name, BCD 32, a masked fault code,
#: ASCII digits to a number, and a one-off event whose data are a number and GBK text.
GM_GATE = (
    COMMON
    + """\
protocol: framed_serial
id: gm-gate
kind: gate
serial: {parity: N}
frame: {start: AA 55, length_at: 2, checksum: crc16_modbus, checksum_from: 2, address_at: 3,
        max_length: 48}
messages:
  - name: status
    when_byte: 4
    when_value: 0x01
    points:
      - {byte: 5, bits: {0: {field: open}, 1: {field: locked, invert: true}}}
      - {byte: 6, type: string, length: 4, field: mode,
         enum: {NORM: normal, HOLD: held_open, FIRE: fire_release}}
      - {byte: 10, type: bcd32, field: passages}
      - {byte: 14, mask: 0xF0, codes: {1: device_fault}}
  - name: counter
    when_byte: 4
    when_value: 0x03
    points:
      - {byte: 5, type: string, length: 8, field: passages}
  - name: alarm
    when_byte: 4
    when_value: 0x02
    instant: invalid_attempts
    points:
      - {byte: 5, field: tries}
      - {byte: 6, type: string, length: 8, encoding: gbk, field: reader}
"""
)

#: A camera box: ISO-8601 times (with an offset, in UTC, and without: the profile's zone),
#: epoch seconds, a JSON path with an index, true values, an enum, scale with a deadband,
#: start/end events with data, and an instant event.
GM_BOX = (
    COMMON
    + """\
protocol: mqtt
id: gm-box
kind: elevator
topics:
  - pattern: gm/{box}/car/{car}
    address: topic:car
    time: ts
    time_unit: iso8601
    fields:
      occupied: {path: people, true: ["yes"]}
      floor: {path: pos.floor}
      direction: {path: pos.dir, enum: {U: up, D: down, S: none}}
      run_hours: {path: stats.q, scale: 0.25, deadband: 1.0}
    events:
      - {event: ebike_detected, path: "objects[0].cls", start: [ebike], end: [none],
         data: {picture: snap}}
      - {event: alarm_button, path: button, instant: [pressed], data: {picture: snap}}
  - pattern: gm/{box}/beat
    address: json:car
    time: epoch
    time_unit: s
    fields:
      floor: {path: floor}
"""
)


def f32(x: float) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    return [hi, lo]


def text_regs(raw: bytes) -> list[int]:
    """Registers holding ``raw`` (padded with NUL), two bytes each, first byte high."""
    raw += b"\0" * (len(raw) % 2)
    return [raw[i] << 8 | raw[i + 1] for i in range(0, len(raw), 2)]


def swapped(raw: bytes) -> list[int]:
    """Text stored byte-swapped in each register (``byte_order: little``)."""
    return [(r & 0xFF) << 8 | r >> 8 for r in text_regs(raw)]


def regs_a(
    status: int, dir_mode: int, floor_raw: int, trips: int, hours: float, code: int, power: bytes
) -> list[int]:
    return [status, dir_mode, floor_raw, trips & 0xFFFF, trips >> 16, *f32(hours), code,
            *swapped(power.ljust(4, b"\0"))]  # fmt: skip


def regs_b(
    floor: int, trips: int, quarter_hours: int, code: int, arrow: bytes, door: str
) -> list[int]:
    return [floor & 0xFFFF, *struct.unpack(">4H", struct.pack(">Q", trips)),
            *struct.unpack(">2H", struct.pack(">i", quarter_hours)), code >> 16, code & 0xFFFF,
            *text_regs(arrow), *text_regs(door.encode("gbk"))]  # fmt: skip


def site(tmp: Path, broker: Broker, modbus_port: str, gate_port: str, profiles: Path) -> Path:
    doc = {
        "version": 1,
        "gateway": "gw-1",
        "community": "c-test",
        "state_dir": str(tmp / "gw-state"),
        "uplink": {"url": broker.url},
        "batch": {"max_age_ms": 200},
        "health_interval_s": 1,
        "profile_dirs": [str(profiles)],
        "collectors": [
            {"type": "modbus", "name": "rs485-1", "port": modbus_port,
             "serial": {"baudrate": 9600, "parity": "N"},
             "devices": [{"id": "el-a", "unit": 1, "profile": "gm-a"},
                         {"id": "el-b", "unit": 2, "profile": "gm-b"}]},
            {"type": "serial", "name": "rs485-2", "port": gate_port, "profile": "gm-gate",
             "devices": [{"id": "gt-1", "address": 7}]},
            {"type": "mqtt", "name": "box", "url": broker.url,
             "devices": [{"id": "el-m", "profile": "gm-box", "address": "C1"}]},
        ],
    }  # fmt: skip
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


def recorded(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line)["item"] for line in record.read_text().splitlines() if line]


async def until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def of(items: list[dict[str, Any]], dev: str, *, with_t: bool = False) -> list[Any]:
    """A device's items in order: (fields) for readings, (event, state, data) for events."""
    out: list[Any] = []
    for it in items:
        if it["dev"] != dev:
            continue
        row: Any = (
            it["fields"] if "fields" in it else (it["event"], it["state"], it.get("data", {}))
        )
        out.append((it["t"], row) if with_t else row)
    return out


def stray(item: dict[str, Any]) -> int | None:
    """The gate line's stray-byte count in a health item."""
    fields = item.get("fields", {}) if item["dev"] == "gw-1" else {}
    return fields.get("bus.rs485-2.stray_bytes")


def ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).timestamp() * 1000)


async def test_every_construct_through_a_running_gateway(tmp_path: Path, mosquitto: Broker) -> None:
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    for name, text in {"gm-a": GM_A, "gm-b": GM_B, "gm-gate": GM_GATE, "gm-box": GM_BOX}.items():
        (profiles / f"{name}.yaml").write_text(text)
    modbus_line = start_pty_pair(tmp_path, "modbus")
    gate_line = start_pty_pair(tmp_path, "gate")
    regs = {
        # idle at floor 5, inspection, going up; 70001 trips; 100 h; no fault; mains power
        1: regs_a(0b00000, 0x0101, 8, 70001, 100.0, 0, b"AC"),
        # basement 2, 5e9 trips, 400 quarter hours, no fault, going down, doors closed
        2: regs_b(-2, 5_000_000_000, 400, 0, b"DN", "关门"),
    }

    async def serve(unit: int, fc: int, start: int, addr: int, count: int,
                    current: list[int], sv: object) -> None:  # fmt: skip
        current[:] = regs[unit][start : start + len(current)]

    def device(unit: int) -> SimDevice:
        async def action(*args: Any) -> None:
            await serve(unit, *args)

        return SimDevice(
            id=unit,
            simdata=[SimData(0, count=16, values=0, datatype=DataType.REGISTERS)],
            action=action,
        )

    terminals = ModbusSerialServer([device(1), device(2)], port=modbus_line.device, baudrate=9600)
    await terminals.serve_forever(background=True)
    gate = serial.Serial(gate_line.device, baudrate=9600, timeout=1)
    gate_profile = load_profile(profiles / "gm-gate.yaml")
    assert isinstance(gate_profile, FramedProfile)
    codec = FrameCodec(gate_profile.frame)

    def frame(msg: int, body: bytes) -> bytes:
        return codec.encode(bytes([0xAA, 0x55, 0, 7, msg]) + body)

    record = tmp_path / "produced.jsonl"
    config = site(tmp_path, mosquitto, modbus_line.host, gate_line.host, profiles)
    gateway = subprocess.Popen(
        [sys.executable, "-c", "from server.cli import main; import sys; sys.exit(main())",
         "gateway", "--config", str(config), "--record", str(record)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip

    def count(dev: str) -> int:
        return len(of(recorded(record), dev))

    try:
        await until(lambda: count("el-a") >= 1 and count("el-b") >= 1, "first polls")
        # A: trapped, running, doors open, nobody inside (bit 4 set), fault 10 (BCD 0x0010),
        #    run hours 100.25 (inside the deadband, but the reading goes out for the rest).
        regs[1] = regs_a(0b11011, 0x0101, 8, 70001, 100.25, 0x0010, b"AC")
        # B: floor -1, fault 1 (BCD 32), going up, doors open.
        regs[2] = regs_b(-1, 5_000_000_000, 400, 1, b"UP", "开门")
        await until(lambda: count("el-a") >= 4 and count("el-b") >= 3, "second state")
        # A: only the run hours move, by 0.25 from the last reported: no reading ...
        regs[1] = regs_a(0b11011, 0x0101, 8, 70001, 100.5, 0x0010, b"AC")
        await asyncio.sleep(1.2)  # four polls
        # ... then by 0.75 from the last reported (100.25): a reading.
        regs[1] = regs_a(0b11011, 0x0101, 8, 70001, 101.0, 0x0010, b"AC")
        await until(lambda: count("el-a") >= 5, "the reading past the deadband")
        # A: released; on battery; fire return, going down (a service-mode change).
        regs[1] = regs_a(0b10000, 0x0302, 8, 70001, 101.0, 0, b"BAT")
        await until(lambda: count("el-a") >= 9, "release")

        # The gate: line noise, then a status frame: closed (bit 0 clear), locked (bit 1
        # clear, inverted), "NORM", BCD 0x00001234 passages, fault nibble 0.
        gate.write(b"\x00\x13noise" + frame(1, b"\x00NORM\x00\x00\x12\x34\x00"))
        gate.write(frame(2, bytes([5]) + "东门1号".encode("gbk") + b"\x00"))
        gate.write(frame(3, b"00001240"))
        # open, unlocked, held open, 1241 passages, fault 1 in the high nibble (0x1F).
        gate.write(frame(1, b"\x03HOLD\x00\x00\x12\x41\x1f"))
        await until(lambda: count("gt-1") >= 5, "gate frames")
        # The line noise was seen and counted (the health item's bus counters), not decoded.
        await until(lambda: any(stray(it) == 7 for it in recorded(record)), "stray bytes")

        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="gm-box") as box:

            def car(ts: str, people: str, floor: int, q: int, cls: str, **more: Any) -> bytes:
                body = {"ts": ts, "people": people, "pos": {"floor": floor, "dir": "U"},
                        "stats": {"q": q}, "objects": [{"cls": cls}], **more}  # fmt: skip
                return json.dumps(body).encode()

            topic = "gm/box1/car/C1"
            await box.publish(topic, car("2026-11-22T14:03:05+08:00", "yes", 3, 400, "none",
                                         snap="s1.jpg"), qos=1)  # fmt: skip
            await box.publish(topic, car("2026-11-22T14:03:06", "yes", 3, 402, "ebike",
                                         snap="s2.jpg"), qos=1)  # fmt: skip
            await box.publish(topic, car("2026-11-22T06:03:07Z", "no", 3, 402, "none",
                                         snap="s3.jpg", button="pressed"), qos=1)  # fmt: skip
            await box.publish(
                "gm/box1/beat", json.dumps({"car": "C1", "epoch": 1795300000, "floor": 4}), qos=1
            )
            await until(lambda: count("el-m") >= 6, "box messages")
    finally:
        gateway.terminate()
        out, _ = gateway.communicate(timeout=30)
        gate.close()
        await terminals.shutdown()  # type: ignore[no-untyped-call]
        for line in (modbus_line, gate_line):
            line.proc.terminate()
            line.proc.wait(timeout=10)
    assert gateway.returncode == 0, out
    items = recorded(record)

    a = {"running": False, "door": "closed", "occupied": True, "direction": "up",
         "service_mode": "inspection", "floor": 5, "trips": 70001, "run_hours": 100.0,
         "power": "mains"}  # fmt: skip
    assert of(items, "el-a") == [
        a,
        {**a, "running": True, "door": "open", "occupied": False, "run_hours": 100.25},
        ("trapped", "start", {}),
        ("overtravel_bottom", "start", {"code": 10}),
        {**a, "running": True, "door": "open", "occupied": False, "run_hours": 101.0},
        ("service_mode_changed", "instant", {"from": "inspection", "to": "fire_return"}),
        {**a, "occupied": False, "direction": "down", "service_mode": "fire_return",
         "run_hours": 101.0, "power": "battery"},
        ("trapped", "end", {}),
        ("overtravel_bottom", "end", {"code": 10}),
    ]  # fmt: skip
    b = {"floor": -2, "trips": 5_000_000_000, "run_hours": 100.0, "direction": "down",
         "door": "closed"}  # fmt: skip
    assert of(items, "el-b") == [
        b,
        {**b, "floor": -1, "direction": "up", "door": "open"},
        ("safety_circuit_open", "start", {"code": 1}),
    ]
    assert of(items, "gt-1") == [
        {"open": False, "locked": True, "mode": "normal", "passages": 1234},
        ("invalid_attempts", "instant", {"tries": 5, "reader": "东门1号"}),
        {"passages": 1240},
        {"open": True, "locked": False, "mode": "held_open", "passages": 1241},
        ("device_fault", "start", {"code": 1}),
    ]
    m = {"occupied": True, "floor": 3, "direction": "up", "run_hours": 100.0}
    t1 = ms("2026-11-22T14:03:05+08:00")
    assert of(items, "el-m", with_t=True) == [
        (t1, m),
        (t1 + 1000, ("ebike_detected", "start", {"picture": "s2.jpg"})),
        (t1 + 2000, {**m, "occupied": False, "run_hours": 100.5}),
        (t1 + 2000, ("ebike_detected", "end", {"picture": "s3.jpg"})),
        (t1 + 2000, ("alarm_button", "instant", {"picture": "s3.jpg"})),
        (1_795_300_000_000, {"floor": 4}),
    ]


def test_what_once_failed_at_run_time_is_refused_by_the_validator_and_the_gateway(
    tmp_path: Path, mosquitto: Broker
) -> None:
    """Issue 14 found profiles that validated and then failed on every message: an enum
    into a bool field (each value dropped as "does not fit"), bits into named fields, and
    ISO-8601 device times (falling back to arrival time). The first is now refused by
    ``firmware validate`` and, with the same words, by the gateway at start (it reads no
    input and records nothing); the fixed profile decodes the same captured message. The
    other two are now part of the language (driven through the gateway above)."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    bad = GM_BOX.replace(
        'occupied: {path: people, true: ["yes"]}',
        'occupied: {path: people, enum: {"yes": "true", "no": "false"}}',
    )
    (profiles / "gm-box.yaml").write_text(bad)
    problem = (
        "gm-box.yaml:15: topics[0].fields.occupied.enum: elevator field 'occupied' is "
        "bool; enum maps to names: list the values meaning true with true: [...]"
    )
    done = run_linli("firmware", "validate", str(profiles))
    assert done.returncode == 2
    assert problem in done.stderr, done.stderr

    gm_line = start_pty_pair(tmp_path, "unused")  # the site needs its ports to exist
    config = site(tmp_path, mosquitto, gm_line.host, gm_line.host, profiles)
    record = tmp_path / "produced.jsonl"
    try:
        started = run_linli("gateway", "--config", str(config), "--record", str(record))
    finally:
        gm_line.proc.terminate()
        gm_line.proc.wait(timeout=10)
    assert started.returncode == 2, started.stdout + started.stderr
    assert problem in started.stderr, started.stderr
    assert not recorded(record)

    (profiles / "gm-box.yaml").write_text(GM_BOX)
    capture = tmp_path / "box.txt"
    capture.write_text('gm/box1/car/C1 {"ts": "2026-11-22T14:03:05+08:00", "people": "yes"}\n')
    tried = run_linli("firmware", "try", str(profiles / "gm-box.yaml"), "--input", str(capture))
    assert tried.returncode == 0, tried.stderr
    assert [json.loads(line) for line in tried.stdout.splitlines()] == [
        {"t": ms("2026-11-22T14:03:05+08:00"), "dev": "dev@C1", "kind": "elevator",
         "fields": {"occupied": True}}
    ]  # fmt: skip
