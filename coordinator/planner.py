"""Round planners: who trains in the next round, how much, and by when.

A planner is pure: it reads the job's progress and the available agents and returns a
:class:`RoundPlan`. :class:`UniformPlanner` is the classic FedAvg recipe (a fixed number of agents
drawn uniformly at random, the same local work for all, a fixed round timeout).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from protocol import TrainConfig

from .engine import JobProgress, RoundRecord
from .fleet import RoundReplies
from .job import JobSpec
from .registry import AgentRecord

__all__ = ["Planner", "Prediction", "RoundPlan", "UniformPlanner", "agent_seed"]


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


class UniformPlanner:
    """``participants`` agents uniformly at random, the job's local work, a fixed timeout."""

    def __init__(self, spec: JobSpec) -> None:
        self._spec = spec

    def observe(self, plan: RoundPlan, replies: RoundReplies, record: RoundRecord) -> None:
        return None

    def prediction(self) -> Prediction:
        return Prediction()

    def plan(
        self,
        progress: JobProgress,
        available: Sequence[AgentRecord],
        *,
        budget_left_s: float,
        train_options: Mapping[str, float],
    ) -> RoundPlan:
        rounds = self._spec.rounds
        nxt = progress.round + 1
        rng = random.Random(f"{self._spec.seed}:{nxt}")
        ids = [a.agent_id for a in available]
        chosen = tuple(sorted(rng.sample(ids, min(rounds.participants, len(ids)))))
        configs = {
            agent_id: TrainConfig(
                epochs=rounds.local_epochs,
                local_steps=rounds.local_steps,
                batch_size=rounds.batch_size,
                learning_rate=rounds.learning_rate,
                proximal_mu=float(train_options.get("proximal_mu", 0.0)),
                seed=agent_seed(self._spec.seed, nxt, agent_id),
            )
            for agent_id in chosen
        }
        return RoundPlan(
            participants=chosen,
            configs=configs,
            timeout_s=min(rounds.round_timeout_s, max(0.0, budget_left_s)),
            quorum=len(chosen),
            min_results=min(rounds.min_results, len(chosen)) if chosen else rounds.min_results,
            info={"planner": "uniform", "available": len(ids)},
        )
