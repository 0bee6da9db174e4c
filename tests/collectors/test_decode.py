"""Profiles compiled into decoders: exact values, and any input gives valid wire items."""

from __future__ import annotations

import struct

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.decode import (
    FrameDecoder,
    ModbusPlan,
    ModbusRead,
    MqttDecoder,
    MqttMessage,
    pack_bits,
)
from collectors.framing import FrameCodec
from collectors.local_mqtt import MqttDevice, MqttSession
from collectors.points import Sample, decode_raw
from collectors.profile import Message, ModbusProfile, MqttEvent
from collectors.tracker import DeviceTracker
from collectors.wire import Envelope, Event, Item, Reading, decode_envelope, encode_envelope
from tests.collectors.profiles import (
    CAMERA_EBIKE,
    CAMERA_LANE,
    ELEVATOR,
    ELEVATOR_PACKED,
    GATE,
    LANE,
    gate_status,
    lane_status,
)

T0 = 1_795_300_000_000


def elevator_registers(**over: int) -> list[int]:
    regs = [0] * 11
    for name, value in over.items():
        regs[int(name[1:])] = value
    return regs


def assert_wire_valid(items: list[Item]) -> None:
    """Every item a decoder produces passes the server's own contract check."""
    if items:
        payload = encode_envelope(Envelope("gw-1", "c-1", 0, T0, items))
        assert decode_envelope(payload).items == items


def test_elevator_plan_is_one_read_of_eleven_registers() -> None:
    assert ModbusPlan(ELEVATOR).reads == [ModbusRead("holding", 0, 11)]


def test_elevator_registers_decode_to_fields_and_events() -> None:
    plan = ModbusPlan(ELEVATOR)
    regs = elevator_registers(
        r0=0b0001011,
        r1=0xFFFE,
        r2=2,
        r3=2,
        r4=1,
        r5=4,
        r6=1,
        r8=70000 & 0xFFFF,
        r7=70000 >> 16,
        r9=0,
        r10=12345,
    )
    sample = plan.decode([ModbusPlan.registers_to_bytes(regs)])
    assert sample.fields == {
        "running": True,
        "door_zone": True,
        "occupied": False,
        "floor": -2,
        "direction": "down",
        "door": "open",
        "service_mode": "normal",
        "power": "battery",
        "trips": 70000,
        "run_hours": 1234.5,
    }
    assert sample.active["trapped"] == {}
    assert sample.active["alarm_button"] is None
    assert sample.active["stopped_outside_door_zone"] == {"code": 4}
    assert sample.active["door_close_fault"] is None
    assert sample.problems == []


def test_unknown_enum_and_fault_code_are_problems_not_exceptions() -> None:
    plan = ModbusPlan(ELEVATOR)
    sample = plan.decode([ModbusPlan.registers_to_bytes(elevator_registers(r2=9, r4=42, r5=77))])
    assert "direction" not in sample.fields
    assert sample.fields["service_mode"] == "unknown"  # the profile's enum_default
    assert any("code 77" in p for p in sample.problems)
    assert any("direction value 9" in p for p in sample.problems)


def test_tracker_reports_changes_edges_heartbeats_and_offline() -> None:
    plan = ModbusPlan(ELEVATOR)
    tracker = DeviceTracker("el-1", "elevator", heartbeat_ms=60_000, offline_after=3)

    def poll(t: int, **regs: int) -> list[Item]:
        sample = plan.decode([ModbusPlan.registers_to_bytes(elevator_registers(**regs))])
        return tracker.sample(t, sample)

    first = poll(T0, r0=0b1000, r4=1)
    assert [type(i).__name__ for i in first] == ["Reading", "Event"]
    assert first[1] == Event(T0, "el-1", "elevator", "trapped", "start", {})
    assert poll(T0 + 1000, r0=0b1000, r4=1) == []  # nothing changed
    assert [i.event for i in poll(T0 + 2000, r0=0, r4=1) if isinstance(i, Event)] == ["trapped"]
    assert tracker.miss(T0 + 3000) == []
    assert tracker.miss(T0 + 4000) == []
    [offline] = tracker.miss(T0 + 5000)
    assert (offline.event, offline.state) == ("terminal_offline", "start")  # type: ignore[union-attr]
    assert tracker.miss(T0 + 6000) == []  # reported once
    back = poll(T0 + 7000, r0=0, r4=1)
    assert back == [Event(T0 + 7000, "el-1", "elevator", "terminal_offline", "end", {})]
    [beat] = poll(T0 + 7000 + 60_000, r0=0, r4=1)
    assert isinstance(beat, Reading)  # the heartbeat: unchanged values, sent anyway


