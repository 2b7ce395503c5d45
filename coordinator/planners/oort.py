"""Oort-style participant selection with a round deadline (Lai et al., "Oort: Efficient Federated
Learning via Guided Participant Selection", OSDI 2021, §4 and Algorithm 1).

Each round the planner

1. scores every agent it has heard back from by **statistical utility**
   ``|B_i| * sqrt(mean(loss^2))`` over the examples ``B_i`` it trained last time (the agents report
   their mean training loss; its square stands in for the mean of squares), plus Oort's
   temporal-uncertainty bonus ``sqrt(0.1 * ln(round) / last_round_i)`` for agents not asked
   lately, times the **system utility** ``(T / t_i) ** alpha`` when the agent's last reply time
   ``t_i`` is over the preferred round duration ``T`` (no penalty when it is under);
2. **exploits** ``(1 - eps) * K`` seats: the agents whose utility is at least ``cut_off`` times the
   ``(1 - eps) * K``-th best, sampled in proportion to utility; and **explores** ``eps * K`` seats
   among agents never tried, the faster ones (by announced train rate) first. ``eps`` starts at
   ``epsilon`` and decays by ``epsilon_decay`` a round down to ``min_epsilon``;
3. **over-commits**: asks ``ceil(overcommit * K)`` agents and ends the round at the first ``K``
   results or at the deadline ``T``, whichever comes first (agents cut their work there);
4. **paces**: every ``pacer_window`` rounds, when the statistical utility collected in the last
   window fell below the window before it, ``T`` grows by ``pacer_step_s`` (up to the job's
   ``round_timeout_s``), letting slower agents with useful data in.

Every agent gets the job's fixed local work (``[rounds]`` epochs or steps): Oort selects; it
does not size work. The planner is pure: :meth:`OortPlanner.plan` reads the available agents,
:meth:`OortPlanner.observe` learns from each round's replies.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from protocol import TrainConfig

from ..engine import JobProgress, RoundRecord
from ..fleet import RoundReplies
from ..registry import AgentRecord
from .base import Prediction, RoundPlan, agent_seed

__all__ = ["OortPlanner", "OortSettings", "OortStats", "oort_utility"]


@dataclass(frozen=True, slots=True, kw_only=True)
class OortSettings:
    participants: int = 10
    """``K``: results a round aggregates (the round ends at the ``K``-th)."""
    deadline_s: float = 30.0
    """The initial preferred round duration ``T``, seconds: also the round's deadline."""
    max_deadline_s: float = 60.0
    """The most the pacer may relax ``T`` to (the job's ``round_timeout_s``)."""
    alpha: float = 2.0
    """Exponent of the straggler penalty ``(T / t_i) ** alpha`` (Oort's default 2)."""
    epsilon: float = 0.9
    epsilon_decay: float = 0.98
    min_epsilon: float = 0.2
    cut_off: float = 0.95
    """Exploitation samples among agents with utility >= cut_off x the (1-eps)K-th best."""
    overcommit: float = 1.3
    pacer_window: int = 5
    pacer_step_s: float = 5.0
    local_epochs: int = 1
    local_steps: int | None = None
    batch_size: int = 16
    learning_rate: float = 0.1
    min_results: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.participants < 1:
            raise ValueError("participants must be at least 1")
        if not 0 < self.deadline_s <= self.max_deadline_s:
            raise ValueError("need 0 < deadline_s <= max_deadline_s")
        if not 0 <= self.min_epsilon <= self.epsilon <= 1 or not 0 < self.epsilon_decay <= 1:
            raise ValueError("need 0 <= min_epsilon <= epsilon <= 1 and 0 < epsilon_decay <= 1")
        if self.alpha < 0 or not 0 < self.cut_off <= 1 or self.overcommit < 1:
            raise ValueError("need alpha >= 0, 0 < cut_off <= 1 and overcommit >= 1")
        if self.pacer_window < 1 or self.pacer_step_s < 0:
            raise ValueError("need pacer_window >= 1 and pacer_step_s >= 0")


@dataclass(slots=True)
class OortStats:
    """What the planner knows of one agent from its replies."""

    examples: int = 0
    """``|B_i|``: examples it trained in its last result."""
    loss: float = 0.0
    """Its last reported mean training loss."""
    duration_s: float = 0.0
    """``t_i``: seconds from instruction to its last reply."""
    last_round: int = 0
    """The last round it was asked to train (0: never)."""
    explored: bool = False
    """It has answered (or failed) at least once."""


def oort_utility(stats: OortStats, *, round: int, preferred_s: float, alpha: float) -> float:
    """Oort's utility of one explored agent (Lai et al. 2021, Algorithm 1, lines 5-9).

    ``|B| * sqrt(loss^2)`` plus ``sqrt(0.1 * ln(round) / last_round)``, times
    ``(preferred_s / t) ** alpha`` when the agent took ``t > preferred_s`` seconds. Dimensionless,
    >= 0.
    """
    statistical = stats.examples * math.sqrt(max(stats.loss, 0.0) ** 2)
    if stats.last_round > 0 and round > 1:
        statistical += math.sqrt(0.1 * math.log(round) / stats.last_round)
    if stats.duration_s > preferred_s > 0:
        statistical *= (preferred_s / stats.duration_s) ** alpha
    return statistical


