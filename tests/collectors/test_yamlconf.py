"""Typed YAML loading: errors name file, line and key; duplicate keys are refused."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from collectors.yamlconf import ConfigError, load_yaml, load_yaml_text


class Dev(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    floors: int = 2


class Conf(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    devices: list[Dev] = []


def test_type_error_names_line_and_path() -> None:
    text = "name: x\ndevices:\n  - id: a\n  - id: b\n    floors: many\n"
    with pytest.raises(ConfigError) as info:
        load_yaml_text(text, Conf, source="site.yaml")
    assert str(info.value) == "site.yaml:5: devices[1].floors: Expected `int`, got `str`"


def test_duplicate_key_is_refused_with_its_line() -> None:
    with pytest.raises(ConfigError, match=r"site.yaml:3: not valid YAML: .*duplicate key 'id'"):
        load_yaml_text("name: x\ndevices:\n  - {id: a, id: b}\n", Conf, source="site.yaml")


def test_unknown_key_missing_key_and_broken_yaml() -> None:
    with pytest.raises(
        ConfigError,
        match=r"c.yaml:2: devices\[0\].flors: 'flors' is not a key here; did you mean 'floors'\?",
    ):
        load_yaml_text("name: x\ndevices: [{id: a, flors: 3}]\n", Conf, source="c.yaml")
    with pytest.raises(ConfigError, match=r"Object missing required field `name`"):
        load_yaml_text("devices: []\n", Conf)
    with pytest.raises(ConfigError, match=r"c.yaml:2: not valid YAML"):
        load_yaml_text("name: [x\nfoo: }\n", Conf, source="c.yaml")
    with pytest.raises(ConfigError, match="the file is empty"):
        load_yaml_text("", Conf)


def test_checks_report_every_problem_with_lines() -> None:
    def check(c: Conf):  # type: ignore[no-untyped-def]
        for i, d in enumerate(c.devices):
            if d.floors > 10:
                yield f"devices[{i}].floors", "too tall"

    with pytest.raises(ConfigError) as info:
        load_yaml_text(
            "name: x\ndevices:\n  - id: a\n    floors: 11\n  - id: b\n    floors: 12\n",
            Conf,
            source="c.yaml",
            check=check,
        )
    assert [str(p) for p in info.value.problems] == [
        "c.yaml:4: devices[0].floors: too tall",
        "c.yaml:6: devices[1].floors: too tall",
    ]


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        load_yaml(tmp_path / "missing.yaml", Conf)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_yaml(bad, Conf)
