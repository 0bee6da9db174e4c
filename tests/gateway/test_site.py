"""Site configs that use device profiles: references and bus rules are checked at load."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.profile import load_profiles
from collectors.yamlconf import ConfigError
from gateway.site import load_site_with_profiles
from tests.collectors.profiles import FIRMWARE

EXAMPLE = (FIRMWARE / "sites" / "example.yaml").read_text()


def site(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    text = EXAMPLE.replace("profile_dirs: [..]", f"profile_dirs: [{FIRMWARE}]")
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_site_with_profiles(path)
    return [f"{p.line}: {p.path}: {p.reason}" for p in info.value.problems]


def test_example_loads_with_its_profiles(tmp_path: Path) -> None:
    config, profiles = load_site_with_profiles(site(tmp_path))
    assert [c.name for c in config.collectors] == [
        "rs485-elevators",
        "rs485-lanes",
        "rs485-gates",
        "aibox",
    ]
    # Every shipped profile is available to the site (its profile_dirs is the library).
    assert set(profiles) == set(load_profiles([FIRMWARE]))
    assert {"hx-em100", "lk-fl200", "jt-gc4", "aibox-lane", "aibox-ebike", "xf-ui30"} <= set(
        profiles
    )
    assert config.edge.fire_release.gates == ["gt-north"]
    assert [(o.device, o.action) for o in config.outputs] == [
        ("fl-2", "voice_warning"),
        ("gt-north", "unlock"),
        ("gt-north", "lock"),
        ("fl-1", "voice_warning"),
    ]
    assert config.profile_dirs == [str(FIRMWARE)]


def test_relative_profile_dirs_are_resolved_against_the_site_file() -> None:
    config, profiles = load_site_with_profiles(FIRMWARE / "sites" / "example.yaml")
    assert config.profile_dirs == [str(FIRMWARE)]
    assert len(profiles) == len(load_profiles([FIRMWARE]))


def test_bus_rules_and_references(tmp_path: Path) -> None:
    path = site(
        tmp_path,
        ("{id: el-3-1, unit: 2, profile: hx-em100}", "{id: el-3-1, unit: 1, profile: lk-fl200}"),
        ("{id: el-1-1, unit: 1, profile: hx-em100}", "{id: el-1-1, unit: 1, profile: hx-em101}"),
        (
            "{id: gt-north, address: 1}",
            "{id: gt-north, address: 1}\n      - {id: gt-south, address: 1}",
        ),
        (
            "{id: fl-2, profile: aibox-lane, address: B}",
            "{id: fl-2, profile: hx-em100, address: B}",
        ),
    )
    assert problems(path) == [
        # el-3-1 is now a fire lane with no speaker: the warning rule has nothing to play on.
        "39: edge.fire_lane: el-3-1 has no voice_warning output: add one under outputs, or "
        "set edge.fire_lane.voice_warning: false if the lane has no speaker",
        # fl-2 is now an elevator, so its voice-warning output no longer fits it.
        "47: outputs[0].action: voice_warning is for a fire_lane; fl-2 is of kind elevator",
        "15: collectors[0].devices[0].profile: no profile 'hx-em101' in "
        + str(FIRMWARE)
        + "; did you mean 'hx-em100'?",
        "16: collectors[0].devices[1].profile: "
        "profile 'lk-fl200' speaks framed_serial, not modbus_rtu",
        "16: collectors[0].devices[1].unit: unit 1 is used twice on this bus",
        "27: collectors[2].devices: two devices share an address",
        "34: collectors[3].devices[0].profile: profile 'hx-em100' speaks modbus_rtu, not mqtt",
    ]


def test_unit_id_range_and_bad_local_url(tmp_path: Path) -> None:
    path = site(
        tmp_path,
        ("unit: 2,", "unit: 248,"),
        ("url: mqtt://127.0.0.1:1883", "url: http://127.0.0.1"),
    )
    assert problems(path) == [
        "16: collectors[0].devices[1].unit: a unit id is 1..247",
        "31: collectors[3].url: MQTT URL 'http://127.0.0.1' must start with mqtt:// or mqtts://",
    ]


def test_missing_profile_dir(tmp_path: Path) -> None:
    path = site(tmp_path, (f"profile_dirs: [{FIRMWARE}]", "profile_dirs: [nowhere]"))
    [problem] = problems(path)
    assert problem.endswith("profile directory does not exist")


def test_edge_outputs_and_queue_are_checked(tmp_path: Path) -> None:
    path = site(
        tmp_path,
        ("gates: [gt-north]", "gates: [gt-north, el-1-1]"),
        ("{device: fl-2, action: voice_warning,", "{device: fl-9, action: voice_warning,"),
        ("collector: rs485-elevators, unit: 9", "collector: rs485-nowhere, unit: 300"),
        ("dwell_s: 60", "dwell_s: 0"),
        ("budget_mb: 256", "budget_mb: -1"),
    )
    found = problems(path)
    assert any("queue.budget_mb: must be more than 0" in p for p in found), found
    assert any("edge.fire_lane.dwell_s: must be more than 0 seconds" in p for p in found)
    assert any("edge.fire_release.gates[1]: 'el-1-1' is not a gate on this gateway" in p
               for p in found)  # fmt: skip
    assert any("outputs[0].device: 'fl-9' is not a device on this gateway" in p for p in found)
    assert any("outputs[1].modbus.collector: no modbus collector 'rs485-nowhere'" in p
               for p in found)  # fmt: skip
    assert any("outputs[1].modbus.unit: a unit id is 1..247" in p for p in found)
    # Each problem carries the line it is on.
    assert all(p.split(":")[0].isdigit() for p in found), found


def test_an_output_for_the_wrong_kind_or_with_two_ways(tmp_path: Path) -> None:
    path = site(
        tmp_path,
        ("{device: fl-2, action: voice_warning,", "{device: el-1-1, action: voice_warning,"),
        ("modbus: {collector: rs485-elevators, unit: 9, coil: 0, value: true}}",
         "modbus: {collector: rs485-elevators, unit: 9, coil: 0, value: true},"
         " mqtt: {url: 'mqtt://127.0.0.1', topic: t}}"),
    )  # fmt: skip
    found = problems(path)
    wrong_kind = "outputs[0].action: voice_warning is for a fire_lane; el-1-1 is of kind elevator"
    assert any(wrong_kind in p for p in found), found
    assert any("outputs[1]: give exactly one of mqtt or modbus" in p for p in found)


def test_a_rule_without_the_output_it_acts_through_is_refused(tmp_path: Path) -> None:
    # Issue 12: found at the first warning on site ("no output is configured"), not before.
    text = EXAMPLE.replace("profile_dirs: [..]", f"profile_dirs: [{FIRMWARE}]")
    cut = text[: text.index("outputs:")] + "outputs: []\n"
    (tmp_path / "bare.yaml").write_text(cut)
    found = problems(tmp_path / "bare.yaml")
    assert [p.split(": ", 1)[1] for p in found] == [
        "edge.fire_lane: fl-1 has no voice_warning output: add one under outputs, or set "
        "edge.fire_lane.voice_warning: false if the lane has no speaker",
        "edge.fire_lane: fl-2 has no voice_warning output: add one under outputs, or set "
        "edge.fire_lane.voice_warning: false if the lane has no speaker",
        "edge.fire_release.gates[0]: gt-north has no unlock output",
        "edge.fire_release.gates[0]: gt-north has no lock output",
    ]
    # No speakers at all: the warning is off and blockages are still reported.
    (tmp_path / "quiet.yaml").write_text(cut.replace(
        "fire_lane: {dwell_s: 60, repeat_s: 60}",
        "fire_lane: {dwell_s: 60, repeat_s: 60, voice_warning: false}").replace(
        "fire_release: {gates: [gt-north]}", "fire_release: {gates: []}"))  # fmt: skip
    config, _ = load_site_with_profiles(tmp_path / "quiet.yaml")
    assert config.edge.fire_lane.voice_warning is False


def test_lanes_whose_sensor_reports_obstruction_itself(tmp_path: Path) -> None:
    config, profiles = load_site_with_profiles(site(tmp_path))
    # Neither shipped lane profile maps an obstruction event: the edge reports for both.
    assert config.self_reporting_lanes(profiles) == frozenset()
    lane = FIRMWARE / "fire_lane" / "aibox-lane.yaml"
    (tmp_path / "profiles").mkdir()
    for other in FIRMWARE.glob("*/*.yaml"):
        if other.parent.name != "sites":
            (tmp_path / "profiles" / other.name).write_text(other.read_text())
    text = lane.read_text()
    assert "    fields:" in text
    (tmp_path / "profiles" / "aibox-lane.yaml").write_text(text.replace(
        "    fields:",
        "    events:\n      - {event: obstruction, path: alarm, start: [1], end: [0]}\n"
        "    fields:", 1))  # fmt: skip
    path = site(
        tmp_path, (f"profile_dirs: [{FIRMWARE}]", f"profile_dirs: [{tmp_path / 'profiles'}]")
    )
    config, profiles = load_site_with_profiles(path)
    assert config.self_reporting_lanes(profiles) == frozenset({"fl-2"})
