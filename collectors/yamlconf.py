"""Typed YAML loading: ``safe_load``, duplicate keys refused, then into frozen msgspec types.

Every configuration Linli reads from YAML (registry, gateway site configs, device profiles)
goes through :func:`load_yaml`, so that every error a technician sees has the same shape::

    registry.yaml:42: communities[3].devices[0].kind: Invalid enum value 'lift'

After loading, no code reads a raw dict: it gets the typed object or a :class:`ConfigError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

__all__ = ["ConfigError", "Problem", "load_yaml", "load_yaml_text"]

T = TypeVar("T")

_MSGSPEC_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a configuration file, with where and why."""

    source: str
    line: int | None
    path: str
    reason: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.path}: {self.reason}" if self.path else f"{where}: {self.reason}"


class ConfigError(Exception):
    """A configuration file that cannot be used; ``problems`` lists every reason found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        assert problems
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def one(cls, source: str, line: int | None, path: str, reason: str) -> ConfigError:
        """An error with a single problem."""
        return cls([Problem(source, line, path, reason)])


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        assert isinstance(node, yaml.MappingNode)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _index_lines(node: yaml.Node, path: str, lines: dict[str, int]) -> None:
    """Record the 1-based line where each key path starts, e.g. '.devices[0].kind'."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = f"{path}.{key_node.value}"
            lines[child] = key_node.start_mark.line + 1
            _index_lines(value_node, child, lines)
            lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, f"{path}[{i}]", lines)


def _nearest_line(lines: dict[str, int], path: str) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return lines.get("")


#: A check run after conversion; it yields (key path, reason) for each cross-reference or
#: consistency problem that the types alone cannot express, e.g. ("contracts[2].company",
#: "unknown organisation 'pc-x'"). Paths use the same form as msgspec's.
Check = Callable[[T], Iterable[tuple[str, str]]]


def load_yaml_text(
    text: str, into: type[T], *, source: str = "<string>", check: Check[T] | None = None
) -> T:
    """Parse YAML ``text``, convert it into ``into`` and run ``check``; raise ConfigError."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError.one(source, None, "", "the file is empty")
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise ConfigError.one(source, line, "", f"not valid YAML: {reason}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError.one(source, None, "", f"not valid YAML: {exc}") from exc
    finally:
        loader.dispose()
    lines: dict[str, int] = {}
    _index_lines(node, "", lines)
    try:
        value = msgspec.convert(data, into)
    except msgspec.ValidationError as exc:
        match = _MSGSPEC_PATH.match(str(exc))
        assert match is not None  # the pattern matches any string
        path = match.group("path") or ""
        raise ConfigError.one(
            source, _nearest_line(lines, path), path.lstrip("."), match.group("msg")
        ) from exc
    if check is not None:
        problems = [
            Problem(source, _nearest_line(lines, "." + path), path, reason)
            for path, reason in check(value)
        ]
        if problems:
            raise ConfigError(problems)
    return value


def load_yaml(path: Path, into: type[T], *, check: Check[T] | None = None) -> T:
    """Read and convert a YAML file; every failure is a :class:`ConfigError` naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError.one(str(path), None, "", f"cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError.one(str(path), None, "", f"not UTF-8 text: {exc.reason}") from exc
    return load_yaml_text(text, into, source=str(path), check=check)