def test_fault_code_change_ends_one_event_and_starts_the_next() -> None:
    plan = ModbusPlan(ELEVATOR)
    tracker = DeviceTracker("el-1", "elevator", heartbeat_ms=60_000)
    regs = ModbusPlan.registers_to_bytes
    tracker.sample(T0, plan.decode([regs(elevator_registers(r5=2))]))
    items = tracker.sample(T0 + 1, plan.decode([regs(elevator_registers(r5=3))]))
    events = [(i.event, i.state, i.data) for i in items if isinstance(i, Event)]
    assert events == [
        ("door_close_fault", "end", {"code": 2}),
        ("door_open_fault", "start", {"code": 3}),
    ]


def test_pack_bits_is_lsb_first() -> None:
    assert pack_bits([True, False, False, False, False, False, False, False, True]) == b"\x01\x01"


@settings(max_examples=300)
@given(st.lists(st.integers(0, 0xFFFF), min_size=0, max_size=14))
def test_any_registers_give_valid_items(regs: list[int]) -> None:
    plan = ModbusPlan(ELEVATOR)
    tracker = DeviceTracker("el-1", "elevator", heartbeat_ms=1)
    sample = plan.decode([struct.pack(f">{len(regs)}H", *regs)])
    assert_wire_valid(tracker.sample(T0, sample))


def test_lane_frame_decodes() -> None:
    codec = FrameCodec(LANE.frame)
    wire = codec.encode(lane_status(3, 1, 312, 1, fault=1))
    decoded = FrameDecoder(LANE).decode(wire)
    assert decoded is not None
    address, message, sample = decoded
    assert (address, message) == (3, "status")
    assert sample.fields == {"occupied": True, "dwell_s": 312.0, "object": "vehicle"}
    assert sample.active == {"sensor_fault": {}}


def test_gate_frames_decode_including_an_instant_event() -> None:
    codec = FrameCodec(GATE.frame)
    decoder = FrameDecoder(GATE)
    status = decoder.decode(bytes(_unescape(codec, gate_status(2, 0b00101, 0, 123456))))
    assert status is not None
    assert status[0] == 2
    assert status[2].fields == {"open": True, "locked": False, "mode": "normal", "passages": 123456}
    assert status[2].active["forced_open"] == {}
    attempts = decoder.decode(_unescape(codec, bytes([0x7E, 2, 0x21, 6])))
    assert attempts is not None
    assert attempts[2].instants == [("invalid_attempts", {"count": 6})]


def _unescape(codec: FrameCodec, head: bytes) -> bytes:
    from collectors.framing import FrameParser  # noqa: PLC0415

    parser = FrameParser(codec.spec)
    parser.feed(codec.encode(head))
    frame = parser.next_frame()
    assert frame is not None
    return frame.data


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_any_frame_bytes_give_valid_items(frame: bytes) -> None:
    for profile in (LANE, GATE):
        decoded = FrameDecoder(profile).decode(frame)
        if decoded is not None:
            tracker = DeviceTracker("d-1", profile.kind, heartbeat_ms=1)
            assert_wire_valid(tracker.sample(T0, decoded[2]))


def test_camera_lane_message() -> None:
    payload = msgspec.json.encode(
        {
            "ts": T0,
            "zone": "B",
            "occupied": True,
            "dwell": 312,
            "cls": "car",
            "plate": "浙A12345",
            "snapshot": "snap/b.jpg",
        }
    )
    message = MqttDecoder(CAMERA_LANE).decode("aibox/box-01/firelane", payload)
    assert not isinstance(message, str)
    assert message is not None
    assert (message.address, message.t) == ("B", T0)
    assert message.sample.fields == {
        "occupied": True,
        "dwell_s": 312.0,
        "object": "vehicle",
        "evidence": "snap/b.jpg",
    }


