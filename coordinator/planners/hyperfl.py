"""The hyperFL planner: who trains, how much and by when, so the target arrives inside the budget.

Each round it

1. **sizes work to a deadline.** With each agent's learned speed and link (``profiles``), the steps
   an agent can finish by a deadline ``D`` are ``floor((safety * D - comm) * rate / batch)``,
   capped at ``max_local_epochs`` of its data. It picks ``D`` from the agents' own finishing times to
   maximise expected examples trained per second of round (slow agents are not waited for: they
   either get the little work that fits, or sit the round out);
2. **selects participants by utility** (after Oort, Lai et al. OSDI'21): statistical utility
   ``examples x last loss`` times reliability, sampled in proportion among the best; a share of the
   seats explores agents never seen; a fairness bound forces in any agent not asked for
   ``fairness_rounds`` rounds and, for every label that no participant has trained for
   ``label_rounds`` rounds, the agent holding most of it — stretching the deadline just enough
   for them;
3. **paces the job.** A learning-curve model (:mod:`coordinator.planners.curve`) predicts the compute, and
   from the measured throughput the time, still needed to reach the target. Ahead of schedule it
   asks fewer agents (less agent-time and fewer bytes); behind, more. When even the optimistic
   curve says the target cannot be met within the budget for ``infeasible_after`` rounds running,
   it says so with the predicted accuracy at the end of the budget.

The planner is pure: it reads profiles and history and returns plans; :meth:`HyperFLPlanner.observe`
feeds it each round's replies.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from protocol import TrainConfig

from ..engine import JobProgress, RoundRecord
from ..fleet import RoundReplies
from ..registry import AgentRecord
from .base import Prediction, RoundPlan, agent_seed
from .curve import LearningCurve
from .profiles import AgentProfile, ProfileBook
from .settings import HyperFLSettings

__all__ = ["MAX_PREDICTED_ROUNDS", "HyperFLPlanner", "HyperFLSettings"]

MAX_PREDICTED_ROUNDS = 10**6
"""A prediction of more rounds than this is reported as none (an unbounded integer once made a
job state that msgpack could not encode, 2^66 rounds, and stopped a soak's coordinator)."""


def _work(p: AgentProfile, deadline: float, s: HyperFLSettings, cap: int) -> tuple[int, int]:
    """``(steps, batch)`` agent ``p`` can finish within ``deadline``; ``(0, _)`` when nothing fits.

    Whole batches while at least one fits; otherwise one smaller batch of what fits, down to
    ``min_batch`` examples, so slower devices still contribute to short rounds."""
    examples = (s.safety * deadline - p.comm_s) * p.train_rate
    if examples >= s.batch_size:
        return min(cap, int(examples // s.batch_size)), s.batch_size
    if examples >= s.min_batch:
        return 1, int(examples)
    return 0, s.batch_size


class HyperFLPlanner:
    def __init__(self, settings: HyperFLSettings, *, model_bytes: int) -> None:
        self.s = settings
        self.profiles = ProfileBook(model_bytes=model_bytes, time_scale=settings.time_scale)
        self.curve = LearningCurve()
        self.k = settings.participants
        self._rng = random.Random(settings.seed)
        self._compute = 0.0
        self._throughput: float | None = None
        self._overhead_s = 0.2
        self._label_last: dict[int, int] = {}
        self._behind = 0
        self._last_failures: tuple[str, ...] = ()
        self._prediction = Prediction()
        self._budget_left = math.inf

    # ------------------------------------------------------------------ planning

    def _cap(self, p: AgentProfile) -> int:
        n = max(1, p.num_examples)
        return max(self.s.min_steps, math.ceil(self.s.max_local_epochs * n / self.s.batch_size))

    def _utility(self, p: AgentProfile, mean_loss: float) -> float:
        loss = p.loss if p.loss is not None else mean_loss
        return max(1, p.num_examples) * max(loss, 1e-3) * max(p.reliability, 0.05)

    def _value(self, p: AgentProfile, examples: int, mean_loss: float) -> float:
        """Expected worth of ``examples`` examples of training on ``p``: its statistical utility
        (data size x loss, after Oort) times the share of its data covered, saturating past one
        pass, times its reliability."""
        n = max(1, p.num_examples)
        loss = p.loss if p.loss is not None else mean_loss
        return p.reliability * max(loss, 1e-3) * n * (1.0 - math.exp(-examples / n))

    def _choose_deadline(
        self, cands: Sequence[AgentProfile], k: int, budget_left: float, mean_loss: float
    ) -> float:
        """The deadline that maximises the value trained per second of round."""
        s = self.s
        hi = min(s.max_deadline_s, max(s.min_deadline_s, budget_left))
        options = {hi, s.min_deadline_s}
        for p in cands:
            for examples in (
                s.min_batch,
                s.batch_size,
                p.num_examples,
                self._cap(p) * s.batch_size,
            ):
                t = (p.comm_s + examples / p.train_rate) / s.safety
                if s.min_deadline_s <= t <= hi:
                    options.add(t)
        best, best_rate = hi, -1.0
        for d in sorted(options):
            gains = sorted(
                (self._value(p, math.prod(_work(p, d, s, self._cap(p))), mean_loss) for p in cands),
                reverse=True,
            )[:k]
            rate = sum(gains) / (d + self._overhead_s)
            if rate > best_rate * 1.02:  # prefer the shorter deadline unless clearly better
                best, best_rate = d, rate
        return best

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
        now = progress.elapsed_s
        self._budget_left = budget_left_s
        cands = [
            self.profiles.ensure(a.agent_id, a.hello) for a in available if a.hello is not None
        ]
        cands = [p for p in cands if p.busy_until <= now]
        k = min(self.k, len(cands))
        if k == 0 or budget_left_s <= 0:
            return RoundPlan(participants=(), configs={}, timeout_s=0.0, quorum=0, min_results=1)
        losses = [p.loss for p in cands if p.loss is not None]
        mean_loss = sum(losses) / len(losses) if losses else 1.0
        # Work is sized to the deadline, so it must not outlast the budget (the timeout cannot).
        deadline = min(self._choose_deadline(cands, k, budget_left_s, mean_loss), budget_left_s)

        chosen: dict[str, str] = {}  # agent id -> why
        cap = min(budget_left_s, s.max_deadline_s, deadline * s.max_stretch)
        # Only agents whose least work fits the longest stretch can be forced in: the others
        # would be sent work that their own profile says misses the timeout.
        servable = [p for p in cands if _work(p, max(deadline, cap), s, self._cap(p))[0] >= 1]
        forced = self._forced(servable, rnd, max(1, int(s.max_forced_fraction * k)))
        for p in forced:
            chosen[p.agent_id] = "fairness"
        if forced:  # stretch the deadline for the forced agents' batch, within bounds
            need = max((p.comm_s + s.batch_size / p.train_rate) / s.safety for p in forced)
            deadline = max(deadline, min(need, cap))
        eligible = [
            p
            for p in cands
            if p.agent_id not in chosen and _work(p, deadline, s, self._cap(p))[0] >= 1
        ]
        unexplored = [p for p in eligible if not p.explored]
        n_explore = min(len(unexplored), max(0, math.ceil(s.explore_fraction * k)))
        for p in self._rng.sample(unexplored, n_explore):
            chosen[p.agent_id] = "explore"
        rest = sorted(
            (p for p in eligible if p.agent_id not in chosen),
            key=lambda p: self._utility(p, mean_loss),
            reverse=True,
        )
        pool = rest[: max(1, 2 * (k - len(chosen)))]
        while len(chosen) < k and pool:
            weights = [self._utility(p, mean_loss) for p in pool]
            pick = self._rng.choices(range(len(pool)), weights=weights)[0]
            chosen[pool.pop(pick).agent_id] = "utility"

        participants = tuple(sorted(chosen))
        configs: dict[str, TrainConfig] = {}
        planned: dict[str, int] = {}
        for agent_id in participants:
            p = self.profiles[agent_id]
            steps, batch = _work(p, deadline, s, self._cap(p))
            if steps == 0:  # a forced agent the stretched deadline still cannot fit: its least
                steps, batch = 1, s.min_batch
            planned[agent_id] = steps * batch
            configs[agent_id] = TrainConfig(
                epochs=1,
                local_steps=steps,
                batch_size=batch,
                learning_rate=s.learning_rate,
                proximal_mu=float(train_options.get("proximal_mu", 0.0)),
                seed=agent_seed(s.seed, rnd, agent_id),
            )
            self.profiles.mark_selected(agent_id, rnd)
        timeout = min(deadline, budget_left_s)
        pred = self._prediction
        info: dict[str, Any] = {
            "planner": "hyperfl",
            "deadline_s": round(timeout, 3),
            "participants": len(participants),
            "target_participants": self.k,
            "available": len(available),
            "explore": sum(1 for why in chosen.values() if why == "explore"),
            "forced": sum(1 for why in chosen.values() if why == "fairness"),
            "planned_examples": sum(planned.values()),
            "stragglers": list(self._last_failures),
            "budget_left_s": round(budget_left_s, 2),
            **pred.to_json(),
        }
        return RoundPlan(
            participants=participants,
            configs=configs,
            timeout_s=timeout,
            quorum=len(participants),
            min_results=1,
            info=info,
        )

    def _forced(self, cands: Sequence[AgentProfile], rnd: int, limit: int) -> list[AgentProfile]:
        """Agents the fairness bound requires this round, most overdue first."""
        s = self.s
        overdue = [p for p in cands if rnd - p.last_selected > s.fairness_rounds and p.num_examples]
        for label, _ in sorted(self._starved_labels(cands, rnd).items(), key=lambda kv: kv[1]):
            holders = [p for p in cands if len(p.label_counts) > label and p.label_counts[label]]
            if holders:
                overdue.append(max(holders, key=lambda p: p.label_counts[label]))
        seen: dict[str, AgentProfile] = {}
        for p in sorted(overdue, key=lambda p: p.last_selected):
            seen.setdefault(p.agent_id, p)
        return list(seen.values())[:limit]

    def _starved_labels(self, cands: Sequence[AgentProfile], rnd: int) -> dict[int, int]:
        labels = {i for p in cands for i, c in enumerate(p.label_counts) if c}
        return {
            label: self._label_last.get(label, 0)
            for label in labels
            if rnd - self._label_last.get(label, 0) > self.s.label_rounds
        }

    # ------------------------------------------------------------------ learning

    def observe(self, plan: RoundPlan, replies: RoundReplies, record: RoundRecord) -> None:
        now = record.started_s + record.duration_s
        examples = 0
        for agent_id, res in replies.results.items():
            self.profiles.observe_result(
                agent_id,
                examples=res.num_examples,
                train_s=res.train_s,
                reply_s=replies.reply_s.get(agent_id, record.duration_s),
                loss=res.loss,
            )
            examples += res.num_examples
            p = self.profiles[agent_id]
            for label, count in enumerate(p.label_counts):
                if count:
                    self._label_last[label] = record.round
        for agent_id, why in replies.failures.items():
            if agent_id in self.profiles:
                cfg = plan.configs[agent_id]
                expected = self.profiles[agent_id].predict_s(
                    (cfg.local_steps or 1) * cfg.batch_size
                )
                self.profiles.observe_failure(
                    agent_id, timed_out=why.startswith("timeout"), now=now, expected_s=expected
                )
        self._last_failures = tuple(sorted(replies.failures))
        slowest = max(replies.reply_s.values(), default=0.0)
        self._overhead_s = 0.7 * self._overhead_s + 0.3 * max(0.0, record.duration_s - slowest)
        if record.aggregated:
            self._compute += examples
            self.curve.add(self._compute, record.accuracy)
            rate = examples / max(record.duration_s, 1e-3)
            self._throughput = (
                rate if self._throughput is None else 0.7 * self._throughput + 0.3 * rate
            )
        self._predict_and_pace(record)

    def _predict_and_pace(self, record: RoundRecord) -> None:
        s = self.s
        found = self.curve.optimistic(s.target_accuracy)
        budget_left = max(0.0, self._budget_left - record.duration_s)
        if found is None or not self._throughput:
            self._prediction = Prediction()
            return
        fit, need = found
        at_budget = fit.accuracy_at(self._compute + self._throughput * budget_left)
        time_needed = (
            math.inf if need is None else max(0.0, need - self._compute) / self._throughput
        )
        per_round = max(1.0, self._throughput * max(record.duration_s, 1e-3))
        rounds_needed = (
            math.ceil(max(0.0, need - self._compute) / per_round) if need is not None else None
        )
        if rounds_needed is not None and rounds_needed > MAX_PREDICTED_ROUNDS:
            rounds_needed = None  # no number to report: out of any budget's reach
        # Pace: behind schedule -> more participants; well ahead -> fewer (cheaper).
        if time_needed > 0.6 * budget_left:
            self.k = min(s.max_participants, self.k + 2)
        elif time_needed < 0.25 * budget_left:
            self.k = max(s.min_participants, self.k - 1)
        # Out of reach when even the most optimistic plausible curve, at the highest pace
        # (throughput taken as proportional to participants), misses the budget.
        speedup = max(self.k, s.max_participants) / max(1, self.k)
        best_at_budget = fit.accuracy_at(self._compute + self._throughput * speedup * budget_left)
        hopeless = need is None or time_needed / speedup > budget_left
        if s.verdict_margin > 0:  # also ask the accuracy reachable at full pace to fall short
            hopeless = hopeless and best_at_budget < s.target_accuracy - s.verdict_margin
        self._behind = self._behind + 1 if hopeless else 0
        enough = len(self.curve) >= s.verdict_after
        self._prediction = Prediction(
            feasible=(self._behind < s.infeasible_after) if enough else None,
            time_to_target_s=time_needed if math.isfinite(time_needed) else None,
            rounds_to_target=rounds_needed,
            accuracy_at_budget=min(1.0, max(0.0, at_budget)),
            asymptote=fit.asymptote,
        )

    def prediction(self) -> Prediction:
        return self._prediction

    def replay(self, progress: JobProgress) -> None:
        """Rebuild the learning curve from a resumed job's history (profiles relearn quickly)."""
        for record in progress.history:
            if record.aggregated and record.examples:
                self._compute += record.examples
                self.curve.add(self._compute, record.accuracy)
