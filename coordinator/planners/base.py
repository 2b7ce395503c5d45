"""The planner port: who trains in the next round, how much, and by when.

A planner is pure: it reads the job's progress and the available agents and returns a
:class:`RoundPlan`; it learns from each finished round through ``observe``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from protocol import TrainConfig

from ..engine import JobProgress, RoundRecord
from ..fleet import RoundReplies
from ..registry import AgentRecord

__all__ = ["Planner", "Prediction", "RoundPlan", "agent_seed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundPlan:
    participants: tuple[str, ...]
    configs: Mapping[str, TrainConfig]
    timeout_s: float
    quorum: int
    """Results that end the round early (everyone answering also ends it)."""
    min_results: int
    """Fewest results the round may aggregate; fewer and the model stays as it was."""
    info: Mapping[str, Any] = field(default_factory=dict)
    """What the planner wants monitors to see (predictions, reasons)."""
    work_budget_s: float | None = None
    """Seconds the agents are told they have (``TrainIns.budget_s``), when not ``timeout_s``: a
    planner that does not cut work at the round's deadline tells them more, and a late reply is
    that agent's failure."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Prediction:
    """What a planner expects: ``feasible`` is ``None`` until it knows enough to say."""

    feasible: bool | None = None
    time_to_target_s: float | None = None
    rounds_to_target: int | None = None
    accuracy_at_budget: float | None = None
    asymptote: float | None = None

    def to_json(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 4)

        return {
            "feasible": self.feasible,
            "predicted_time_to_target_s": r(self.time_to_target_s),
            "predicted_rounds_to_target": self.rounds_to_target,
            "predicted_accuracy_at_budget": r(self.accuracy_at_budget),
            "predicted_asymptote": r(self.asymptote),
        }


class Planner(Protocol):
    def observe(self, plan: RoundPlan, replies: RoundReplies, record: RoundRecord) -> None:
        """Learn from the round just finished."""
        ...

    def prediction(self) -> Prediction: ...

    def plan(
        self,
        progress: JobProgress,
        available: Sequence[AgentRecord],
        *,
        budget_left_s: float,
        train_options: Mapping[str, float],
    ) -> RoundPlan: ...


def agent_seed(job_seed: int, round: int, agent_id: str) -> int:
    """A reproducible per-agent, per-round seed for local batch order."""
    return random.Random(f"{job_seed}:{round}:{agent_id}").getrandbits(31)