def test_a_box_with_an_unset_clock_gets_the_arrival_time() -> None:
    session = MqttSession([MqttDevice("fl-2", CAMERA_LANE, "B")], started_t=T0)
    body = {"ts": 0, "zone": "B", "occupied": False}  # 1970: the box lost its clock
    [reading] = session.handle(T0 + 42, "aibox/box-01/firelane", msgspec.json.encode(body))
    assert reading == Reading(T0 + 42, "fl-2", "fire_lane", {"occupied": False})
    assert_wire_valid([reading])


def test_ebike_session_start_end_with_snapshot() -> None:
    session = MqttSession([MqttDevice("el-2-1", CAMERA_EBIKE, "cam-3")], started_t=T0)
    topic = "aibox/box-02/elevator/cam-3/ebike"

    def say(state: str, ts: int) -> list[Item]:
        body = {"ts": ts, "state": state, "confidence": 0.91, "snapshot": f"s/{ts}.jpg"}
        return session.handle(T0, topic, msgspec.json.encode(body))

    [start] = say("enter", 1_795_300_000)
    assert start == Event(
        1_795_300_000_000,
        "el-2-1",
        "elevator",
        "ebike_detected",
        "start",
        {"snapshot": "s/1795300000.jpg", "confidence": 0.91},
    )
    assert say("enter", 1_795_300_001) == []  # the same detection, repeated
    [end] = say("leave", 1_795_300_030)
    assert (end.event, end.state) == ("ebike_detected", "end")  # type: ignore[union-attr]
    assert session.handle(T0, "aibox/box-02/elevator/cam-9/ebike", b"{}") == []
    assert session.handle(T0, topic, b"not json") == []
    assert session.counts["refused"] == 1


@settings(max_examples=300)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
        ),
        max_leaves=20,
    ),
    st.dictionaries(
        st.sampled_from(["ts", "zone", "occupied", "dwell", "cls", "snapshot", "state"]),
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    ),
    st.binary(max_size=64),
)
def test_any_json_or_bytes_give_valid_items(
    doc: object, shaped: dict[str, object], raw: bytes
) -> None:
    devices = [
        MqttDevice("fl-2", CAMERA_LANE, "B"),
        MqttDevice("el-2-1", CAMERA_EBIKE, "cam-3"),
    ]
    session = MqttSession(devices, started_t=T0)
    shaped = {**shaped, "zone": "B"}
    for topic in ("aibox/x/firelane", "aibox/x/elevator/cam-3/ebike"):
        for payload in (msgspec.json.encode(doc), msgspec.json.encode(shaped), raw):
            items = session.handle(T0, topic, payload)
            # Including the device's own time, which falls back to arrival when implausible.
            assert_wire_valid(items)


def test_sample_any_on_wins() -> None:
    s = Sample()
    s.set_event("trapped", True)
    s.set_event("trapped", False)
    assert s.active == {"trapped": {}}


FIRE_PANEL_IO = """
profile: 1
protocol: modbus_rtu
id: io-module
kind: fire_panel
maker: test
model: 8-channel I/O module
report_interval_s: 1
thresholds: {debounce_ms: 50}
points:
  - {table: discrete, address: 0, type: bool, event: fire_alarm}
  - {table: discrete, address: 9, type: bool, field: alarm, invert: true}
  - {table: coil, address: 3, type: bool, event: comm_lost}
  - {table: input, address: 100, type: i32, word_order: little, event: fire_alarm}
"""


def test_coils_discrete_inputs_and_input_registers() -> None:
    from collectors.profile import _check  # noqa: PLC0415
    from collectors.yamlconf import load_yaml_text  # noqa: PLC0415

    profile = load_yaml_text(FIRE_PANEL_IO, ModbusProfile, check=_check)  # type: ignore[arg-type]
    plan = ModbusPlan(profile)
    assert plan.reads == [
        ModbusRead("input", 100, 2),
        ModbusRead("coil", 3, 1),
        ModbusRead("discrete", 0, 10),
    ]
    discrete = [True] + [False] * 9  # input 0 on; input 9 off (inverted: alarm true)
    blocks = [
        ModbusPlan.registers_to_bytes([0x0000, 0x0000]),  # i32 0: this point says no alarm
        pack_bits([False]),
        pack_bits(discrete),
    ]
    sample = plan.decode(blocks)
    # Two points name fire_alarm: it is on if either says so.
    assert sample.active == {"fire_alarm": {}, "comm_lost": None}
    assert sample.fields == {"alarm": True}


