"""Whole jobs on the in-memory fleet: the coordinator's loop without a broker (real Keras model)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from support import digits_split

from coordinator.fleet import InMemoryFleet, LocalAgent
from coordinator.job import JobSpec
from coordinator.service import Coordinator
from protocol import Failure, Hello, Shard, TrainConfig, TrainIns, TrainRes


def test_rounds_that_never_bring_a_result_stop_the_job_with_the_reason(tmp_path: Path) -> None:
    # Every agent refuses every instruction as late: a coordinator whose clock was behind its
    # agents' spun through thousands of empty rounds before protocol 2. Now K empty rounds stop it.
    _, holdout = digits_split(2, seed=0)

    async def late(ins: TrainIns) -> TrainRes | Failure:
        return Failure(code="deadline_passed", reason="arrived 15.00s late")

    hello = Hello(device_class="x86-cpu", arch="x86_64", cores=1, memory_bytes=1, num_examples=9)
    agents: dict[str, tuple[Hello, LocalAgent]] = {a: (hello, late) for a in ("a0", "a1")}
    spec = JobSpec.model_validate(
        {
            "job_id": "empty",
            "holdout": "unused.npz",
            "model": {"hidden": [8]},
            "rounds": {"participants": 2, "round_timeout_s": 5, "min_agents": 2},
            "constraints": {"target_accuracy": 0.9, "time_budget_s": 60, "max_empty_rounds": 4},
        }
    )
    fleet = InMemoryFleet(agents)
    coordinator = Coordinator(
        spec=spec,
        fleet=fleet,
        holdout=holdout,
        state_dir=tmp_path / "state",
        out_dir=tmp_path / "out",
    )
    outcome = asyncio.run(coordinator.run())

    assert outcome.reason == "no_results"
    assert outcome.progress.round == 4
    assert fleet.states[-1].status == "no_results"
    assert "4 rounds in a row brought no result" in fleet.states[-1].message
    assert "deadline_passed" in fleet.states[-1].message


def test_a_job_on_a_scaled_fleet_counts_device_seconds_and_sends_wall_budgets(
    tmp_path: Path,
) -> None:
    """``[emulation] time_scale = 0.1``: the planner's deadlines are device-seconds, the agents
    get a tenth of them as their wall budget, and a reply's wall ``train_s`` counts ten times
    over in the planner's profile."""
    _, holdout = digits_split(2, seed=0)
    budgets: list[float] = []

    async def quick(ins: TrainIns) -> TrainRes:
        budgets.append(ins.budget_s)
        return TrainRes(weights=ins.weights, num_examples=20, steps=1, loss=1.0, train_s=0.01)

    profile = {
        "train_rate": 40.0,
        "uplink_mbps": 100.0,
        "downlink_mbps": 100.0,
        "rtt_ms": 20.0,
        "time_scale": 0.1,
    }
    hello = Hello(
        device_class="x86-cpu",
        arch="x86_64",
        cores=1,
        memory_bytes=1,
        num_examples=20,
        profile=profile,
    )
    agents: dict[str, tuple[Hello, LocalAgent]] = {a: (hello, quick) for a in ("a0", "a1")}
    spec = JobSpec.model_validate(
        {
            "job_id": "scaled",
            "holdout": "unused.npz",
            "model": {"hidden": [8]},
            "planner": {"name": "hyperfl"},
            "rounds": {"participants": 2, "round_timeout_s": 30, "min_agents": 2},
            "constraints": {"target_accuracy": 0.99, "time_budget_s": 10_000, "max_rounds": 2},
            "emulation": {"time_scale": 0.1},
        }
    )
    fleet = InMemoryFleet(agents)
    coordinator = Coordinator(
        spec=spec,
        fleet=fleet,
        holdout=holdout,
        state_dir=tmp_path / "state",
        out_dir=tmp_path / "out",
    )
    outcome = asyncio.run(coordinator.run())

    assert outcome.reason == "max_rounds"
    deadlines = [s.plan["deadline_s"] for s in fleet.states if s.status == "running"]
    assert len(deadlines) == 2
    # Two agents a round, each told a tenth of the round's device deadline as wall seconds.
    assert budgets == pytest.approx([d * 0.1 for d in deadlines for _ in range(2)], abs=1e-3)
    # 20 examples in 0.01 wall s at scale 0.1 are 20 examples per 0.1 device s: 200 per s.
    rate = coordinator.planner.profiles["a0"].train_rate  # type: ignore[attr-defined]
    assert rate == pytest.approx(200.0, rel=0.35)
    assert rate > 4 * 40.0  # the replies, not the announced 40/s, and not per wall second (2000)


