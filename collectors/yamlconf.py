"""Typed YAML loading: ``safe_load``, duplicate keys refused, then into frozen msgspec types.

Every configuration Linli reads from YAML (registry, gateway site configs, device profiles)
goes through :func:`load_yaml`, so that every error a technician sees has the same shape::

    registry.yaml:42: communities[3].devices[0].kind: Invalid enum value 'lift'

After loading, no code reads a raw dict: it gets the typed object or a :class:`ConfigError`.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

__all__ = ["ConfigError", "Problem", "key_lines", "load_yaml", "load_yaml_text", "read_text"]

T = TypeVar("T")

_MSGSPEC_PATH = re.compile(
    r"^(?P<msg>.*?)(?: - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`)?$", re.DOTALL
)


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
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last),
    and reads booleans as YAML 1.2 does: only ``true``/``false``. PyYAML follows YAML 1.1,
    where ``yes``, ``no``, ``on``, ``off`` are booleans too; in a profile they are what a
    device sends (``"status": "yes"``), and a technician writes them unquoted."""

    yaml_implicit_resolvers = {  # noqa: RUF012 (PyYAML reads it as a class attribute)
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    @classmethod
    def _add_bools(cls) -> None:
        cls.add_implicit_resolver(
            "tag:yaml.org,2002:bool",
            re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
            list("tTfF"),
        )

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        """A mapping whose keys ``on``, ``off``, ``yes``, ``no`` (YAML 1.1 booleans) stay the
        names they are written as: no Linli file has boolean keys, and a device's values
        ("yes", "off") are common enum keys."""
        assert isinstance(node, yaml.MappingNode)
        self.flatten_mapping(node)
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, bool) and isinstance(key_node, yaml.ScalarNode):
                key = key_node.value
            if key in mapping:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


_StrictLoader._add_bools()


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