def test_a_field_set_by_two_points_is_refused() -> None:
    from collectors.profile import _check  # noqa: PLC0415
    from collectors.yamlconf import ConfigError, load_yaml_text  # noqa: PLC0415

    text = FIRE_PANEL_IO + "  - {table: coil, address: 7, type: bool, field: alarm}\n"
    with pytest.raises(ConfigError) as info:
        load_yaml_text(text, ModbusProfile, source="io.yaml", check=_check)  # type: ignore[arg-type]
    assert str(info.value) == "io.yaml:15: points[4]: field 'alarm' is already set by points[1]"


def packed_regs(status: int, floor_raw: int, fault: int, seconds: int, trips: int) -> list[int]:
    """Registers 0x10..0x16 of the LT-300 layout (32-bit values low word first)."""
    return [status, floor_raw, fault, seconds & 0xFFFF, seconds >> 16, trips & 0xFFFF,
            trips >> 16]  # fmt: skip


def test_bit_groups_named_bits_offsets_bcd_and_low_word_first() -> None:
    """Issue 14: the packed layout (sd-lt300) decodes to exact values."""
    plan = ModbusPlan(ELEVATOR_PACKED)
    assert plan.reads == [ModbusRead("holding", 0x10, 7)]
    # direction 10 (down), door zone, door 010 (open), running, occupied, mains, trapped
    status = 0b0001_0111_0010_0110
    regs = packed_regs(status, floor_raw=2, fault=0x10, seconds=45_000, trips=70_000)
    sample = plan.decode([ModbusPlan.registers_to_bytes(regs)])
    assert sample.fields == {
        "direction": "down", "door": "open", "door_zone": True, "running": True,
        "occupied": True, "power": "mains", "floor": -1, "run_hours": 12.5, "trips": 70_000,
    }  # fmt: skip
    assert sample.active["trapped"] == {}
    assert sample.active["overtravel_bottom"] == {"code": 10}  # BCD 0x10 is ten, not 16
    assert sample.problems == []
    # Bit 10 clear: on battery; direction 11 is no direction (enum_default); door closing.
    regs = packed_regs(0b0011_0011, floor_raw=0, fault=0x1A, seconds=0, trips=0)
    sample = plan.decode([ModbusPlan.registers_to_bytes(regs)])
    assert (sample.fields["power"], sample.fields["direction"], sample.fields["door"]) == (
        "battery",
        "none",
        "closing",
    )
    assert sample.fields["floor"] == -3
    assert sample.problems == ["holding 18: 001a is not BCD"]


@pytest.mark.parametrize(
    ("raw", "vtype", "word_order", "byte_order", "want"),
    [
        (bytes.fromhex("0000000100000002"), "u64", "big", "big", (1 << 32) + 2),
        (bytes.fromhex("0002000000010000"), "u64", "little", "big", (1 << 32) + 2),
        (bytes.fromhex("fffffffffffffffe"), "i64", "big", "big", -2),
        (bytes.fromhex("3ff8000000000000"), "f64", "big", "big", 1.5),
        (bytes.fromhex("1234"), "bcd16", "big", "big", 1234),
        (bytes.fromhex("34127856"), "bcd32", "little", "little", 56781234),
    ],
)
def test_wide_and_bcd_values(
    raw: bytes, vtype: str, word_order: str, byte_order: str, want: float
) -> None:
    assert decode_raw(raw, vtype, word_order=word_order, byte_order=byte_order) == want  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("unit", "raw", "want"),
    [
        ("iso8601", "2026-11-22T14:03:05+08:00", 1_795_327_385_000),
        ("iso8601", "2026-11-22T06:03:05Z", 1_795_327_385_000),
        ("iso8601", "2026-11-22 14:03:05.250", 1_795_327_385_250),  # no offset: time_zone
        ("s", 1_795_327_385, 1_795_327_385_000),
        ("s", 1_795_327_385.5, 1_795_327_385_500),
        ("ms", 1_795_327_385_000, 1_795_327_385_000),
    ],
)
def test_mqtt_device_times_in_every_format(unit: str, raw: object, want: int) -> None:
    """Issue 14: camera boxes send ISO-8601 strings; epoch seconds and ms stay as they were."""
    topic = msgspec.structs.replace(CAMERA_LANE.topics[0], time_unit=unit)
    profile = msgspec.structs.replace(CAMERA_LANE, topics=[topic])
    payload = msgspec.json.encode({"ts": raw, "zone": "A", "occupied": True})
    message = MqttDecoder(profile).decode("aibox/box-01/firelane", payload)
    assert isinstance(message, MqttMessage)
    assert (message.t, message.sample.problems) == (want, [])


