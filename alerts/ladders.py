"""Escalation ladders as data: who is told first and who next, per rule, overridable per
city (a set of districts), district or community. The shipped ladders are
``alerts/ladders.yaml``; its header documents the format.

Pure: :func:`parse_ladders` takes the text, :meth:`Ladder.due` takes the alert and the time.
The server keeps which steps were taken (exactly once, across restarts and workers).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from typing import Any, Final

import msgspec
import yaml

from alerts.lifecycle import Alert, AlertState
from alerts.routing import Role
from alerts.rules import RULES

__all__ = [
    "ARRIVAL_DEADLINE",
    "Ladder",
    "LadderError",
    "Ladders",
    "Step",
    "default_ladders",
    "parse_duration",
    "parse_ladders",
]

#: ``after`` naming the community's arrival deadline (``arrival_deadline_min``).
ARRIVAL_DEADLINE: Final = "arrival_deadline"
_DURATION: Final = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT_MS: Final = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
#: How far along the lifecycle each state is; ``false_alarm`` ends the alert like ``closed``.
_RANK: Final[dict[str, int]] = {
    "open": 0,
    "acknowledged": 1,
    "on_site": 2,
    "resolved": 3,
    "false_alarm": 3,
    "closed": 4,
}


class LadderError(ValueError):
    """A ladder file that cannot be used; the message names the file and the path in it."""


def parse_duration(text: str) -> int:
    """``90s``, ``15m``, ``2h``, ``30d`` in milliseconds; ValueError otherwise."""
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 2h or 30d")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


class Step(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One rung: tell ``to`` at ``after`` unless the alert reached ``unless`` by then."""

    after: str
    to: list[Role]
    unless: AlertState = "resolved"
    when: dict[str, str] = {}
    tag: str = ""

    def at(self, alert: Alert, arrival_deadline_min: int) -> int:
        """When the step is due (epoch ms)."""
        if self.after == ARRIVAL_DEADLINE:
            return alert.opened_t + arrival_deadline_min * 60_000
        return alert.opened_t + parse_duration(self.after)

    def applies(self, alert: Alert) -> bool:
        """The alert has not reached ``unless`` and its detail matches ``when``."""
        if _RANK[alert.state] >= _RANK[self.unless]:
            return False
        return all(str(alert.detail.get(k)) == v for k, v in self.when.items())