class OortPlanner:
    """Oort's guided participant selection; see the module docstring for the rule."""

    def __init__(self, settings: OortSettings) -> None:
        self.s = settings
        self.stats: dict[str, OortStats] = {}
        self.preferred_s = settings.deadline_s
        self.epsilon = settings.epsilon
        self._rng = random.Random(settings.seed)
        self._window_utility: list[float] = []
        self._last_window: float | None = None

    def observe(self, plan: RoundPlan, replies: RoundReplies, record: RoundRecord) -> None:
        collected = 0.0
        for agent_id, res in replies.results.items():
            st = self.stats.setdefault(agent_id, OortStats())
            st.examples = res.num_examples
            if math.isfinite(res.loss):
                st.loss = res.loss
            st.duration_s = replies.reply_s.get(agent_id, record.duration_s)
            st.explored = True
            collected += st.examples * abs(st.loss)
        for agent_id in replies.failures:
            st = self.stats.setdefault(agent_id, OortStats())
            st.explored = True
            # A failure took at least the whole round: the penalty sees it as a straggler.
            st.duration_s = max(st.duration_s, record.duration_s, plan.timeout_s)
        self._pace(collected)

    def _pace(self, collected: float) -> None:
        """Oort's pacer: relax ``T`` when a window's utility falls below the one before it."""
        self._window_utility.append(collected)
        if len(self._window_utility) < self.s.pacer_window:
            return
        total = sum(self._window_utility)
        self._window_utility = []
        if self._last_window is not None and total < self._last_window:
            self.preferred_s = min(self.s.max_deadline_s, self.preferred_s + self.s.pacer_step_s)
        self._last_window = total

    def prediction(self) -> Prediction:
        return Prediction()  # Oort does not predict feasibility

    def select(self, candidates: Sequence[AgentRecord], round: int) -> tuple[str, ...]:
        """The agents to ask in ``round``: ``ceil(overcommit * K)`` of ``candidates`` (fewer when
        fewer are available), in id order."""
        s = self.s
        want = min(len(candidates), math.ceil(s.overcommit * s.participants))
        if want == 0:
            return ()
        tried = {aid for aid, st in self.stats.items() if st.explored}
        explored = [a for a in candidates if a.agent_id in tried]
        unexplored = [a for a in candidates if a.agent_id not in tried]
        n_explore = min(len(unexplored), max(0, _round_half(self.epsilon * want)))
        n_exploit = min(len(explored), want - n_explore)
        n_explore = min(len(unexplored), want - n_exploit)  # fill seats exploitation cannot
        chosen: list[str] = []
        if n_exploit:
            scored = sorted(
                (
                    (
                        oort_utility(
                            self.stats[a.agent_id],
                            round=round,
                            preferred_s=self.preferred_s,
                            alpha=s.alpha,
                        ),
                        a.agent_id,
                    )
                    for a in explored
                ),
                reverse=True,
            )
            bar = s.cut_off * scored[n_exploit - 1][0]
            pool = [(u, aid) for u, aid in scored if u >= bar]
            while len(chosen) < n_exploit and pool:
                weights = [max(u, 1e-9) for u, _ in pool]
                pick = self._rng.choices(range(len(pool)), weights=weights)[0]
                chosen.append(pool.pop(pick)[1])
        if n_explore:
            # Oort explores the fastest unexplored clients first (by their announced speed),
            # sampled so that equal devices take turns.
            def speed(a: AgentRecord) -> float:
                hello = a.hello
                rate = hello.profile.get("train_rate", 0.0) if hello is not None else 0.0
                return float(rate) * (1.0 + 0.01 * self._rng.random())

            for a in sorted(unexplored, key=speed, reverse=True)[:n_explore]:
                chosen.append(a.agent_id)
        return tuple(sorted(chosen))

    def plan(
        self,
        progress: JobProgress,
        available: Sequence[AgentRecord],
        *,
        budget_left_s: float,
        train_options: Mapping[str, float],
    ) -> RoundPlan:
        s = self.s
        rnd = progress.round + 1
        chosen = self.select(available, rnd) if budget_left_s > 0 else ()
        for agent_id in chosen:
            self.stats.setdefault(agent_id, OortStats()).last_round = rnd
        self.epsilon = max(s.min_epsilon, self.epsilon * s.epsilon_decay)
        configs = {
            agent_id: TrainConfig(
                epochs=s.local_epochs,
                local_steps=s.local_steps,
                batch_size=s.batch_size,
                learning_rate=s.learning_rate,
                proximal_mu=float(train_options.get("proximal_mu", 0.0)),
                seed=agent_seed(s.seed, rnd, agent_id),
            )
            for agent_id in chosen
        }
        timeout = min(self.preferred_s, max(0.0, budget_left_s))
        info: dict[str, Any] = {
            "planner": "oort",
            "deadline_s": round(timeout, 3),
            "preferred_s": round(self.preferred_s, 3),
            "epsilon": round(self.epsilon, 4),
            "participants": len(chosen),
            "available": len(available),
        }
        return RoundPlan(
            participants=chosen,
            configs=configs,
            timeout_s=timeout,
            quorum=min(s.participants, len(chosen)),
            min_results=min(s.min_results, len(chosen)) if chosen else s.min_results,
            info=info,
        )


def _round_half(x: float) -> int:
    """``x`` rounded half up, as a seat count."""
    return math.floor(x + 0.5)
