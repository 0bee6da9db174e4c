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


def test_missing_settings_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read"):
        load_settings(tmp_path / "nope.toml", {})
