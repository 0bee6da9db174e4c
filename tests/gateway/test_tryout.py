"""``linli firmware try``: every shipped profile decodes its captured sample (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collectors.profile import load_profile, load_profiles
from collectors.yamlconf import ConfigError
from gateway.tryout import try_capture
from tests.collectors.profiles import FIRMWARE
from tests.conftest import run_linli

T0 = 1_795_300_000_000


def sample_of(profile_id: str) -> Path:
    found = [p for p in FIRMWARE.rglob(f"samples/{profile_id}.*") if p.is_file()]
    assert len(found) == 1, f"no sample (or several) for {profile_id}: {found}"
    return found[0]


@pytest.mark.parametrize("profile_id", sorted(load_profiles([FIRMWARE])))
def test_every_shipped_profile_decodes_its_sample(profile_id: str) -> None:
    profiles = load_profiles([FIRMWARE])
    result = try_capture(profiles[profile_id], sample_of(profile_id), t0=T0)
    assert result.items, "the sample makes items"
    assert result.problems == []
    assert all(item.kind == profiles[profile_id].kind for item in result.items)


def test_the_line_capture_counts_its_noise() -> None:
    lane = load_profile(FIRMWARE / "fire_lane/lk-fl200.yaml")
    result = try_capture(lane, sample_of("lk-fl200"), t0=T0)
    assert [json.loads(line)["fields"]["occupied"] for line in result.lines()] == [True, False]
    counts = result.counts  # named as the health item names them
    assert (counts["checksum_errors"], counts["torn_frames"], counts["frames"]) == (1, 1, 2)


def test_the_cli_prints_the_items_the_gateway_would_send() -> None:
    done = run_linli("firmware", "try", str(FIRMWARE / "elevator/sd-lt300.yaml"),
                     "--input", str(sample_of("sd-lt300")))  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert rows[0]["fields"] == {
        "direction": "down", "door": "open", "door_zone": True, "running": True,
        "occupied": True, "power": "mains", "floor": -1, "run_hours": 12.5, "trips": 70000,
    }  # fmt: skip
    assert [(r["event"], r["state"]) for r in rows if "event" in r] == [
        ("trapped", "start"), ("overtravel_bottom", "start"),
        ("trapped", "end"), ("overtravel_bottom", "end"),
    ]  # fmt: skip
    assert "7 item(s)" in done.stderr


def test_a_capture_in_the_wrong_shape_names_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "dump.txt"
    bad.write_text("0x0010: 0726 0002\n")  # the profile reads seven registers
    with pytest.raises(ConfigError, match=r"dump.txt:1: poll 1 lacks holding 0x0012"):
        try_capture(load_profile(FIRMWARE / "elevator/sd-lt300.yaml"), bad, t0=T0)
    bad.write_text("0x0010: zz\n")
    with pytest.raises(ConfigError, match="'zz' is not a hex word"):
        try_capture(load_profile(FIRMWARE / "elevator/sd-lt300.yaml"), bad, t0=T0)
