"""Whole jobs on the in-memory fleet: the coordinator's loop without a broker (real Keras model)."""

from __future__ import annotations

import asyncio
from pathlib import Path

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