def test_a_time_in_the_wrong_format_keeps_the_arrival_time_and_says_why() -> None:
    topic = msgspec.structs.replace(CAMERA_LANE.topics[0], time_unit="iso8601")
    profile = msgspec.structs.replace(CAMERA_LANE, topics=[topic])
    payload = msgspec.json.encode({"ts": 1795327385000, "zone": "A", "occupied": True})
    message = MqttDecoder(profile).decode("aibox/box-01/firelane", payload)
    assert isinstance(message, MqttMessage)
    assert message.t is None
    assert message.sample.problems == ["time 1795327385000 at 'ts' is not an ISO-8601 time"]


def test_two_profiles_on_one_topic_do_not_refuse_each_others_messages() -> None:
    """Issue 14: a message one profile takes is not counted (or logged) as refused by the
    other profile sharing its topic; one nobody takes is refused once."""
    topic = msgspec.structs.replace(CAMERA_LANE.topics[0], address="json:cam")
    other = msgspec.structs.replace(CAMERA_LANE, id="aibox-lane-v2", topics=[topic])
    session = MqttSession([MqttDevice("fl-1", CAMERA_LANE, "A"), MqttDevice("fl-9", other, "c9")],
                          started_t=T0)  # fmt: skip
    lane_a = msgspec.json.encode({"ts": T0, "zone": "A", "occupied": True})
    lane_9 = msgspec.json.encode({"ts": T0, "cam": "c9", "occupied": False})
    assert [i.dev for i in session.handle(T0, "aibox/box-01/firelane", lane_a)] == ["fl-1"]
    assert [i.dev for i in session.handle(T0, "aibox/box-01/firelane", lane_9)] == ["fl-9"]
    assert session.counts["refused"] == 0
    session.handle(T0, "aibox/box-01/firelane", msgspec.json.encode({"occupied": True}))
    assert session.counts["refused"] == 1


def test_a_deadband_keeps_small_changes_out_until_they_add_up_or_the_heartbeat() -> None:
    """Issue 14: a number that wanders by less than its deadband (from the value last
    reported) makes no reading; a change that adds up to it does; the heartbeat still does."""
    tracker = DeviceTracker("fl-1", "fire_lane", heartbeat_ms=60_000, deadbands={"dwell_s": 10})

    def at(t: int, dwell: float, occupied: bool = True) -> list[Item]:
        return tracker.sample(T0 + t, Sample(fields={"occupied": occupied, "dwell_s": dwell}))

    assert len(at(0, 100)) == 1
    assert at(2000, 104) == []  # 4 s from the reported 100
    assert at(4000, 108) == []
    assert [i.fields["dwell_s"] for i in at(6000, 110)] == [110]  # type: ignore[union-attr]
    assert len(at(8000, 111, occupied=False)) == 1  # another field changed: reported at once
    assert len(at(68_000, 112, occupied=False)) == 1  # the heartbeat


@pytest.mark.parametrize(
    ("raw", "point", "want"),
    [
        (b"  12.5\0\0", {"field": "run_hours"}, ("fields", {"run_hours": 12.5})),
        (b"+0012\0\0\0", {"field": "floor", "offset": -3}, ("fields", {"floor": 9})),
        (b"UP\0\0\0\0\0\0", {"field": "direction", "enum": {"UP": "up"}},
         ("fields", {"direction": "up"})),
        (b"XX\0\0\0\0\0\0", {"field": "direction", "enum": {"UP": "up"}},
         ("problems", ["holding 0: direction text 'XX' is not in the enum"])),
        (b"12,5\0\0\0\0", {"field": "run_hours"},
         ("problems", ["holding 0: run_hours text '12,5' is not a number"])),
        (b"nan\0\0\0\0\0", {"field": "run_hours"},
         ("problems", ["holding 0: run_hours text 'nan' is not a finite number"])),
        (b"\xff\xfe\0\0\0\0\0\0", {"field": "run_hours"},
         ("problems", ["holding 0: fffe000000000000 is not ascii text"])),
    ],
)  # fmt: skip
def test_text_in_registers_becomes_names_numbers_or_a_counted_problem(
    raw: bytes, point: dict[str, object], want: tuple[str, object]
) -> None:
    """Issue 14: strings in device memory; a text that cannot be the field is a problem,
    never an exception."""
    profile = msgspec.convert(
        {"protocol": "modbus_rtu", "profile": 1, "id": "t", "kind": "elevator", "maker": "m",
         "model": "m", "report_interval_s": 1,
         "points": [{"address": 0, "type": "string", "length": 8, **point}]},
        ModbusProfile,
    )  # fmt: skip
    plan = ModbusPlan(profile)
    assert plan.reads == [ModbusRead("holding", 0, 4)]
    sample = plan.decode([raw])
    what, value = want
    assert getattr(sample, what) == value


