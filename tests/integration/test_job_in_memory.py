"""Whole jobs on the in-memory fleet: the coordinator's loop without a broker (real Keras model)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from support import digits_split

from coordinator.fleet import InMemoryFleet, LocalAgent
from coordinator.job import JobSpec
from coordinator.service import Coordinator
from protocol import Failure, Hello, TrainIns, TrainRes


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
