"""Progress lines of a running job, as ``hyperfleet demo`` prints them from ``jobs/{id}/state``.

The coordinator publishes one state per completed round and, when the job ends, the final state
once more with the same round and the ending's message. :class:`ProgressPrinter` turns that
stream into lines with every round printed once, and the planner's plan and prediction on it::

    round  12  accuracy 0.8712  best 0.8712 / 0.90  participants 10  failed  1  elapsed  14.2s of 600s
      [hyperfl] deadline 1.9s, 10 of 48 online, predicted: target in 31s (19 rounds), feasible yes

An asynchronous job (``mode = "async"``) publishes a state per model version, with its buffer::

    round 157  accuracy 0.8524  best 0.8663 / 0.90  participants  5  failed  0  elapsed  50.7s of 600s
      [async] staleness 2 2 0 1 3, 38 stale dropped, 14 in flight, feasible yes
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocol import JobState

__all__ = ["ProgressPrinter", "plan_line", "round_line"]

_FEASIBLE = {True: "yes", False: "NO", None: "not yet known"}


def round_line(state: JobState) -> str:
    """One line: round, accuracy, best against target, participants, failures, time used."""
    return (
        f"round {state.round:3d}  accuracy {state.accuracy:.4f}  best {state.best_accuracy:.4f}"
        f" / {state.target_accuracy:.2f}  participants {len(state.participants):2d}"
        f"  failed {len(state.failures):2d}  elapsed {state.elapsed_s:6.1f}s"
        f" of {state.time_budget_s:.0f}s"
    )


def _number(plan: Mapping[str, Any], key: str) -> float | None:
    value = plan.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def plan_line(plan: Mapping[str, Any]) -> str:
    """The round's plan and the planner's prediction, or ``""`` when the plan names no planner.

    Keys read (all optional, from ``RoundPlan.info``): ``planner``, ``deadline_s``,
    ``participants``, ``available``, ``explore``, ``predicted_time_to_target_s``,
    ``predicted_rounds_to_target``, ``feasible``. A planner without predictions (``uniform``)
    shows what it has.
    """
    if plan.get("mode") == "async":
        return _async_line(plan)
    planner = plan.get("planner")
    if not isinstance(planner, str) or not planner:
        return ""
    parts: list[str] = []
    deadline = _number(plan, "deadline_s")
    if deadline is not None:
        parts.append(f"deadline {deadline:.1f}s")
    chosen, available = _number(plan, "participants"), _number(plan, "available")
    if available is not None:
        who = f"{chosen:.0f} of {available:.0f} online" if chosen is not None else ""
        explore = _number(plan, "explore")
        parts.append(
            (who or f"{available:.0f} online") + (f" ({explore:.0f} exploring)" if explore else "")
        )
    if "feasible" in plan:
        eta, rounds = (
            _number(plan, "predicted_time_to_target_s"),
            _number(plan, "predicted_rounds_to_target"),
        )
        if eta is not None:
            parts.append(
                f"predicted: target in {eta:.0f}s"
                + (f" ({rounds:.0f} rounds)" if rounds is not None else "")
            )
        feasible = plan["feasible"]
        parts.append(f"feasible {_FEASIBLE.get(feasible, str(feasible))}")
    return f"  [{planner}] " + ", ".join(parts) if parts else f"  [{planner}]"


def _async_line(plan: Mapping[str, Any]) -> str:
    """An async version's buffer: its updates' staleness, stale drops so far, work in flight,
    and the planner's prediction when it has one."""
    parts: list[str] = []
    staleness = plan.get("staleness")
    if isinstance(staleness, list) and all(isinstance(t, int) for t in staleness):
        parts.append("staleness " + " ".join(str(t) for t in staleness))
    dropped, in_flight = _number(plan, "stale_dropped"), _number(plan, "in_flight")
    if dropped is not None:
        parts.append(f"{dropped:.0f} stale dropped")
    if in_flight is not None:
        parts.append(f"{in_flight:.0f} in flight")
    eta = _number(plan, "predicted_time_to_target_s")
    if eta is not None:
        parts.append(f"predicted: target in {eta:.0f}s")
    if plan.get("feasible") is not None:
        parts.append(f"feasible {_FEASIBLE.get(plan['feasible'], str(plan['feasible']))}")
    return "  [async] " + ", ".join(parts)


class ProgressPrinter:
    """Lines to print for each state received: a round once, a message once."""

    def __init__(self) -> None:
        self._last_round = 0
        self._messages: set[str] = set()

    def lines(self, state: JobState) -> list[str]:
        """The lines ``state`` adds: nothing for a round already shown, save a new message."""
        out: list[str] = []
        if state.round > self._last_round:
            self._last_round = state.round
            out.append(round_line(state))
            plan = plan_line(state.plan)
            if plan:
                out.append(plan)
        if state.message and state.message not in self._messages:
            self._messages.add(state.message)
            out.append(f"coordinator: {state.message}")
        return out
