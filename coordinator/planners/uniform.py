"""The classic FedAvg recipe: a fixed number of agents drawn uniformly at random, the same local
work for all, a fixed round timeout (McMahan et al., "Communication-Efficient Learning of Deep
Networks from Decentralized Data", AISTATS 2017). With ``rounds.cut_work_at_deadline`` (the
default) agents cut their work at the timeout and reply with what they did; without it they are
not told the timeout, and whoever replies after it is dropped (Flower's and FedML's default)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from protocol import TrainConfig

from ..engine import JobProgress, RoundRecord
from ..fleet import RoundReplies
from ..registry import AgentRecord
from .base import Prediction, RoundPlan, agent_seed

if TYPE_CHECKING:  # the job module imports the planners' settings
    from ..job import JobSpec

__all__ = ["UniformPlanner"]


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
            work_budget_s=None if rounds.cut_work_at_deadline else max(0.0, budget_left_s),
        )