def test_a_cnn_job_never_asks_an_agent_that_cannot_train_it(tmp_path: Path) -> None:
    # A CNN needs Keras. The agent on the NumPy trainer says so in its hello (no "keras" among
    # its runtimes); the coordinator asks only the Keras agents, round after round.
    import pytest

    from agent.errors import TrainingError
    from agent.keras_trainer import KerasTrainer
    from agent.numpy_trainer import NumpyTrainer

    shards, holdout = digits_split(3, seed=0)
    asked: dict[str, int] = {"k0": 0, "k1": 0, "np": 0}

    def local(agent_id: str, trainer: KerasTrainer | NumpyTrainer) -> LocalAgent:
        async def train(ins: TrainIns) -> TrainRes | Failure:
            asked[agent_id] += 1
            fit = await asyncio.to_thread(
                trainer.fit, ins.model, ins.weights, ins.config, stop_at=float("inf")
            )
            return TrainRes(weights=fit.weights, num_examples=fit.num_examples, steps=fit.steps,
                            loss=fit.loss, train_s=fit.train_s)  # fmt: skip

        return train

    def hello(runtimes: tuple[str, ...], n: int) -> Hello:
        return Hello(device_class="x86-cpu", arch="x86_64", cores=1, memory_bytes=1,
                     runtimes=runtimes, num_examples=n)  # fmt: skip

    numpy_trainer = NumpyTrainer(shards[2])
    agents: dict[str, tuple[Hello, LocalAgent]] = {
        "k0": (hello(("numpy", "keras"), len(shards[0])), local("k0", KerasTrainer(shards[0]))),
        "k1": (hello(("numpy", "keras"), len(shards[1])), local("k1", KerasTrainer(shards[1]))),
        "np": (hello(("numpy",), len(shards[2])), local("np", numpy_trainer)),
    }
    spec = JobSpec.model_validate(
        {
            "job_id": "cnn",
            "holdout": "unused.npz",
            "model": {"name": "digits-cnn", "conv": [4], "hidden": [16]},
            "rounds": {"participants": 3, "round_timeout_s": 30, "min_agents": 2,
                       "local_steps": 2},
            "constraints": {"target_accuracy": 0.99, "time_budget_s": 120, "max_rounds": 2},
        }
    )  # fmt: skip
    fleet = InMemoryFleet(agents)
    coordinator = Coordinator(
        spec=spec, fleet=fleet, holdout=holdout, state_dir=tmp_path / "state",
        out_dir=tmp_path / "out",
    )  # fmt: skip
    outcome = asyncio.run(coordinator.run())

    assert outcome.progress.round == 2
    assert asked == {"k0": 2, "k1": 2, "np": 0}
    assert all(r.results == 2 and r.participants == ("k0", "k1") for r in outcome.progress.history)
    # ...and the filter matters: the NumPy trainer cannot train this model.
    model_json = coordinator_model_json(spec, holdout)
    with pytest.raises(TrainingError, match="not supported by the NumPy trainer"):
        numpy_trainer.fit(model_json, (), TrainConfig(), stop_at=float("inf"))


def coordinator_model_json(spec: JobSpec, holdout: Shard) -> str:
    from coordinator.model import GlobalModel

    return GlobalModel(spec.model, holdout).config_json