def _modbus(points: list[dict[str, object]]) -> ModbusProfile:
    return msgspec.convert(
        {"protocol": "modbus_rtu", "profile": 1, "id": "t", "kind": "elevator", "maker": "m",
         "model": "m", "report_interval_s": 1, "points": points},
        ModbusProfile,
    )  # fmt: skip


def test_an_event_named_by_a_bit_and_a_fault_code_is_one_event() -> None:
    """From an outside test of issue 14: a status bit and a BCD fault code both meaning
    trapped flapped (end + start) whenever the code appeared, changed to unreadable or left
    while the bit stayed on. It is one event from the first poll that says so to the last."""
    bit = {"address": 0, "bits": {0: {"event": "trapped"}}}
    code = {"address": 1, "type": "bcd16", "codes": {11: "trapped"}}
    plan = ModbusPlan(_modbus([bit, code]))
    tracker = DeviceTracker("el-1", "elevator", heartbeat_ms=60_000)
    polls = [(1, 0x0000), (1, 0x0011), (1, 0x001A), (0, 0x0011), (0, 0x0000)]
    got = []
    for i, regs in enumerate(polls):
        sample = plan.decode([ModbusPlan.registers_to_bytes(list(regs))])
        got += [(i, e.state, e.data) for e in tracker.sample(i, sample) if isinstance(e, Event)]
    assert got == [(0, "start", {}), (4, "end", {"code": 11})]


def test_two_events_on_one_json_path_take_each_others_values_quietly() -> None:
    topic = msgspec.structs.replace(CAMERA_LANE.topics[0], events=[
        msgspec.convert({"event": "obstruction", "path": "type", "start": ["lane_block"],
                         "end": ["lane_clear"]}, MqttEvent),
        msgspec.convert({"event": "voice_warning", "path": "type", "instant": ["played"]},
                        MqttEvent),
    ])  # fmt: skip
    session = MqttSession([MqttDevice("fl-1", msgspec.structs.replace(CAMERA_LANE, topics=[topic]),
                                      "A")], started_t=T0)  # fmt: skip
    for kind in ("lane_block", "played", "lane_clear", "nonsense"):
        body = msgspec.json.encode({"ts": T0, "zone": "A", "type": kind})
        session.handle(T0, "aibox/box-01/firelane", body)
    # Only the value no event lists is a problem.
    assert session.trackers["aibox-lane", "A"].counts["value_problems"] == 1


def test_a_message_for_an_address_no_device_has_is_counted() -> None:
    session = MqttSession([MqttDevice("fl-1", CAMERA_LANE, "A")], started_t=T0)
    body = msgspec.json.encode({"ts": T0, "zone": "Z", "occupied": True})
    assert session.handle(T0, "aibox/box-01/firelane", body) == []
    assert session.diagnostics()["unknown_addresses"] == 1


def test_text_in_event_data_becomes_a_number_only_with_scale_or_offset() -> None:
    profile = msgspec.structs.replace(GATE, messages=[msgspec.convert(
        {"name": "alarm", "instant": "invalid_attempts", "points": [
            {"byte": 1, "type": "string", "length": 2, "field": "count", "scale": 2, "offset": 1},
            {"byte": 3, "type": "string", "length": 2, "field": "door"}]}, Message)])  # fmt: skip
    decoded = FrameDecoder(profile).decode(b"\x7e0512" + b"\x00" * 4)
    assert decoded is not None
    assert decoded[2].instants == [("invalid_attempts", {"count": 11, "door": "12"})]