#: At most this many type problems are reported from one file.
MAX_TYPE_PROBLEMS = 50
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]+)`$")


def _steps(path: str) -> list[str | int | None]:
    """``.points[2].bits[...]`` → ["points", 2, "bits", None] (None: a dict key or value)."""
    out: list[str | int | None] = []
    for name, index in _STEP.findall(path):
        out.append(name if name else (None if index == "..." else int(index)))
    return out


class _Removals:
    """List elements taken out while converting, by the list's path in the file as written,
    so that later paths (which count the elements left) are mapped back to the file's."""

    def __init__(self) -> None:
        self._gone: dict[str, list[int]] = {}
        #: Single values taken out (the key then has its default), by path in the file.
        self.leaves: set[str] = set()

    def touched(self, where: str) -> bool:
        """Whether elements were taken out of the list at ``where`` (a check about that list,
        "needs at least one", would only repeat the type problem), or ``where`` is a value
        taken out (a check of its default would mislead)."""
        return where in self._gone or where in self.leaves

    def drop_leaf(self, data: Any, steps: list[str | int | None]) -> bool:
        """Take out just the value at ``steps`` (a key of a mapping), so that its object is
        still converted and checked with the key's default; False if it is not a key or was
        taken out before (then it was required: the caller drops its element)."""
        if not steps or not isinstance(steps[-1], str):
            return False
        holder: Any = data
        for step in steps[:-1]:
            holder = _child(holder, step)
            if holder is _MISSING_NODE:
                return False
        where = _render(self.original(steps))
        if not isinstance(holder, dict) or steps[-1] not in holder or where in self.leaves:
            return False
        del holder[steps[-1]]
        self.leaves.add(where)
        return True

    def original(self, steps: list[str | int | None]) -> list[str | int | None]:
        out: list[str | int | None] = []
        for step in steps:
            if isinstance(step, int):
                index = step
                for gone in sorted(self._gone.get(_render(out), [])):
                    if gone <= index:
                        index += 1
                out.append(index)
            else:
                out.append(step)
        return out

    def drop(self, data: Any, steps: list[str | int | None]) -> str | None:
        """Take out the part of ``data`` a type problem is in, so that converting again finds
        the next problem: the innermost list element holding it (a whole point, a whole
        device), else the top-level key. Returns the key dropped at the top level ("" for a
        list element), or None when nothing can be dropped."""
        holder: Any = data
        last_list: tuple[list[Any], int, int] | None = None  # list, index, steps consumed
        for n, step in enumerate(steps):
            if isinstance(step, int) and isinstance(holder, list) and step < len(holder):
                last_list = (holder, step, n)
                holder = holder[step]
            elif isinstance(step, str) and isinstance(holder, dict) and step in holder:
                holder = holder[step]
            else:
                break
        if last_list is not None:
            container, index, n = last_list
            where = self.original(steps[: n + 1])
            original_index = where[-1]
            assert isinstance(original_index, int)
            self._gone.setdefault(_render(where[:-1]), []).append(original_index)
            del container[index]
            return ""
        top = steps[0] if steps else None
        if isinstance(top, str) and isinstance(data, dict) and top in data:
            del data[top]
            return top
        return None


def _render(steps: list[str | int | None]) -> str:
    return "".join(
        f"[{s}]" if isinstance(s, int) else "[...]" if s is None else f".{s}" for s in steps
    )


def _options_at(into: Any, data: Any, steps: list[str | int | None]) -> list[str] | None:
    """The allowed values of the Literal at ``steps`` of type ``into`` (None if not one)."""
    info, data = _type_at(into, data, steps)
    info = _unwrap(info, data)
    if isinstance(info, msgspec.inspect.LiteralType):
        return [str(v) for v in info.values]
    return None


def _keys_at(into: Any, data: Any, steps: list[str | int | None]) -> list[str]:
    """The keys the object at ``steps`` may have (its struct's fields)."""
    info, data = _type_at(into, data, steps)
    info = _unwrap(info, data)
    if isinstance(info, msgspec.inspect.StructType):
        return [f.encode_name for f in info.fields]
    return []


def _type_at(into: Any, data: Any, steps: list[str | int | None]) -> tuple[Any, Any]:
    """The type (msgspec.inspect) and the data at ``steps``; (None, None) if lost."""
    info: Any = msgspec.inspect.type_info(into)
    for step in steps:
        info = _unwrap(info, data)
        if isinstance(info, msgspec.inspect.StructType) and isinstance(step, str):
            found = next((f for f in info.fields if f.encode_name == step), None)
            if found is None:
                return None, None
            info = found.type
            data = data.get(step) if isinstance(data, dict) else None
        elif isinstance(info, msgspec.inspect.ListType | msgspec.inspect.FrozenSetType):
            info = info.item_type
            in_range = isinstance(data, list) and isinstance(step, int) and step < len(data)
            data = data[step] if in_range else None
        elif isinstance(info, msgspec.inspect.DictType):
            info = info.value_type
            data = None
        else:
            return None, None
    return info, data


def _unwrap(info: Any, data: Any) -> Any:
    """The member of a union that ``data`` is meant as: not None; for tagged structs, the one
    whose tag the data carries."""
    if not isinstance(info, msgspec.inspect.UnionType):
        return info
    members = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
    structs = [t for t in members if isinstance(t, msgspec.inspect.StructType)]
    if structs and isinstance(data, dict):
        for t in structs:
            if t.tag_field is not None and data.get(t.tag_field) == t.tag:
                return t
    return members[0] if len(members) == 1 else info


def _explain(into: Any, data: Any, steps: list[str | int | None], message: str) -> str:
    """msgspec's message, with the valid values and the nearest one for a bad name."""
    bad = re.match(r"^Invalid enum value (?P<v>.+)$", message)
    options = _options_at(into, data, steps) if bad else None
    if not bad or not options:
        return message
    value = bad.group("v").strip("'\"")
    near = difflib.get_close_matches(value, options, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return f"{value!r} is not one of {', '.join(options)}{hint}"


_MISSING_NODE: Any = object()


def _child(holder: Any, step: str | int | None) -> Any:
    """``holder[step]``, or _MISSING_NODE when there is no such element or key."""
    if isinstance(holder, list) and isinstance(step, int):
        return holder[step] if step < len(holder) else _MISSING_NODE
    if isinstance(holder, dict) and isinstance(step, str):
        return holder.get(step, _MISSING_NODE)
    return _MISSING_NODE


def _stand_in(into: Any, original: Any, at: list[str | int | None]) -> str | None:
    """For a required name that was wrong: the valid name nearest to what was written."""
    options = _options_at(into, original, at)
    if not options:
        return None
    written: Any = original
    for step in at:
        written = _child(written, step)
    near = difflib.get_close_matches(str(written), options, n=1, cutoff=0.0)
    return near[0] if near else options[0]


def _put_key(data: Any, steps: list[str | int | None], name: str, value: Any) -> bool:
    holder: Any = data
    for step in steps:
        holder = _child(holder, step)
        if holder is _MISSING_NODE:
            return False
    if not isinstance(holder, dict) or name in holder:
        return False
    holder[name] = value
    return True


def _drop_key(data: Any, steps: list[str | int | None], name: str) -> bool:
    """Delete key ``name`` of the object at ``steps``; False if it is not there."""
    holder: Any = data
    for step in steps:
        holder = _child(holder, step)
        if holder is _MISSING_NODE:
            return False
    if isinstance(holder, dict) and name in holder:
        del holder[name]
        return True
    return False


def _convert_all(
    data: Any, into: type[T], lines: dict[str, int], source: str
) -> tuple[T | None, list[Problem], _Removals]:
    """Convert ``data``; on a type problem, note it, take its part out, and convert again, so
    that one run reports every type problem (at most MAX_TYPE_PROBLEMS). Returns the value
    (None if the file's skeleton is too broken to convert) and the problems."""
    problems: list[Problem] = []
    original = copy.deepcopy(data)
    dropped: set[str] = set()
    removals = _Removals()
    for _ in range(MAX_TYPE_PROBLEMS):
        try:
            return msgspec.convert(data, into), problems, removals
        except msgspec.ValidationError as exc:
            match = _MSGSPEC_PATH.match(str(exc))
            assert match is not None  # the pattern matches any string
            path = match.group("path") or ""
            message = match.group("msg")
            if match.group("key"):
                message = f"a key: {message}"
            missing = _MISSING.match(message)
            if missing and not path and missing.group("name") in dropped:
                return None, problems, removals  # a required key already reported as wrong
            steps = _steps(path)
            if missing is not None:
                name = missing.group("name")
                at = removals.original([*steps, name])
                if _render(at) in removals.leaves:
                    # A required value taken out for its type problem (already reported).
                    # A name from a fixed list: put the nearest valid one in its place, so
                    # the rest is still checked (checks of it stay silent); else take out
                    # its whole element, and say nothing more.
                    stand_in = _stand_in(into, original, at)
                    if stand_in is not None and _put_key(data, steps, name, stand_in):
                        continue
                    took = removals.drop(data, steps)
                    if took is None:
                        return None, problems, removals
                    if took:
                        dropped.add(took)
                    continue
            unknown = _UNKNOWN.match(message)
            if unknown is not None and _drop_key(data, steps, unknown.group("name")):
                # A key that is not one: named at its own line, with the nearest valid key;
                # taken out, the rest of its object is still checked.
                name = unknown.group("name")
                where = _render(removals.original(steps)) + f".{name}"
                keys = _keys_at(into, original, removals.original(steps))
                near = difflib.get_close_matches(name, keys, n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                problems.append(Problem(source, _nearest_line(lines, where), where.lstrip("."),
                                        f"{name!r} is not a key here{hint}"))  # fmt: skip
                continue
            where = _render(removals.original(steps))
            reason = _explain(into, original, removals.original(steps), message)
            problems.append(Problem(source, _nearest_line(lines, where), where.lstrip("."), reason))
            if removals.drop_leaf(data, steps):
                continue  # the rest of its object is still converted and checked
            took = removals.drop(data, steps)
            if took is None:
                return None, problems, removals
            if took:
                dropped.add(took)
    return None, problems, removals


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
    value, problems, removals = _convert_all(data, into, lines, source)
    if check is not None and value is not None:
        for path, reason in check(value):
            where = _render(removals.original(_steps("." + path)))
            if removals.touched(where):
                continue
            problems.append(Problem(source, _nearest_line(lines, where), where.lstrip("."), reason))
    if problems:
        raise ConfigError(problems)
    assert value is not None
    return value


def key_lines(text: str) -> dict[str, int]:
    """The 1-based line of each key path of a YAML text (``.points[3].address`` → 41); empty
    if it does not parse (the loader reports that)."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError:
        return {}
    finally:
        loader.dispose()
    lines: dict[str, int] = {}
    if node is not None:
        _index_lines(node, "", lines)
    return lines


def read_text(path: Path) -> str:
    """A configuration or capture file's text; a :class:`ConfigError` naming it if it cannot
    be read or is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError.one(str(path), None, "", f"cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError.one(str(path), None, "", f"not UTF-8 text: {exc.reason}") from exc


def load_yaml(path: Path, into: type[T], *, check: Check[T] | None = None) -> T:
    """Read and convert a YAML file; every failure is a :class:`ConfigError` naming it."""
    return load_yaml_text(read_text(path), into, source=str(path), check=check)
