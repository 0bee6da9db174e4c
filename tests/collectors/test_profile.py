"""Profiles: the shipped ones load; broken ones fail with file, line, key and a hint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from collectors.profile import (
    FramePoint,
    MqttProfile,
    load_profile,
    load_profiles,
)
from collectors.yamlconf import ConfigError, Problem
from tests.collectors.profiles import FIRMWARE
from tests.conftest import run_linli


def test_every_shipped_profile_loads() -> None:
    profiles = load_profiles([FIRMWARE])
    assert sorted(profiles) == [
        "aibox-ebike",
        "aibox-lane",
        "dc-gm10",
        "hx-em100",
        "jt-gc4",
        "lk-fl200",
        "sd-lt300",
        "xf-ui30",
    ]
    # Each records how often it reports and the thresholds it is set to.
    assert all(p.report_interval_s > 0 and p.thresholds for p in profiles.values())


def edited(tmp_path: Path, source: str, *changes: tuple[str, str]) -> Path:
    """A copy of a shipped profile with each (old, new) text replaced."""
    text = (FIRMWARE / source).read_text()
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    return list(info.value.problems)


def broken(tmp_path: Path, source: str, old: str, new: str) -> list[str]:
    return [str(p) for p in problems_of(edited(tmp_path, source, (old, new)))]


def test_unknown_field_and_event_suggest_the_right_name(tmp_path: Path) -> None:
    problems = broken(
        tmp_path, "elevator/hx-em100.yaml", "3: {event: trapped}", "3: {event: traped}"
    )
    assert problems == [
        f"{tmp_path / 'p.yaml'}:31: points[0].bits.3.event: "
        "'traped' is not an elevator event; did you mean 'trapped'?"
    ]


def test_enum_value_outside_the_field(tmp_path: Path) -> None:
    [problem] = broken(tmp_path, "gate/jt-gc4.yaml", "2: locked_down", "2: lockdown")
    assert "messages[0].points[1].enum.2: 'lockdown' is not allowed for mode" in problem


def test_integer_field_with_fractional_scale(tmp_path: Path) -> None:
    [problem] = broken(
        tmp_path,
        "elevator/hx-em100.yaml",
        "word_order: big, field: trips}",
        "word_order: big, scale: 0.5, field: trips}",
    )
    assert problem.endswith(
        ":56: points[7].scale: elevator field 'trips' is an integer; scale must be too"
    )


def test_type_errors_name_the_line(tmp_path: Path) -> None:
    [problem] = broken(tmp_path, "elevator/hx-em100.yaml", "timeout_ms: 200", "timeout_ms: fast")
    assert problem.endswith(":16: timeout_ms: Expected `int`, got `str`")


def test_frame_without_an_end_or_length(tmp_path: Path) -> None:
    problems = broken(tmp_path, "fire_lane/lk-fl200.yaml", "  length_at: 2\n", "")
    assert any("frame: a frame needs length_at or end" in p for p in problems)


def test_mqtt_topic_level_that_does_not_exist(tmp_path: Path) -> None:
    [problem] = broken(
        tmp_path, "elevator/aibox-ebike.yaml", "address: topic:cam", "address: topic:camera"
    )
    assert problem.endswith("topics[0].address: the pattern has no level {camera}")


def test_unknown_protocol(tmp_path: Path) -> None:
    [problem] = broken(
        tmp_path, "fire_lane/lk-fl200.yaml", "protocol: framed_serial", "protocol: can"
    )
    assert "Invalid value 'can'" in problem


def test_cli_validate_ok_and_broken(tmp_path: Path) -> None:
    done = run_linli("firmware", "validate", str(FIRMWARE))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("OK ") == len(load_profiles([FIRMWARE])) + 1  # and the site
    bad = tmp_path / "bad"
    bad.mkdir()
    text = (FIRMWARE / "elevator" / "hx-em100.yaml").read_text()
    (bad / "a.yaml").write_text(text.replace("field: floor}", "field: flor}"))
    (bad / "b.yaml").write_text("just: text\n")
    (bad / "c.yaml").write_text(text.replace("id: hx-em100", "id: Bad Id"))
    done = run_linli("firmware", "validate", str(bad), str(tmp_path / "missing"))
    assert done.returncode == 2
    assert (
        "a.yaml:35: points[1].field: 'flor' is not an elevator field; did you mean 'floor'?"
        in done.stderr
    )
    assert "b.yaml: neither a device profile" in done.stderr
    assert "c.yaml:6: id: 'Bad Id' is not a slug" in done.stderr
    assert "missing: no such file or directory" in done.stderr
    assert "4 problem(s) found" in done.stderr


def test_cli_validate_site_with_a_missing_profile(tmp_path: Path) -> None:
    site = (FIRMWARE / "sites" / "example.yaml").read_text()
    path = tmp_path / "site.yaml"
    path.write_text(
        site.replace("profile_dirs: [..]", f"profile_dirs: [{FIRMWARE}]").replace(
            "profile: jt-gc4", "profile: jt-gc5"
        )
    )
    done = run_linli("firmware", "validate", str(path))
    assert done.returncode == 2
    assert "collectors[2].profile: no profile 'jt-gc5' in" in done.stderr


def test_bad_hex_bytes_say_how_to_write_them(tmp_path: Path) -> None:
    [problem] = broken(tmp_path, "fire_lane/lk-fl200.yaml", "start: AA 55", "start: ZZ")
    assert problem.endswith("frame.start: 'ZZ' is not hex bytes; write them like 'AA 55'")


def test_cli_validate_empty_file_and_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "blank.yaml").write_text("\n")
    done = run_linli("firmware", "validate", str(tmp_path / "files"))
    assert done.returncode == 2
    assert "blank.yaml: the file is empty" in done.stderr
    (tmp_path / "none").mkdir()
    done = run_linli("firmware", "validate", str(tmp_path / "none"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"{tmp_path / 'none'}: no YAML files found"


def test_bit_groups_and_named_bits_are_checked_in_one_run(tmp_path: Path) -> None:
    """Issue 14: masks and set/clear bits, and what they cannot do, each with its fix."""
    path = edited(
        tmp_path,
        "elevator/sd-lt300.yaml",
        ("mask: 0x0003, field: direction", "mask: 0x30000, field: direction"),
        ("10: {field: power, set: mains, clear: battery}", "10: {field: power, set: main}"),
        ("2: {field: door_zone}", "2: {field: door_zone, set: closed}"),
        ("8: {field: running}", "8: {field: floor}"),
        ("9: {field: occupied}", "9: {field: service_mode}"),
        ("type: bcd16\n", "type: bcd16\n    mask: 0xF0\n"),
    )
    got = [f"{p.line}: {p.path}: {p.reason}" for p in problems_of(path)]
    assert got == [
        "24: points[0].mask: 0x30000 is not a mask of a 16-bit u16",
        "30: points[2].bits.2.set: elevator field 'door_zone' is bool: the bit sets it; "
        "drop set/clear (invert: true flips it)",
        "31: points[2].bits.8.field: elevator field 'floor' is int: one bit cannot hold it; "
        "read a bit group with mask (and scale)",
        "32: points[2].bits.9.field: elevator field 'service_mode' takes names: say which "
        "with set/clear (earthquake, emergency_power, fire_return, firefighter, inspection, "
        "normal, out_of_service, unknown)",
        "33: points[2].bits.10.set: 'main' is not allowed for power: use one of battery, "
        "mains, off; did you mean 'mains'?",
        "38: points[4].mask: a mask needs an integer type, not bcd16",
        "35: points[3]: field 'floor' is already set by points[2]",
    ]


def test_mqtt_values_are_checked_against_the_field_they_feed(tmp_path: Path) -> None:
    """Issue 14: an enum into a bool field validated, then every message was dropped as
    "does not fit"; now validation refuses it and says what to write."""
    path = edited(
        tmp_path,
        "fire_lane/aibox-lane.yaml",
        ("occupied: {path: occupied}", "occupied: {path: occupied, enum: {yes: 'true'}}"),
        ("dwell_s: {path: dwell}", "dwell_s: {path: dwell, true: [1]}"),
        ("ebike: ebike, tricycle: ebike", "ebike: bike, tricycle: ebike"),
        ("evidence: {path: snapshot}", "evidence: {path: snapshot, scale: 2}"),
        ("time_unit: ms", "time_unit: iso8601\n    time_zone: Asia/Shanghia"),
    )
    got = [f"{p.path}: {p.reason}" for p in problems_of(path)]
    assert got == [
        "topics[0].time_zone: 'Asia/Shanghia' is not an IANA time zone",
        "topics[0].fields.occupied.enum: fire_lane field 'occupied' is bool; enum maps to "
        "names: list the values meaning true with true: [...]",
        "topics[0].fields.dwell_s.true: fire_lane field 'dwell_s' is float; true: is for "
        "bool fields",
        "topics[0].fields.object.enum.ebike: 'bike' is not allowed for object: use one of "
        "ebike, goods, unknown, vehicle; did you mean 'ebike'?",
        "topics[0].fields.evidence.scale: fire_lane field 'evidence' is str; scale is for numbers",
    ]


def test_six_mistakes_are_six_problems_in_one_run(tmp_path: Path) -> None:
    """Issue 14: type errors no longer stop the check at the first; a bad name lists the
    valid ones and the nearest; every problem has its line."""
    text = (FIRMWARE / "elevator/hx-em100.yaml").read_text()
    for old, new in (
        ("timeout_ms: 200", "timeout_ms: fast"),                               # a type
        ("{address: 1, type: i16, field: floor}", "{address: 1, type: int16, field: floor}"),
        ("3: {event: trapped}", "3: {event: traped}"),                         # a name
        ("{address: 6, field: power, enum: {0: mains, 1: battery, 2: \"off\"}}",
         "{address: 6, field: power, enum: {0: mains, 1: batery, 2: \"off\"}}"),
        ("serial: {baudrate: 9600, bytesize: 8, parity: E, stopbits: 1}",
         "serial: {baudrate: 9600, bytesize: 9, parity: E, stopbits: 1}"),
        ("word_order: big, scale: 0.1, field: run_hours}",
         "word_order: big, scale: 0.1, field: run_hour}"),
    ):  # fmt: skip
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "six.yaml"
    path.write_text(text)
    done = run_linli("firmware", "validate", str(path))
    assert done.returncode == 2
    lines = done.stdout.splitlines() + done.stderr.splitlines()
    problems = [line for line in lines if line.startswith(str(path))]
    assert len(problems) == 6, lines
    assert all(re.match(rf"{re.escape(str(path))}:\d+: ", p) for p in problems)
    text_out = "\n".join(problems)
    assert "timeout_ms: Expected `int`, got `str`" in text_out
    assert "points[1].type: 'int16' is not one of bcd16, bcd32, bool, f32" in text_out
    assert "did you mean 'i16'?" in text_out
    assert ":55: points[6].enum.1: 'batery'" in text_out  # the file's index and line
    assert "'traped' is not an elevator event; did you mean 'trapped'?" in text_out
    assert "'batery' is not allowed for power" in text_out
    assert "serial.bytesize" in text_out
    assert "'run_hour' is not an elevator field; did you mean 'run_hours'?" in text_out


def test_a_4xxxx_address_is_a_warning_and_a_mistyped_profile_name_gets_a_suggestion(
    tmp_path: Path,
) -> None:
    """Issue 14: legal but questionable input is a warning (exit 0); a site's profile name
    close to a real one is suggested."""
    text = (FIRMWARE / "elevator/hx-em100.yaml").read_text()
    path = tmp_path / "p.yaml"
    path.write_text(text.replace("{address: 1, type: i16, field: floor}",
                                 "{address: 40101, type: i16, field: floor}"))  # fmt: skip
    done = run_linli("firmware", "validate", str(path))
    assert done.returncode == 0, done.stderr
    assert (f"{path}:35: points[1].address: warning: 40101 looks like the 4xxxx register "
            "number; the PDU address of register 40101 is 100") in done.stderr  # fmt: skip
    site = (FIRMWARE / "sites/example.yaml").read_text()
    assert "profile: hx-em100" in site
    site_path = tmp_path / "site.yaml"
    site_path.write_text(site.replace("profile: hx-em100", "profile: hx-em10")
                         .replace("profile_dirs: [..]", f"profile_dirs: [{FIRMWARE}]"))  # fmt: skip
    done = run_linli("firmware", "validate", str(site_path))
    assert done.returncode == 2
    assert "no profile 'hx-em10'" in done.stderr
    assert "did you mean 'hx-em100'?" in done.stderr


def test_yes_no_on_off_are_names_and_frame_points_are_bytes(tmp_path: Path) -> None:
    """Found by an outside user: unquoted ``yes``/``no`` validated as YAML booleans and never
    matched the device's "yes"; a framed point without a type read two bytes (into the
    checksum); an unknown key stopped the check with the wrong line."""
    text = (FIRMWARE / "fire_lane/aibox-lane.yaml").read_text()
    path = tmp_path / "p.yaml"
    path.write_text(text.replace("occupied: {path: occupied}",
                                 "occupied: {path: status, true: [yes, on]}"))  # fmt: skip
    lane = load_profile(path)
    assert isinstance(lane, MqttProfile)
    assert lane.topics[0].fields["occupied"].true == ["yes", "on"]
    bare = FramePoint(byte=5, field="occupied")
    assert bare.type == "u8"
    broken = text.replace("report_interval_s: 30", "report_interval: 30\nreport_interval_s: 30")
    path.write_text(broken)
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    [problem] = info.value.problems
    assert (problem.line, problem.path) == (14, "report_interval")
    assert (
        problem.reason == "'report_interval' is not a key here; did you mean 'report_interval_s'?"
    )


def test_a_duplicate_profile_id_names_its_line(tmp_path: Path) -> None:
    text = (FIRMWARE / "fire_lane/dc-gm10.yaml").read_text()
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(text)
    done = run_linli("firmware", "validate", str(tmp_path))
    assert done.returncode == 2
    assert f"{tmp_path / 'b.yaml'}:7: id: profile id 'dc-gm10' is also used by" in done.stderr


def test_text_points_are_checked_against_what_they_feed(tmp_path: Path) -> None:
    """Issue 14: strings; what a text cannot be is said at validate time, with the fix."""
    more = (
        "  - {address: 0x15, type: string, field: trips, length: 300}\n"
        "  - {address: 0x30, type: string, length: 4, field: occupied}\n"
        "  - {address: 0x32, type: string, length: 2, field: power, enum: {AC: main}}\n"
        "  - {address: 0x33, type: string, length: 2, event: trapped}\n"
        "  - {address: 0x34, type: u16, length: 2, field: run_hours}\n"
        "  - {address: 0x35, type: u16, field: floor, enum: {UP: up}}\n"
    )
    path = edited(
        tmp_path,
        "elevator/sd-lt300.yaml",
        ("  - {address: 0x15, type: u32, word_order: little, field: trips}\n", more),
    )
    got = [f"{p.path}: {p.reason}" for p in problems_of(path)]
    assert got == [
        "points[6].length: a string needs its length in bytes (1..240)",
        "points[7].type: elevator field 'occupied' is bool; text cannot say true or false: "
        "read a number or a bit",
        "points[8].enum.AC: 'main' is not allowed for power: use one of battery, mains, off; "
        "did you mean 'mains'?",
        "points[9].type: a string can only feed a field, not event",
        "points[10].length: length goes with type: string, not u16",
        "points[11].enum: the enum of a u16 maps numbers; text keys need type: string",
        "points[11].enum: elevator field 'floor' is int; enum is for named fields",
        "points[7]: field 'occupied' is already set by points[2]",
        "points[8]: field 'power' is already set by points[2]",
        "points[10]: field 'run_hours' is already set by points[5]",
        "points[11]: field 'floor' is already set by points[3]",
    ]


def test_what_could_never_match_is_refused_in_one_run(tmp_path: Path) -> None:
    """From an outside test of issue 14: settings that validated and then matched nothing
    (an address byte past the frame, a message byte value over 0xff, an enum key a 3-bit
    group cannot hold, scale on an event)."""
    path = edited(
        tmp_path,
        "gate/jt-gc4.yaml",
        ("address_at: 1", "address_at: 70"),
        ("when_value: 0x21", "when_value: 0x181"),
        ("enum: {0: normal, 1: held_open, 2: locked_down, 3: fire_release}",
         "mask: 0x07, enum: {0: normal, 1: held_open, 9: locked_down}"),
        ("{byte: 3, type: u8, event: device_fault}",
         "{byte: 3, type: u8, event: device_fault, scale: 2}"),
    )  # fmt: skip
    got = [f"{p.path}: {p.reason}" for p in problems_of(path)]
    assert got == [
        "frame.address_at: byte 70 is not inside a frame of at most 64 bytes after the start bytes",
        "messages[0].points[1].enum.9: 9 can never come from the bit group 0x7 (0..7)",
        "messages[1].when_value: 0x181 is not a byte (0..0xff)",
        "messages[2].points[0].scale: scale and offset are for number fields, not event",
    ]
    path = edited(
        tmp_path,
        "elevator/aibox-ebike.yaml",
        ("aibox/{box}/elevator/{cam}/ebike", "aibox/{cam}/elevator/{cam}/ebike"),
        ("end: [leave]", "end: [leave, Enter]"),
    )
    got = [f"{p.path}: {p.reason}" for p in problems_of(path)]
    assert got == [
        "topics[0].pattern: level {cam} is named twice; give each its own name",
        "topics[0].events[0].end: 'Enter' is also listed under start: one value, one meaning",
    ]


def test_wrong_values_of_the_frame_do_not_hide_the_messages_problems(tmp_path: Path) -> None:
    """From an outside test of issue 14: a file with a bad checksum name, a bad length size
    and start bytes that are not hex took five runs to show its sixteen problems; the bad
    values are now reported and the rest checked as if they were right, in one run."""
    path = edited(
        tmp_path,
        "gate/jt-gc4.yaml",
        ("checksum: crc16_ccitt", "checksum: crc16ccitt"),
        ("escape: 7D", "escape: 7G"),
        ("0: {field: open}", "0: {field: opened}"),
        ("when_value: 0x21", "when_value: 0x121"),
    )
    got = [f"{p.path}: {p.reason}" for p in problems_of(path)]
    assert got == [
        "frame.checksum: 'crc16ccitt' is not one of crc16_ccitt, crc16_modbus, crc16_xmodem, "
        "sum8, xor8; did you mean 'crc16_ccitt'?",
        "frame.escape: '7G' is not hex bytes; write them like 'AA 55'",
        "messages[0].points[0].bits.0.field: 'opened' is not a gate field; did you mean 'open'?",
        "messages[1].when_value: 0x121 is not a byte (0..0xff)",
    ]