class Ladder(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One rule's ladder."""

    first: list[Role]
    steps: list[Step] = []

    def due(
        self, alert: Alert, now: int, taken: set[int], arrival_deadline_min: int
    ) -> list[tuple[int, Step]]:
        """Steps (index, step) due at ``now`` that were not ``taken`` and still apply."""
        return [
            (i, step)
            for i, step in enumerate(self.steps)
            if i not in taken
            and step.at(alert, arrival_deadline_min) <= now
            and step.applies(alert)
        ]

    def next_at(self, alert: Alert, taken: set[int], arrival_deadline_min: int) -> int | None:
        """When the next step not taken falls due (for the server's timer), if any."""
        times = [
            step.at(alert, arrival_deadline_min)
            for i, step in enumerate(self.steps)
            if i not in taken and step.applies(alert)
        ]
        return min(times) if times else None


_Raw = dict[str, dict[str, Any]]  # rule -> its ladder, not yet checked


class _City(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A city's overrides: the districts it covers and its ladders."""

    districts: list[str]
    rules: _Raw


class _LadderFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # Ladders are converted one by one afterwards, so that a problem names its rule.
    rules: _Raw
    cities: dict[str, _City] = {}
    districts: dict[str, _Raw] = {}
    communities: dict[str, _Raw] = {}


def _convert(where: str, raw: _Raw, problems: list[str]) -> dict[str, Ladder]:
    """Each rule's ladder of one layer; problems named ``<where>.<rule>: ...``."""
    out: dict[str, Ladder] = {}
    for rule, ladder in raw.items():
        if rule not in RULES:
            problems.append(f"{where}.{rule}: not a rule (rules: {', '.join(sorted(RULES))})")
            continue
        try:
            out[rule] = msgspec.convert(ladder, Ladder)
        except msgspec.ValidationError as exc:
            problems.append(f"{where}.{rule}: {exc}")
    return out


class Ladders:
    """Every rule's ladder, with the overrides; see :func:`parse_ladders`."""

    def __init__(
        self,
        rules: Mapping[str, Ladder],
        districts: Mapping[str, Mapping[str, Ladder]],
        communities: Mapping[str, Mapping[str, Ladder]],
        cities: Mapping[str, Mapping[str, Ladder]] | None = None,
    ) -> None:
        self.rules = dict(rules)
        self.districts = {k: dict(v) for k, v in districts.items()}
        self.communities = {k: dict(v) for k, v in communities.items()}
        #: A district's city's overrides, by district.
        self.cities = {k: dict(v) for k, v in (cities or {}).items()}

    def for_alert(self, rule: str, community: str, district: str) -> Ladder:
        """The ladder that applies: the community's override, the district's, the city's, or
        the rule's."""
        for layer, key in (
            (self.communities, community),
            (self.districts, district),
            (self.cities, district),
        ):
            found = layer.get(key, {}).get(rule)
            if found is not None:
                return found
        return self.rules[rule]


def parse_ladders(text: str, source: str = "ladders") -> Ladders:
    """Parse and check a ladder file; :class:`LadderError` names the file and where."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LadderError(f"{source}: not valid YAML: {exc}") from exc
    try:
        parsed = msgspec.convert(data, _LadderFile)
    except msgspec.ValidationError as exc:
        raise LadderError(f"{source}: {exc}") from exc
    problems: list[str] = []
    missing = sorted(set(RULES) - set(parsed.rules))
    if missing:
        problems.append(f"$.rules: no ladder for {', '.join(missing)}")
    rules = _convert("$.rules", parsed.rules, problems)
    districts = {d: _convert(f"$.districts.{d}", v, problems) for d, v in parsed.districts.items()}
    communities = {
        c: _convert(f"$.communities.{c}", v, problems) for c, v in parsed.communities.items()
    }
    layers: list[tuple[str, Mapping[str, Ladder]]] = [("$.rules", rules)]
    layers += [(f"$.districts.{d}", v) for d, v in districts.items()]
    by_district: dict[str, dict[str, Ladder]] = {}
    for name, city in parsed.cities.items():
        city_rules = _convert(f"$.cities.{name}.rules", city.rules, problems)
        layers.append((f"$.cities.{name}.rules", city_rules))
        for i, d in enumerate(city.districts):
            if d in by_district:
                problems.append(f"$.cities.{name}.districts[{i}]: {d!r} is in two cities")
            by_district[d] = city_rules
    layers += [(f"$.communities.{c}", v) for c, v in communities.items()]
    for where, ladders in layers:
        for rule, ladder in ladders.items():
            if not ladder.first:
                problems.append(f"{where}.{rule}.first: tell somebody first")
            for i, step in enumerate(ladder.steps):
                path = f"{where}.{rule}.steps[{i}]"
                if step.after != ARRIVAL_DEADLINE:
                    try:
                        parse_duration(step.after)
                    except ValueError as exc:
                        problems.append(f"{path}.after: {exc} or {ARRIVAL_DEADLINE}")
                if not step.to:
                    problems.append(f"{path}.to: tell somebody")
                if step.unless in ("open", "closed"):
                    problems.append(f"{path}.unless: {step.unless} would never or always skip")
    if problems:
        raise LadderError(f"{source}: " + "; ".join(problems))
    return Ladders(rules, districts, communities, by_district)


def default_ladders() -> Ladders:
    """The ladders shipped in ``alerts/ladders.yaml``."""
    text = resources.files("alerts").joinpath("ladders.yaml").read_text(encoding="utf-8")
    return parse_ladders(text, "alerts/ladders.yaml")
