"""The pure core of a job: the round engine's transitions, the uniform planner and the registry."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coordinator.engine import JobProgress, RoundRecord, advance, start, stop_reason
from coordinator.job import Constraints, JobSpec, RoundsSpec
from coordinator.planners import UniformPlanner
from coordinator.registry import AgentRecord, Registry
from protocol import Heartbeat, Hello, Status, Weights


def weights(value: float) -> Weights:
    return (np.full((3, 2), value, dtype=np.float32), np.full(2, value, dtype=np.float32))


def record(
    rnd: int,
    *,
    accuracy: float,
    started_s: float = 0.0,
    duration_s: float = 1.0,
    bytes_moved: int = 0,
    agent_seconds: float = 0.0,
) -> RoundRecord:
    return RoundRecord(
        round=rnd,
        started_s=started_s,
        duration_s=duration_s,
        participants=("a", "b"),
        results=2,
        failures={},
        accuracy=accuracy,
        loss=1.0 - accuracy,
        aggregated=True,
        bytes_moved=bytes_moved,
        agent_seconds=agent_seconds,
    )


def constraints(**changes: float | None) -> Constraints:
    fields: dict[str, float | None] = {
        "target_accuracy": 0.9,
        "time_budget_s": 100.0,
        "max_rounds": 10,
        "max_bytes": 1000,
    }
    fields.update(changes)
    return Constraints.model_validate(fields)


def progress_at(**changes: Any) -> JobProgress:
    """A job after round 3 at 50 % accuracy, 10 s and 100 bytes in, with ``changes``."""
    fields: dict[str, Any] = {
        "round": 3,
        "accuracy": 0.5,
        "best_accuracy": 0.5,
        "elapsed_s": 10.0,
        "bytes_moved": 100,
    }
    fields.update(changes)
    return dataclasses.replace(start("job", weights(0.0), accuracy=0.1), **fields)


# --- engine -----------------------------------------------------------------------------------


def test_start_makes_the_initial_model_the_best_so_far() -> None:
    initial = weights(0.0)

    progress = start("job", initial, accuracy=0.12)

    assert (progress.round, progress.best_round, progress.status) == (0, 0, "running")
    assert progress.weights is initial
    assert progress.best_weights is initial
    assert progress.accuracy == progress.best_accuracy == 0.12
    assert progress.history == ()


def test_advance_keeps_the_best_weights_when_a_round_gets_worse() -> None:
    w1, w2, w3 = weights(1.0), weights(2.0), weights(3.0)
    p0 = start("job", weights(0.0), accuracy=0.1)

    p1 = advance(p0, record(1, accuracy=0.6), w1)
    p2 = advance(p1, record(2, accuracy=0.4), w2)

    assert p2.weights is w2
    assert p2.accuracy == 0.4
    assert p2.best_weights is w1
    assert (p2.best_accuracy, p2.best_round) == (0.6, 1)

    p3 = advance(p2, record(3, accuracy=0.7), w3)

    assert p3.best_weights is w3
    assert (p3.best_accuracy, p3.best_round, p3.round) == (0.7, 3, 3)


def test_a_first_round_worse_than_the_initial_model_keeps_the_initial_model() -> None:
    initial = weights(0.0)
    p0 = start("job", initial, accuracy=0.3)

    p1 = advance(p0, record(1, accuracy=0.2), weights(1.0))

    assert p1.best_weights is initial
    assert (p1.best_accuracy, p1.best_round) == (0.3, 0)


def test_advance_accumulates_time_bytes_and_agent_seconds() -> None:
    r1 = record(1, accuracy=0.2, started_s=0.5, duration_s=4.0, bytes_moved=300, agent_seconds=7.5)
    r2 = record(2, accuracy=0.3, started_s=4.5, duration_s=3.0, bytes_moved=200, agent_seconds=2.0)
    p0 = start("job", weights(0.0))

    p1 = advance(p0, r1, weights(1.0))
    p2 = advance(p1, r2, weights(2.0))

    assert p1.elapsed_s == pytest.approx(4.5)  # job time at the end of round 1
    assert p2.elapsed_s == pytest.approx(7.5)  # 4.5 + 3.0
    assert p2.bytes_moved == 500
    assert p2.agent_seconds == pytest.approx(9.5)
    assert p2.history == (r1, r2)


def test_advance_leaves_the_previous_state_untouched() -> None:
    p0 = start("job", weights(0.0), accuracy=0.1)

    advance(p0, record(1, accuracy=0.8, bytes_moved=50), weights(1.0))

    assert (p0.round, p0.best_accuracy, p0.bytes_moved, p0.history) == (0, 0.1, 0, ())


@pytest.mark.parametrize(
    ("progress", "expected"),
    [
        (progress_at(), None),
        (progress_at(accuracy=0.5, best_accuracy=0.9), "reached"),  # the best counts, not the last
        (progress_at(best_accuracy=0.95, elapsed_s=500.0), "reached"),  # reached wins
        (progress_at(elapsed_s=100.0), "time_budget"),
        (progress_at(round=10), "max_rounds"),
        (progress_at(bytes_moved=1000), "max_bytes"),
        (progress_at(round=9, elapsed_s=99.9, bytes_moved=999, best_accuracy=0.899), None),
    ],
    ids=[
        "running",
        "reached",
        "reached-over-time",
        "time_budget",
        "max_rounds",
        "max_bytes",
        "just-short",
    ],
)
def test_stop_reason(progress: JobProgress, expected: str | None) -> None:
    assert stop_reason(progress, constraints()) == expected


def test_no_round_or_byte_limit_when_none_is_set() -> None:
    unlimited = constraints(max_rounds=None, max_bytes=None)

    assert stop_reason(progress_at(round=10_000, bytes_moved=10**12), unlimited) is None


def test_round_record_round_trips_through_json() -> None:
    original = RoundRecord(
        round=4,
        started_s=12.25,
        duration_s=3.5,
        participants=("agent-001", "agent-007"),
        results=1,
        failures={"agent-007": "timeout"},
        accuracy=0.8125,
        loss=0.625,
        aggregated=True,
        bytes_moved=123_456,
        agent_seconds=6.75,
        note="one straggler",
        plan={"planner": "uniform", "available": 9},
    )

    wire = json.loads(json.dumps(original.to_json()))
    restored = RoundRecord.from_json(wire)

    assert wire["participants"] == ["agent-001", "agent-007"]
    assert restored == original
    assert isinstance(restored.participants, tuple)


# --- uniform planner ------------------------------------------------------------------------


def job_spec(*, participants: int = 3, min_results: int = 2, seed: int = 7) -> JobSpec:
    return JobSpec(
        job_id="job",
        holdout=Path("holdout.npz"),
        seed=seed,
        rounds=RoundsSpec(
            participants=participants,
            min_results=min_results,
            round_timeout_s=20.0,
            local_epochs=2,
            local_steps=5,
            batch_size=16,
            learning_rate=0.05,
        ),
        constraints=Constraints(target_accuracy=0.9, time_budget_s=100.0),
    )


HELLO = Hello(device_class="pi4", arch="aarch64", cores=4, memory_bytes=2**31, num_examples=100)


def agents(n: int) -> list[AgentRecord]:
    return [AgentRecord(f"agent-{i:03d}", hello=HELLO, online=True) for i in range(n)]


def after_round(rnd: int) -> JobProgress:
    return progress_at(round=rnd)


def test_planner_picks_participants_distinct_agents_from_those_available() -> None:
    available = agents(10)

    plan = UniformPlanner(job_spec(participants=3)).plan(
        after_round(0), available, budget_left_s=100.0, train_options={}
    )

    assert len(plan.participants) == len(set(plan.participants)) == 3
    assert set(plan.participants) <= {a.agent_id for a in available}
    assert set(plan.configs) == set(plan.participants)
    assert plan.quorum == 3
    assert plan.min_results == 2


@pytest.mark.parametrize(("available", "chosen", "min_results"), [(2, 2, 2), (1, 1, 1), (0, 0, 2)])
def test_planner_takes_everyone_when_fewer_are_available(
    available: int, chosen: int, min_results: int
) -> None:
    plan = UniformPlanner(job_spec(participants=3, min_results=2)).plan(
        after_round(0), agents(available), budget_left_s=100.0, train_options={}
    )

    assert plan.participants == tuple(f"agent-{i:03d}" for i in range(chosen))
    assert plan.quorum == chosen
    assert plan.min_results == min_results


def test_planner_is_deterministic_for_the_same_seed_and_round() -> None:
    a = UniformPlanner(job_spec()).plan(
        after_round(4), agents(10), budget_left_s=100.0, train_options={}
    )
    b = UniformPlanner(job_spec()).plan(
        after_round(4), agents(10), budget_left_s=100.0, train_options={}
    )

    assert a.participants == b.participants
    assert a.configs == b.configs


def test_planner_draws_other_agents_in_other_rounds_and_for_other_seeds() -> None:
    planner = UniformPlanner(job_spec(seed=7))
    draws = [
        planner.plan(after_round(r), agents(10), budget_left_s=100.0, train_options={}).participants
        for r in range(10)
    ]
    other_seed = [
        UniformPlanner(job_spec(seed=8))
        .plan(after_round(r), agents(10), budget_left_s=100.0, train_options={})
        .participants
        for r in range(10)
    ]

    assert len(set(draws)) >= 5, draws  # 120 possible triples; ten rounds must not repeat much
    assert draws != other_seed


def test_planner_configures_the_jobs_local_work_and_the_strategys_proximal_mu() -> None:
    planner = UniformPlanner(job_spec())

    plain = planner.plan(after_round(0), agents(5), budget_left_s=100.0, train_options={})
    prox = planner.plan(
        after_round(0), agents(5), budget_left_s=100.0, train_options={"proximal_mu": 0.25}
    )

    for config in plain.configs.values():
        assert (config.epochs, config.local_steps, config.batch_size) == (2, 5, 16)
        assert config.learning_rate == 0.05
        assert config.proximal_mu == 0.0
    assert {c.proximal_mu for c in prox.configs.values()} == {0.25}


@pytest.mark.parametrize(("budget_left", "timeout"), [(100.0, 20.0), (5.0, 5.0), (-3.0, 0.0)])
def test_planner_timeout_never_exceeds_the_budget_left(budget_left: float, timeout: float) -> None:
    plan = UniformPlanner(job_spec()).plan(
        after_round(0), agents(5), budget_left_s=budget_left, train_options={}
    )

    assert plan.timeout_s == timeout


def test_planner_gives_each_agent_and_round_its_own_seed() -> None:
    planner = UniformPlanner(job_spec(participants=5))

    r1 = planner.plan(after_round(0), agents(5), budget_left_s=100.0, train_options={})
    r2 = planner.plan(after_round(1), agents(5), budget_left_s=100.0, train_options={})

    seeds = [c.seed for c in r1.configs.values()]
    assert len(set(seeds)) == 5
    assert all(r1.configs[a].seed != r2.configs[a].seed for a in r1.participants)


# --- registry -------------------------------------------------------------------------------


ONLINE, OFFLINE = Status(state="online"), Status(state="offline")
BEAT = Heartbeat(seq=1, busy=False, load=0.1, memory_used_bytes=1000)


def beat(session: str = "") -> Heartbeat:
    return Heartbeat(seq=1, busy=False, load=0.1, memory_used_bytes=1000, session=session)


def live(registry: Registry, agent_id: str, now: float = 0.0) -> None:
    """An agent that announced itself and is heard from now."""
    registry.on_status(agent_id, ONLINE, now)
    registry.on_hello(agent_id, HELLO, now)
    registry.on_heartbeat(agent_id, BEAT, now)


def test_a_retained_online_status_alone_never_makes_an_agent_available() -> None:
    # A ghost: its retained status and hello are an hour old; nothing fresh ever comes.
    registry = Registry()
    registry.on_status("ghost", ONLINE, now=1.0)
    registry.on_hello("ghost", HELLO, now=1.0)

    rec = registry.get("ghost")
    assert rec is not None
    assert rec.announced
    assert not rec.online
    assert registry.available() == []

    registry.on_heartbeat("ghost", BEAT, now=2.0)  # fresh evidence
    assert [r.agent_id for r in registry.available()] == ["ghost"]


def test_an_offline_status_ends_availability_until_fresh_evidence_returns() -> None:
    registry = Registry()
    live(registry, "a", now=1.0)

    registry.on_status("a", OFFLINE, now=2.0)
    rec = registry.get("a")
    assert rec is not None
    assert not rec.online
    registry.on_seen("a", now=3.0)  # a late reply does not bring an offline agent back
    assert not rec.online

    registry.on_heartbeat("a", BEAT, now=5.0)
    assert rec.online
    assert rec.last_seen == 5.0


def test_expire_marks_silent_agents_offline_after_stale_after_s() -> None:
    registry = Registry(stale_after_s=30.0)
    registry.on_heartbeat("quiet", BEAT, now=0.0)
    registry.on_heartbeat("chatty", BEAT, now=0.0)
    registry.on_seen("chatty", now=20.0)

    assert registry.expire(now=30.0) == []  # silent for exactly stale_after_s: still online
    assert registry.expire(now=31.0) == ["quiet"]
    assert registry.expire(now=31.0) == []  # already offline: reported once
    assert registry.expire(now=51.0) == ["chatty"]
    assert not any(rec.online for rec in registry)


def test_on_seen_does_not_invent_agents() -> None:
    registry = Registry()

    registry.on_seen("ghost", now=1.0)

    assert "ghost" not in registry
    assert len(registry) == 0


def test_available_lists_live_agents_that_said_hello_in_id_order() -> None:
    registry = Registry()
    live(registry, "c")
    live(registry, "a")
    registry.on_status("silent", ONLINE, now=0.0)  # live, never said hello
    registry.on_heartbeat("silent", BEAT, now=0.0)
    live(registry, "gone")
    registry.on_status("gone", OFFLINE, now=0.0)

    assert [r.agent_id for r in registry.available()] == ["a", "c"]
    assert registry.available()[0].num_examples == 100

    registry.on_hello("silent", HELLO, now=1.0)
    assert [r.agent_id for r in registry.available()] == ["a", "c", "silent"]


def test_an_agent_with_an_empty_shard_is_never_available() -> None:
    registry = Registry()
    live(registry, "full")
    live(registry, "empty")
    registry.on_hello("empty", dataclasses.replace(HELLO, num_examples=0), now=0.0)

    assert [r.agent_id for r in registry.available()] == ["full"]


def test_two_sessions_under_one_id_are_a_clash_and_one_stop_never_hides_the_other() -> None:
    registry = Registry(stale_after_s=30.0)
    registry.on_status("a", ONLINE, now=0.0)
    registry.on_hello("a", HELLO, now=0.0)
    assert registry.on_heartbeat("a", beat("s1"), now=0.0) is False

    assert registry.on_heartbeat("a", beat("s2"), now=1.0) is True  # a second daemon
    assert registry.on_heartbeat("a", beat("s2"), now=2.0) is False  # reported once
    rec = registry.get("a")
    assert rec is not None
    assert rec.clash

    registry.on_status("a", Status(state="offline", session="s2"), now=3.0)  # s2 stops
    assert rec.online  # s1 is still alive
    assert not rec.clash

    registry.on_status("a", Status(state="offline", session="s1"), now=4.0)
    assert not rec.online


def test_a_restarted_daemon_is_not_a_clash() -> None:
    registry = Registry(stale_after_s=10.0)
    registry.on_heartbeat("a", beat("old"), now=0.0)
    # The old daemon was killed (its will went out with its session) and a new one started.
    registry.on_status("a", Status(state="offline", session="old"), now=1.0)
    registry.on_status("a", ONLINE, now=2.0)
    assert registry.on_heartbeat("a", beat("new"), now=2.0) is False
    # Without an offline in between, the old session's heartbeats age out of the window.
    assert registry.on_heartbeat("a", beat("newer"), now=30.0) is False


def test_clock_offset_keeps_the_largest_recent_sample() -> None:
    registry = Registry()
    registry.on_heartbeat("a", BEAT, now=0.0, offset_s=-15.3)  # 0.3 s of network delay
    registry.on_heartbeat("a", BEAT, now=5.0, offset_s=-15.0)
    registry.on_heartbeat("a", BEAT, now=10.0, offset_s=-15.2)
    rec = registry.get("a")
    assert rec is not None
    assert rec.clock_offset_s == pytest.approx(-15.05)  # the best sample, slowly forgotten


def test_make_planner_maps_the_planner_table_by_name_and_rounds_override_it() -> None:
    from coordinator.planners import HYPERFL_DEFAULTS, HyperFLPlanner, make_planner

    spec = job_spec(participants=6)
    spec = spec.model_copy(
        update={
            "planner": spec.planner.model_copy(
                update={"name": "hyperfl", "min_participants": 2, "safety": 0.5}
            )
        }
    )
    planner = make_planner(spec, model_bytes=1000)
    assert isinstance(planner, HyperFLPlanner)
    s = planner.s
    assert (s.participants, s.min_participants, s.safety) == (6, 2, 0.5)
    assert s.fairness_rounds == HYPERFL_DEFAULTS.fairness_rounds  # untouched: the one default
    assert s.target_accuracy == spec.constraints.target_accuracy


# --- close_round, verdict, no_results ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Score:
    accuracy: float
    loss: float


def replies_with(results: dict[str, float], failures: dict[str, str] | None = None) -> Any:
    from coordinator.fleet import RoundReplies
    from protocol import TrainRes

    out = RoundReplies(failures=dict(failures or {}), bytes_sent=10, bytes_received=20)
    for agent_id, value in results.items():
        out.results[agent_id] = TrainRes(
            weights=weights(value), num_examples=5, steps=1, loss=0.5, train_s=0.1
        )
        out.reply_s[agent_id] = 1.0
    return out


def close(
    progress: JobProgress,
    replies: Any,
    *,
    min_results: int = 1,
    aggregate: Any = None,
) -> tuple[JobProgress, RoundRecord]:
    from coordinator.engine import close_round

    def mean(updates: Any, failed: Any) -> Weights:
        return tuple(np.mean([u.weights[i] for u in updates], axis=0) for i in range(2))

    return close_round(
        progress,
        round_no=progress.round + 1,
        participants=("a", "b", "c"),
        min_results=min_results,
        replies=replies,
        aggregate=aggregate or mean,
        evaluate=lambda w: Score(accuracy=float(w[0][0, 0]), loss=0.1),
        started_s=10.0,
        elapsed=lambda: 12.5,
        plan_info={"planner": "test"},
    )


def test_close_round_merges_evaluates_and_records() -> None:
    p0 = start("job", weights(0.0), accuracy=0.0)
    p1, rec = close(p0, replies_with({"a": 0.2, "b": 0.4}, {"c": "timeout: no reply"}))

    assert rec.aggregated
    assert rec.results == 2
    assert rec.accuracy == pytest.approx(0.3)  # the evaluation of the merged model
    assert rec.duration_s == pytest.approx(2.5)
    assert rec.examples == 10
    assert rec.bytes_moved == 30
    assert rec.agent_seconds == pytest.approx(2.0 + 2.5)  # replies + the silent one's round
    assert rec.failures == {"c": "timeout: no reply"}
    assert rec.note == ""
    assert rec.plan == {"planner": "test"}
    assert p1.round == 1
    assert p1.best_accuracy == pytest.approx(0.3)
    np.testing.assert_allclose(p1.weights[0], 0.3)


def test_too_few_results_keep_the_model_with_a_note() -> None:
    p0 = start("job", weights(0.1), accuracy=0.1)
    p1, rec = close(p0, replies_with({"a": 0.9}), min_results=2)

    assert not rec.aggregated
    assert p1.weights is p0.weights
    assert rec.note == "1 results, fewer than 2; kept the previous model"
    assert rec.examples == 0


def test_a_strategy_refusal_or_a_non_finite_aggregate_keeps_the_model() -> None:
    from coordinator.errors import StrategyError

    def refuse(updates: Any, failed: Any) -> Weights:
        raise StrategyError("krum needs 5 updates")

    p0 = start("job", weights(0.1), accuracy=0.1)
    p1, rec = close(p0, replies_with({"a": 0.5}), aggregate=refuse)
    assert p1.weights is p0.weights
    assert rec.note.startswith("strategy refused: krum needs 5 updates")

    p2, rec2 = close(
        p0, replies_with({"a": 0.5}), aggregate=lambda u, f: (weights(np.inf)[0], weights(0)[1])
    )
    assert p2.weights is p0.weights
    assert rec2.note == "aggregate is not finite; kept the previous model"


def test_verdict_records_the_first_out_of_reach_once() -> None:
    from coordinator.engine import verdict

    c = constraints(on_infeasible="stop")  # type: ignore[arg-type]
    p = progress_at()
    same, quiet = verdict(p, feasible=None, accuracy_at_budget=None, constraints=c)
    assert (same, quiet) == (p, "")

    told, message = verdict(p, feasible=False, accuracy_at_budget=0.61, constraints=c)
    assert told.infeasible_at_s == p.elapsed_s
    assert "predicted accuracy at the end of the budget 0.6100; stopping" in message
    assert stop_reason(told, c) == "infeasible"

    again, silent = verdict(told, feasible=False, accuracy_at_budget=0.6, constraints=c)
    assert (again, silent) == (told, "")


def test_k_empty_rounds_in_a_row_stop_the_job_and_a_restart_tries_again() -> None:
    from coordinator.engine import empty_rounds

    c = constraints(max_empty_rounds=3, max_rounds=None, max_bytes=None)
    p = start("job", weights(0.0), accuracy=0.0)
    p, _ = close(p, replies_with({"a": 0.1}))
    for _ in range(2):
        p, _ = close(p, replies_with({}, {"a": "deadline_passed: late"}))
    assert empty_rounds(p) == 2
    assert stop_reason(p, c) is None
    p, _ = close(p, replies_with({}, {"a": "deadline_passed: late"}))
    assert stop_reason(p, c) == "no_results"

    resumed = dataclasses.replace(p, resumed_at=p.round)
    assert empty_rounds(resumed) == 0
    assert stop_reason(resumed, c) is None
