"""The alert lifecycle: one alert per (device, rule), its states and who moved it when.

DOMAIN.md, "Lifecycle" (the states regulator platforms record for elevator incidents)::

    open ──> acknowledged ──> on_site ──> resolved ──> closed
      │            │             │
      └────────────┴─────────────┴──> false_alarm ──> closed

A state may be skipped forward (a lane that clears before anyone answered is resolved from
``open``), never gone back to. Two rules on top:

* A person may resolve a trapped-passenger alert only once someone is recorded on site
  (TSG T5002-2017: the arrival time is what is measured). The condition ending on its own
  (the car moves) still resolves it, by ``system``, keeping who acknowledged it and when.
* **Flapping.** A signal that the condition ended does not resolve at once: the alert
  resolves when the end has held for ``flap_s`` (:class:`alerts.rules.RuleSettings`). A
  lane that clears for 10 s and is blocked again stays one alert, its ``repeats`` counted.

Pure: the caller passes the time and stores the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from alerts.rules import RULES, RuleId, Severity, Signal

__all__ = [
    "ALLOWED",
    "OPEN_STATES",
    "SYSTEM",
    "Alert",
    "AlertState",
    "Transition",
    "TransitionError",
]

AlertState = Literal["open", "acknowledged", "on_site", "resolved", "closed", "false_alarm"]
#: Who the lifecycle itself acts as.
SYSTEM: Final = "system"
#: States in which an alert is still running (escalates, takes repeats).
OPEN_STATES: Final = frozenset({"open", "acknowledged", "on_site"})
#: Where each state may go.
ALLOWED: Final[dict[str, frozenset[str]]] = {
    "open": frozenset({"acknowledged", "on_site", "resolved", "false_alarm"}),
    "acknowledged": frozenset({"on_site", "resolved", "false_alarm"}),
    "on_site": frozenset({"resolved", "false_alarm"}),
    "resolved": frozenset({"closed"}),
    "false_alarm": frozenset({"closed"}),
    "closed": frozenset(),
}
assert set(ALLOWED) == set(get_args(AlertState))


class TransitionError(ValueError):
    """A transition the lifecycle does not allow; the message says from what to what."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One step of an alert's timeline."""

    t: int
    to: AlertState
    by: str  # an organisation id, or "system"
    note: str = ""
    evidence: str = ""  # a reference (snapshot, document), not the content


@dataclass(slots=True)
class Alert:
    """One alert: a rule's condition on one device, from its first signal to closed."""

    rule: RuleId
    community: str
    device: str
    severity: Severity
    opened_t: int
    state: AlertState = "open"
    updated_t: int = 0
    repeats: int = 0
    #: The condition has ended at this time and the alert resolves if it stays ended.
    ended_t: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    timeline: list[Transition] = field(default_factory=list)

    @classmethod
    def from_signal(cls, signal: Signal) -> Alert:
        """A new alert for an active signal."""
        if not signal.active:
            raise ValueError("an alert opens on an active signal")
        alert = cls(
            rule=signal.rule,
            community=signal.community,
            device=signal.device,
            severity=signal.severity,
            opened_t=signal.t,
            updated_t=signal.t,
            detail=dict(signal.detail),
        )
        alert.timeline.append(Transition(signal.t, "open", SYSTEM, _describe(signal.detail)))
        return alert

    @property
    def running(self) -> bool:
        return self.state in OPEN_STATES

    def reached(self, state: AlertState) -> int | None:
        """When the alert first reached ``state`` (None: never)."""
        return next((tr.t for tr in self.timeline if tr.to == state), None)

    def apply(self, signal: Signal) -> bool:
        """Fold a later signal of the same (device, rule) in; True if the alert changed.

        An active signal is a repeat (and cancels a pending end); an ended one starts the
        flapping window, or, for rules that do not resolve themselves, changes nothing.
        """
        if (signal.rule, signal.community, signal.device) != (
            self.rule,
            self.community,
            self.device,
        ):
            raise ValueError("a signal of another device or rule")
        if not self.running:
            return False
        if signal.active:
            self.repeats += 1
            self.ended_t = None
            self.updated_t = signal.t
            self.detail.update(signal.detail)
            return True
        if not RULES[self.rule].auto_resolve or self.ended_t is not None:
            return False
        self.ended_t = signal.t
        self.updated_t = signal.t
        return True

    def settle(self, now: int, flap_s: float) -> Transition | None:
        """Resolve the alert if its condition has stayed ended for ``flap_s``."""
        if self.ended_t is None or not self.running or now - self.ended_t < flap_s * 1000:
            return None
        ended, self.ended_t = self.ended_t, None
        return self.move("resolved", SYSTEM, max(now, ended), note="condition ended")

    def move(
        self, to: AlertState, by: str, at: int, *, note: str = "", evidence: str = ""
    ) -> Transition:
        """Take one step; :class:`TransitionError` if the lifecycle does not allow it."""
        if to not in ALLOWED[self.state]:
            allowed = ", ".join(sorted(ALLOWED[self.state])) or "nothing (it is final)"
            message = f"cannot go from {self.state} to {to}; from {self.state}: {allowed}"
            raise TransitionError(message)
        if (
            to == "resolved"
            and by != SYSTEM
            and self.rule == "trapped"
            and self.reached("on_site") is None
        ):
            raise TransitionError(
                "cannot resolve a trapped-passenger alert before someone is recorded on site"
            )
        step = Transition(at, to, by, note, evidence)
        self.timeline.append(step)
        self.state = to
        self.updated_t = at
        if to not in OPEN_STATES:
            self.ended_t = None
        return step


def _describe(detail: Mapping[str, Any]) -> str:
    event = detail.get("event")
    return f"raised by {event}" if event else "raised"
