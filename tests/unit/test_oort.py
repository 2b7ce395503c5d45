"""The Oort planner (coordinator/planners/oort.py): utility, exploration, over-commitment, the
straggler penalty, the pacer, and its selection from the job file.

The planner is pure: a round is ``plan()``, replies made up from each agent's true speed, a
:class:`RoundRecord`, ``observe()``; nothing waits on a real clock."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from coordinator.engine import JobProgress, RoundRecord, start
from coordinator.fleet import RoundReplies
from coordinator.job import JobSpec
from coordinator.planners import OortPlanner, OortSettings, make_planner
from coordinator.planners.base import RoundPlan
from coordinator.planners.oort import OortStats, oort_utility
from coordinator.registry import AgentRecord
from protocol import Hello, TrainRes, Weights

WEIGHTS: Weights = (np.zeros(4, dtype=np.float32),)
RATES = {"fast": 400.0, "slow": 4.0}
EXAMPLES = 40


def fleet(per_kind: int = 10) -> list[AgentRecord]:
    out = []
    for kind, rate in RATES.items():
        for i in range(per_kind):
            hello = Hello(
                device_class=kind,
                arch="x86_64",
                cores=4,
                memory_bytes=1 << 30,
                num_examples=EXAMPLES,
                profile={"train_rate": rate},
            )
            out.append(AgentRecord(f"{kind}-{i:02d}", hello=hello, online=True))
    return out


def progress(round_no: int) -> JobProgress:
    p = start("job", WEIGHTS)
    return JobProgress(job_id="job", weights=p.weights, best_weights=p.weights, round=round_no)


def play(planner: OortPlanner, agents: list[AgentRecord], rnd: int, loss_of: dict[str, float]
         ) -> tuple[RoundPlan, RoundReplies]:  # fmt: skip
    """One round: every asked agent replies after EXAMPLES / its rate seconds, if within the
    deadline; the round ends at the quorum-th reply or the deadline."""
    plan = planner.plan(progress(rnd - 1), agents, budget_left_s=1e6, train_options={})
    replies = RoundReplies()
    times = sorted((EXAMPLES / RATES[a.split("-")[0]], a) for a in plan.participants)
    for t, agent_id in times:
        if t <= plan.timeout_s and len(replies.results) < plan.quorum:
            replies.results[agent_id] = TrainRes(
                weights=WEIGHTS, num_examples=EXAMPLES, steps=1,
                loss=loss_of.get(agent_id, 1.0), train_s=t,
            )  # fmt: skip
            replies.reply_s[agent_id] = t
        else:
            replies.failures[agent_id] = "timeout: no reply by the round deadline"
    duration = plan.timeout_s if replies.failures else max(replies.reply_s.values())
    record = RoundRecord(
        round=rnd, started_s=0.0, duration_s=duration, participants=plan.participants,
        results=len(replies.results), failures=dict(replies.failures), accuracy=0.5,
        loss=1.0, aggregated=True, bytes_moved=0, agent_seconds=0.0,
    )  # fmt: skip
    planner.observe(plan, replies, record)
    return plan, replies


def test_utility_is_data_times_loss_with_a_penalty_for_stragglers() -> None:
    st = OortStats(examples=100, loss=2.0, duration_s=5.0, last_round=0)
    assert oort_utility(st, round=1, preferred_s=10.0, alpha=2.0) == pytest.approx(200.0)
    slow = OortStats(examples=100, loss=2.0, duration_s=20.0, last_round=0)
    # (T / t) ** alpha = (10 / 20) ** 2
    assert oort_utility(slow, round=1, preferred_s=10.0, alpha=2.0) == pytest.approx(50.0)
    # Not asked since round 2, now round 10: the temporal-uncertainty bonus.
    stale = OortStats(examples=100, loss=2.0, duration_s=5.0, last_round=2)
    bonus = math.sqrt(0.1 * math.log(10) / 2)
    assert oort_utility(stale, round=10, preferred_s=10.0, alpha=2.0) == pytest.approx(200 + bonus)


def test_it_over_commits_and_ends_the_round_at_k_results() -> None:
    planner = OortPlanner(OortSettings(participants=10, deadline_s=5.0, overcommit=1.3))
    plan = planner.plan(progress(0), fleet(), budget_left_s=100.0, train_options={})
    assert len(plan.participants) == 13
    assert plan.quorum == 10
    assert plan.timeout_s == 5.0
    assert all(c.epochs == 1 and c.batch_size == 16 for c in plan.configs.values())


def test_first_rounds_explore_the_fastest_unexplored_agents() -> None:
    planner = OortPlanner(OortSettings(participants=5, deadline_s=5.0, overcommit=1.0))
    plan = planner.plan(progress(0), fleet(), budget_left_s=100.0, train_options={})
    assert all(a.startswith("fast") for a in plan.participants)


def test_exploration_decays_to_its_floor_and_exploitation_takes_over() -> None:
    settings = OortSettings(participants=4, deadline_s=5.0, overcommit=1.0, epsilon=0.9,
                            epsilon_decay=0.5, min_epsilon=0.25)  # fmt: skip
    planner = OortPlanner(settings)
    agents = fleet()
    for rnd in range(1, 8):
        play(planner, agents, rnd, {})
    assert planner.epsilon == pytest.approx(0.25)
    plan = planner.plan(progress(7), agents, budget_left_s=100.0, train_options={})
    explored = {a for a, st in planner.stats.items() if st.explored}
    # (1 - 0.25) x 4 = 3 seats exploit agents already seen; 1 explores.
    assert len(set(plan.participants) & explored) == 3


def test_exploitation_prefers_high_loss_agents() -> None:
    settings = OortSettings(participants=3, deadline_s=5.0, overcommit=1.0, epsilon=0.0,
                            min_epsilon=0.0)  # fmt: skip
    planner = OortPlanner(settings)
    agents = fleet()
    for i, a in enumerate(agents[:10]):  # the fast ones, seen once each
        planner.stats[a.agent_id] = OortStats(
            examples=EXAMPLES, loss=5.0 if i < 3 else 0.1, duration_s=0.1, explored=True
        )
    plan = planner.plan(progress(1), agents, budget_left_s=100.0, train_options={})
    assert set(plan.participants) == {a.agent_id for a in agents[:3]}


def test_stragglers_past_the_deadline_lose_to_fast_agents_of_equal_data() -> None:
    settings = OortSettings(participants=2, deadline_s=1.0, overcommit=1.0, epsilon=0.0,
                            min_epsilon=0.0)  # fmt: skip
    planner = OortPlanner(settings)
    agents = fleet(per_kind=2)
    for a in agents:
        t = EXAMPLES / RATES[a.agent_id.split("-")[0]]
        planner.stats[a.agent_id] = OortStats(
            examples=EXAMPLES, loss=1.0, duration_s=t, explored=True
        )
    plan = planner.plan(progress(1), agents, budget_left_s=100.0, train_options={})
    assert set(plan.participants) == {"fast-00", "fast-01"}


def test_the_pacer_relaxes_the_deadline_when_utility_falls() -> None:
    settings = OortSettings(participants=4, deadline_s=2.0, max_deadline_s=20.0,
                            pacer_window=2, pacer_step_s=3.0)  # fmt: skip
    planner = OortPlanner(settings)
    agents = fleet()
    # Losses fall round after round: the utility collected per window falls.
    for rnd in range(1, 5):
        play(planner, agents, rnd, {a.agent_id: 2.0 / rnd for a in agents})
    assert planner.preferred_s == pytest.approx(5.0)
    plan = planner.plan(progress(4), agents, budget_left_s=100.0, train_options={})
    assert plan.timeout_s == pytest.approx(5.0)
    # Never past the job's round timeout.
    planner.preferred_s = 19.0
    for rnd in range(5, 9):
        play(planner, agents, rnd, {a.agent_id: 2.0 / rnd**2 for a in agents})
    assert planner.preferred_s == 20.0


def test_the_deadline_never_outlasts_the_budget_and_no_budget_no_round() -> None:
    planner = OortPlanner(OortSettings(participants=3, deadline_s=10.0))
    plan = planner.plan(progress(0), fleet(), budget_left_s=4.0, train_options={})
    assert plan.timeout_s == 4.0
    empty = planner.plan(progress(0), fleet(), budget_left_s=0.0, train_options={})
    assert empty.participants == ()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="deadline_s"):
        OortSettings(deadline_s=30.0, max_deadline_s=10.0)
    with pytest.raises(ValueError, match="epsilon"):
        OortSettings(epsilon=0.1, min_epsilon=0.5)


def test_the_job_file_selects_oort_with_its_table(tmp_path: Path) -> None:
    spec = JobSpec.model_validate(
        {
            "job_id": "j",
            "holdout": str(tmp_path / "holdout.npz"),
            "planner": {"name": "oort", "oort": {"deadline_s": 5.0, "alpha": 1.0}},
            "rounds": {"participants": 7, "round_timeout_s": 30.0, "local_epochs": 2,
                       "learning_rate": 0.3},
            "constraints": {"target_accuracy": 0.9, "time_budget_s": 100.0},
        }
    )  # fmt: skip
    planner = make_planner(spec, model_bytes=1000)
    assert isinstance(planner, OortPlanner)
    s = planner.s
    assert (s.participants, s.deadline_s, s.max_deadline_s, s.alpha) == (7, 5.0, 30.0, 1.0)
    assert (s.local_epochs, s.learning_rate) == (2, 0.3)
    with pytest.raises(ValueError, match="oort"):
        JobSpec.model_validate(
            {
                "job_id": "j",
                "holdout": "h.npz",
                "planner": {"name": "oort", "oort": {"nonsense": 1}},
                "constraints": {"target_accuracy": 0.9, "time_budget_s": 100.0},
            }
        )
