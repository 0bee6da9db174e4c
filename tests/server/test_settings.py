"""Settings: TOML, then LINLI_* environment on top; bad values named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from collectors.yamlconf import ConfigError
from server.settings import Settings, load_settings


def test_defaults_toml_and_env_precedence(tmp_path: Path) -> None:
    assert load_settings(None, {}) == Settings()
    toml = tmp_path / "s.toml"
    toml.write_text('mqtt_url = "mqtt://broker:1884"\nhttp_port = 9000\n')
    s = load_settings(toml, {"LINLI_HTTP_PORT": "9001", "LINLI_UNRELATED": "x", "HOME": "/"})
    assert (s.mqtt_url, s.http_port) == ("mqtt://broker:1884", 9001)


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("http_port = [", {}, "s.toml: not valid TOML"),
        ('http_port = "eighty"', {}, "Expected `int`"),
        ("", {"LINLI_HTTP_PORT": "80x"}, "Expected `int`"),
        ("http_port = 70000", {}, "http_port: 70000 is not a port"),
        ('mqtt_url = "http://x"', {}, "mqtt_url: MQTT URL 'http://x' must start with mqtt://"),
        ('mqtt_url = "mqtt://h:99999"', {}, "invalid port"),
        ("colour = 1", {}, "unknown field `colour`"),
        ("", {"LINLI_INFLUX_URL": "localhost:8086"}, "influx_url: 'localhost:8086' must start"),
        ('influx_version = "4"', {}, "Invalid enum value '4' - at `$.influx_version`"),
        ("influx_spool_max_mb = 0", {}, "influx_spool_max_mb: must be at least 1"),
        ("", {"LINLI_ADMIN_TOKEN": "short"}, "admin_token: must be at least 16 characters"),
    ],
)
def test_bad_settings_are_named(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(toml, env)


@pytest.mark.parametrize(
    "text",
    [
        'admin_token = "0123456789abcdef-secret"\n',
        'influx_password = "p"\n',
        'mqtt_url = "mqtt://server:s3cret@broker:1883"\n',
        'smtp_url = "smtps://alerts:pw@mail.example:465"\n',
    ],
)
def test_a_file_everyone_may_read_must_not_hold_secrets(tmp_path: Path, text: str) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text(text)
    toml.chmod(0o644)
    with pytest.raises(ConfigError, match=r"everyone may read the file: chmod o-r"):
        load_settings(toml, {})
    toml.chmod(0o640)  # the service's group may read it
    load_settings(toml, {})
    toml.write_text('mqtt_url = "mqtt://server@broker:1883"\nhttp_port = 9000\n')
    toml.chmod(0o644)  # no secret in it: readable is fine
    load_settings(toml, {})


def test_missing_settings_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read"):
        load_settings(tmp_path / "nope.toml", {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "communities:\n  meihuayuan: {fire_lane_alert_s: 0}\n",
            "communities.meihuayuan.fire_lane_alert_s: must be > 0",
        ),
        ("devices:\n  fl-1: {flap_s: 3}\n", "devices.fl-1: 'fl-1' is not 'community/device'"),
        ("buildings:\n  meihuayuan/1号楼: {colour: 1}\n", "has no field 'colour'"),
        ("defaults: {maintenance_days: 200}\n", "maintenance_days: must be 1..92"),
        ("defaults: [1\n", "not valid YAML"),
        ("limits: {}\n", "limits"),
    ],
)
def test_bad_alert_thresholds_files_are_named(tmp_path: Path, text: str, message: str) -> None:
    from server.app import load_thresholds  # noqa: PLC0415

    path = tmp_path / "th.yaml"
    path.write_text(text)
    settings = load_settings(None, {"LINLI_ALERT_THRESHOLDS": str(path)})
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        load_thresholds(settings)
    assert "th.yaml" in str(info.value)


def test_bad_or_missing_ladder_files_are_named(tmp_path: Path) -> None:
    from alerts.ladders import LadderError  # noqa: PLC0415
    from server.app import load_ladders  # noqa: PLC0415

    missing = load_settings(None, {"LINLI_ALERT_LADDERS": str(tmp_path / "nope.yaml")})
    with pytest.raises(LadderError, match=r"nope\.yaml: cannot read"):
        load_ladders(missing)
    path = tmp_path / "la.yaml"
    path.write_text("rules:\n  trapped: {first: [mayor]}\n")
    bad = load_settings(None, {"LINLI_ALERT_LADDERS": str(path)})
    with pytest.raises(LadderError, match=re.escape("$.rules.trapped: Invalid enum value 'mayor'")):
        load_ladders(bad)
