"""Byzantine agents (issue 17 §4): 2 of 10 agents (20%) send poisoned updates every round; the
robust strategies keep the final accuracy within 2 points of their clean run, and FedAvg, under
the same attack, is damaged (so the test can fail).

Real parts, in one process for speed: the coordinator (:class:`~coordinator.service.Coordinator`,
the round engine, checkpoints, the Keras holdout evaluation, export), the in-memory fleet
(:class:`~coordinator.fleet.InMemoryFleet`, the same round collector as over MQTT) and NumPy
trainers on digits shards. Everything is seeded: the split, the model, every agent's batches.

The attacks, as published and as an agent that can run its own code would mount them:

- ``sign_flip``: train honestly, then send ``w - 4 (w_local - w)``, the honest step reversed and
  scaled (the "sign flipping" attack of Li et al., AAAI 2019, scaled as in Fang et al., USENIX
  Security 2020). Its norm is 4x an honest update's: well inside the collector's norm bound
  (``protocol.check_update_norm``, 100x the model's norm), so it reaches the strategy.
- ``noise``: send the global model plus Gaussian noise of standard deviation 1 per weight
  (Blanchard et al., NeurIPS 2017, their "Gaussian Byzantine" agent), also inside the bound.

Nine jobs of 12 rounds (each ends with a Keras and TFLite export): ``make test-faults``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import digits_split

from agent.numpy_trainer import NumpyTrainer
from coordinator.fleet import InMemoryFleet, LocalAgent
from coordinator.job import JobSpec
from coordinator.service import Coordinator, JobOutcome
from protocol import Failure, Hello, Shard, TrainIns, TrainRes

AGENTS = 10
BYZANTINE = ("agent-03", "agent-07")  # 20%
ROUNDS = 12
STRATEGIES: dict[str, dict[str, Any]] = {
    "fedavg": {"name": "fedavg"},
    # trims 2 values from each end of every coordinate: as many as there are attackers
    "trimmed_mean": {"name": "trimmed_mean", "params": {"beta": 0.2}},
    # Multi-Krum keeping n - f = 8 of 10, f = 2 (needs n >= 2f + 3 = 7)
    "krum": {"name": "krum", "params": {"num_malicious": 2, "num_to_keep": 8}},
}


def _spec(strategy: dict[str, Any]) -> JobSpec:
    return JobSpec.model_validate(
        {
            "job_id": "byz",
            "holdout": "unused.npz",
            "model": {"hidden": [32], "seed": 0},
            "strategy": strategy,
            "rounds": {
                "participants": AGENTS,
                "min_agents": AGENTS,
                "round_timeout_s": 30,
                "local_epochs": 1,
                "batch_size": 16,
                "learning_rate": 0.1,
            },
            "constraints": {
                "target_accuracy": 1.0,
                "time_budget_s": 600,
                "max_rounds": ROUNDS,
            },
        }
    )


def _agent(shard: Shard, attack: str | None, seed: int) -> LocalAgent:
    trainer = NumpyTrainer(shard)
    rng = np.random.default_rng(seed)

    async def call(ins: TrainIns) -> TrainRes | Failure:
        fit = await asyncio.to_thread(trainer.fit, ins.model, ins.weights, ins.config, stop_at=1e18)
        weights = fit.weights
        if attack == "sign_flip":
            weights = tuple(
                (g - 4.0 * (w - g)).astype(np.float32)
                for w, g in zip(fit.weights, ins.weights, strict=True)
            )
        elif attack == "noise":
            weights = tuple(
                (g + rng.normal(0.0, 1.0, g.shape)).astype(np.float32) for g in ins.weights
            )
        return TrainRes(
            weights=weights,
            num_examples=fit.num_examples,
            steps=fit.steps,
            loss=fit.loss,
            train_s=fit.train_s,
        )

    return call


def _run(
    strategy: str, attack: str | None, shards: list[Shard], holdout: Shard, tmp: Path
) -> float:
    agents: dict[str, tuple[Hello, LocalAgent]] = {}
    for i, shard in enumerate(shards):
        agent_id = f"agent-{i:02d}"
        hello = Hello(
            device_class="x86-cpu",
            arch="x86_64",
            cores=1,
            memory_bytes=1 << 30,
            num_examples=len(shard),
        )
        agents[agent_id] = (hello, _agent(shard, attack if agent_id in BYZANTINE else None, i))
    fleet = InMemoryFleet(agents)
    where = tmp / f"{strategy}-{attack}"
    coordinator = Coordinator(
        spec=_spec(STRATEGIES[strategy]),
        fleet=fleet,
        holdout=holdout,
        state_dir=where / "state",
        out_dir=where / "out",
    )
    outcome: JobOutcome = asyncio.run(coordinator.run())
    history = outcome.progress.history
    assert outcome.progress.round == ROUNDS
    assert all(r.results == AGENTS for r in history), "every update reached the strategy"
    return history[-1].accuracy


@pytest.fixture(scope="module")
def digits() -> tuple[list[Shard], Shard]:
    return digits_split(AGENTS, seed=3, alpha=100.0)  # close to IID: Krum's assumption


@pytest.fixture(scope="module")
def clean(
    digits: tuple[list[Shard], Shard], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, float]:
    shards, holdout = digits
    tmp = tmp_path_factory.mktemp("clean")
    return {s: _run(s, None, shards, holdout, tmp) for s in STRATEGIES}


@pytest.mark.parametrize("attack", ["sign_flip", "noise"])
def test_robust_strategies_hold_within_2_points_and_fedavg_does_not(
    attack: str, digits: tuple[list[Shard], Shard], clean: dict[str, float], tmp_path: Path
) -> None:
    shards, holdout = digits
    attacked = {s: _run(s, attack, shards, holdout, tmp_path) for s in STRATEGIES}
    report = {s: (round(clean[s], 4), round(attacked[s], 4)) for s in STRATEGIES}
    assert clean["fedavg"] > 0.85, report  # the clean job learns: the comparison means something
    for robust in ("trimmed_mean", "krum"):
        assert attacked[robust] >= clean[robust] - 0.02, report
        assert attacked[robust] >= clean["fedavg"] - 0.05, report
    assert attacked["fedavg"] < clean["fedavg"] - 0.10, report  # the attack is real
