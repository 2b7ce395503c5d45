"""Whole asynchronous (FedBuff) jobs on the in-memory fleet: real NumPy training on digits."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
from support import digits_split

from agent.numpy_trainer import NumpyTrainer
from coordinator.fleet import InMemoryFleet, LocalAgent
from coordinator.job import JobSpec
from coordinator.service import Coordinator, JobOutcome
from protocol import Failure, Hello, Shard, TrainIns, TrainRes


def trainer_agent(shard: Shard, *, delay_s: float = 0.0, poison: bool = False) -> LocalAgent:
    """An in-process agent training ``shard`` with the NumPy trainer, ``delay_s`` slower than
    its compute (so agents finish out of step and updates go stale). A ``poison`` agent sends
    the model pushed far along a fixed random direction (inside the norm guard's bound)."""
    trainer = NumpyTrainer(shard)

    async def call(ins: TrainIns) -> TrainRes | Failure:
        await asyncio.sleep(delay_s)
        fit = await asyncio.to_thread(
            trainer.fit, ins.model, ins.weights, ins.config, stop_at=time.monotonic() + 30
        )
        weights = fit.weights
        if poison:
            rng = np.random.default_rng(7)
            weights = tuple(
                (w + 3.0 * rng.standard_normal(w.shape)).astype(np.float32) for w in ins.weights
            )
        return TrainRes(
            weights=weights,
            num_examples=fit.num_examples,
            steps=fit.steps,
            loss=fit.loss,
            train_s=fit.train_s,
        )

    return call


def hello(shard: Shard) -> Hello:
    return Hello(
        device_class="x86-cpu", arch="x86_64", cores=1, memory_bytes=1, num_examples=len(shard)
    )


def async_spec(**changes: Any) -> JobSpec:
    raw: dict[str, Any] = {
        "job_id": "async-digits",
        "holdout": "unused.npz",
        "mode": "async",
        "model": {"hidden": [32]},
        "rounds": {
            "participants": 6,
            "round_timeout_s": 20,
            "local_epochs": 1,
            "batch_size": 16,
            "learning_rate": 0.1,
            "min_agents": 6,
            "wait_for_agents_s": 5,
        },
        "async": {"buffer_size": 3, "concurrency": 6, "max_staleness": 4},
        "constraints": {"target_accuracy": 0.85, "time_budget_s": 120, "max_rounds": 60},
    }
    for key, value in changes.items():
        section, _, name = key.rpartition(".")
        (raw.setdefault(section, {}) if section else raw)[name] = value
    return JobSpec.model_validate(raw)


def run(spec: JobSpec, agents: dict[str, tuple[Hello, LocalAgent]], state: Path) -> JobOutcome:
    _, holdout = SPLIT
    coordinator = Coordinator(
        spec=spec,
        fleet=InMemoryFleet(agents),
        holdout=holdout,
        state_dir=state / "state",
        out_dir=state / "out",
    )
    return asyncio.run(coordinator.run())


SPLIT = digits_split(6, seed=3, alpha=1.0)
DELAYS = (0.0, 0.0, 0.02, 0.05, 0.1, 0.2)


def fleet(poisoned: int = 0) -> dict[str, tuple[Hello, LocalAgent]]:
    shards, _ = SPLIT
    return {
        # The poisoners are of middling speed (a2, ...): the fastest could fill a buffer of five
        # with three of its own updates when the machine is loaded, and no median survives
        # that; the slowest ones' updates are stale enough that FedAvg shrugs them off.
        f"a{i}": (
            hello(s),
            trainer_agent(s, delay_s=DELAYS[i], poison=2 <= i < 2 + poisoned),
        )
        for i, s in enumerate(shards)
    }


def test_an_async_job_reaches_its_target_on_digits(tmp_path: Path) -> None:
    outcome = run(async_spec(), fleet(), tmp_path)

    assert outcome.reason == "reached"
    progress = outcome.progress
    assert progress.best_accuracy >= 0.85
    records = progress.history
    assert [r.round for r in records] == list(range(1, progress.round + 1))
    for r in records:  # every version aggregates one full buffer, within the staleness bound
        assert r.results == 3
        assert r.plan["mode"] == "async"
        assert all(0 <= s <= 4 for s in r.plan["staleness"])
    # Agents trained on versions older than the current one: the mode is really asynchronous.
    assert any(s > 0 for r in records for s in r.plan["staleness"])


def test_updates_beyond_the_staleness_bound_are_dropped_and_counted(tmp_path: Path) -> None:
    # Bound 0 with six agents at once and a buffer of two: while two replies make a version,
    # the others are still training on the old one; their replies must be dropped.
    spec = async_spec(
        **{"async.max_staleness": 0, "async.buffer_size": 2, "constraints.max_rounds": 6}
    )
    outcome = run(spec, fleet(), tmp_path)

    history = outcome.progress.history
    assert all(s == 0 for r in history for s in r.plan["staleness"])
    dropped = [r.plan["stale_dropped"] for r in history]
    assert dropped == sorted(dropped)  # a running count over the job
    assert dropped[-1] > 0


def test_an_async_job_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    first = run(async_spec(**{"constraints.max_rounds": 3}), fleet(), tmp_path)
    assert first.reason == "max_rounds"
    assert first.progress.round == 3

    second = run(async_spec(**{"constraints.max_rounds": 6}), fleet(), tmp_path)

    assert second.progress.resumed_at == 3
    assert [r.round for r in second.progress.history] == [1, 2, 3, 4, 5, 6]
    assert second.progress.history[:3] == first.progress.history
    # The resumed job steps on from the checkpointed model: version 4 trained on version 3.
    assert second.progress.history[3].accuracy > 0.2


def test_a_robust_rule_aggregates_each_buffer(tmp_path: Path) -> None:
    # One of six agents (a2) sends poison (plain FedAvg stalls below 0.8 with it);
    # the coordinate-wise median over buffers of five leaves it out.
    spec = async_spec(
        **{
            "strategy.name": "fedmedian",
            "async.buffer_size": 5,
            "async.max_staleness": 10,
            "constraints.target_accuracy": 0.8,
        }
    )
    outcome = run(spec, fleet(poisoned=1), tmp_path)

    assert outcome.reason == "reached"
    assert outcome.progress.best_accuracy >= 0.8


def test_agents_that_never_deliver_stop_the_async_job(tmp_path: Path) -> None:
    shards, _ = SPLIT

    async def refuse(ins: TrainIns) -> Failure:
        return Failure(code="no_data", reason="nothing here")

    agents: dict[str, tuple[Hello, LocalAgent]] = {f"a{i}": (hello(shards[i]), refuse)
                                                   for i in range(3)}  # fmt: skip
    spec = async_spec(**{"rounds.min_agents": 3, "constraints.max_empty_rounds": 2})
    outcome = run(spec, agents, tmp_path)

    assert outcome.reason == "no_results"
    assert outcome.progress.round == 0
