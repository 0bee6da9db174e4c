"""The ``linli`` command fed bad input: a clear message naming what and where, exit 2."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import DEMO_REGISTRY, run_linli


def test_registry_check_ok_and_broken(tmp_path: Path) -> None:
    ok = run_linli("registry", "check", str(DEMO_REGISTRY))
    assert ok.returncode == 0
    assert "OK (22 communities, 156 devices)" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ncommunities:\n  - id: c-1\n    name: x\n")
    out = run_linli("registry", "check", str(bad))
    assert out.returncode == 2
    assert f"{bad}:3: communities[0]: Object missing required field `committee`" in out.stderr


def test_registry_import_bad_file_and_bad_settings(tmp_path: Path) -> None:
    out = run_linli("registry", "import", str(tmp_path / "none.yaml"))
    assert out.returncode == 2
    assert "none.yaml: cannot read" in out.stderr
    out = run_linli("registry", "import", str(DEMO_REGISTRY), env={"LINLI_MQTT_URL": "ftp://x"})
    assert out.returncode == 2
    assert "must start with mqtt://" in out.stderr


def test_gateway_bad_site_configs_are_all_reported(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    a.write_text(
        "version: 1\ngateway: gw-1\ncommunity: c-1\nstate_dir: s\n"
        "uplink: {url: 'http://x'}\ncollectors:\n  - type: simulator\n"
        "    devices:\n      - {id: el-1, kind: lift}\n"
    )
    b = tmp_path / "b.yaml"
    b.write_text(
        "version: 1\ngateway: gw-1\ncommunity: c-1\nstate_dir: s\n"
        "uplink: {url: 'http://x'}\ncollectors: []\n"
    )
    out = run_linli("gateway", "--config", str(a), "--config", str(b))
    assert out.returncode == 2
    assert (f"{a}:9: collectors[0].devices[0].kind: 'lift' is not one of elevator, fire_lane, "
            "fire_panel, gate") in out.stderr  # fmt: skip
    assert f"{b}:5: uplink.url: MQTT URL 'http://x' must start with mqtt://" in out.stderr


def test_unknown_command_and_missing_arguments() -> None:
    out = run_linli("frobnicate")
    assert out.returncode == 2
    assert "invalid choice: 'frobnicate'" in out.stderr
    out = run_linli("gateway")
    assert out.returncode == 2
    assert "--config" in out.stderr


def test_demo_bad_flags_fail_before_anything_starts(tmp_path: Path) -> None:
    cases = {
        ("--port", "99999"): "settings: http_port: 99999 is not a port",
        ("--mqtt-url", "http://x"): "mqtt_url: MQTT URL 'http://x' must start with mqtt://",
        ("--registry", str(tmp_path / "none.yaml")): "none.yaml: cannot read",
        ("--port", "abc"): "argument --port: invalid int value: 'abc'",
    }
    for flags, message in cases.items():
        out = run_linli("demo", "--state-dir", str(tmp_path / "demo"), *flags, timeout=30)
        assert out.returncode == 2, flags
        assert message in out.stderr, (flags, out.stderr[-500:])
