"""Contender (f): Flower 1.42 itself, its own FedAvg on its deployment runtime (a SuperLink, one
SuperNode per fleet member, ``flwr run``), with hyperfleet's model, shards, NumPy trainer and
device emulation inside its ClientApp (:mod:`bench.flower_contender`). Any number of seeds: each
trial is one full Flower deployment, started and torn down.

Flower's clients are not told a deadline: like contender (b), the server waits up to
``timeout_s`` for its sampled clients, sampling only members online at the time (as hyperfleet's
registry offers only live agents). Transfers take the time of the trial's ``model_wire_bytes``
when set. Its ClientApp trains with the NumPy trainer, so it runs dense models only: on the CNN
task it is recorded as unavailable.

Grid: learning rate x local epochs x clients per round x timeout."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from bench.verdicts import RunResult, time_to_target

from .harness import ContenderUnavailable, Task, Trial, config_key

name = "flower"


def grid(task: Task) -> list[dict[str, Any]]:
    return [
        {"learning_rate": lr, "local_epochs": e, "participants": k, "timeout_s": t}
        for lr, e, k, t in itertools.product((0.1, 0.3), (1, 2), (10, 20), (30.0, 60.0))
    ]


def run(trial: Trial, config: Mapping[str, Any]) -> RunResult:
    if trial.task.model.get("conv"):
        raise ContenderUnavailable(
            "Flower's ClientApp here trains with hyperfleet's NumPy trainer: dense models only"
        )
    from agent.device_class import load_fleet
    from bench.flower_contender import run_flower

    scale = trial.time_scale
    nodes = load_fleet(trial.task.fleet).total  # as hyperfleet's planners: no more than exist
    out = run_flower(
        seed=trial.seed,
        shards_dir=trial.data / "shards",
        holdout=trial.data / "holdout.npz",
        fleet=trial.task.fleet,
        time_scale=scale,
        target_accuracy=trial.target,
        time_budget_s=trial.budget_s * trial.room * scale,
        clients_per_round=min(int(config["participants"]), nodes),
        local_epochs=int(config["local_epochs"]),
        batch_size=trial.task.batch_size,
        learning_rate=float(config["learning_rate"]),
        round_timeout_s=float(config["timeout_s"]) * scale,
        work_dir=trial.work,
        model_wire_bytes=trial.model_wire_bytes,
    )
    curve = tuple((float(t) / scale, float(acc)) for t, acc in out["curve"])
    reached = time_to_target(curve, trial.target)
    return RunResult(
        contender=name,
        config=config_key(config),
        seed=trial.seed,
        budget_s=trial.budget_s,
        curve=curve,
        time_to_target_s=reached,
        rounds=int(out["rounds"]),
        bytes_moved=int(out["bytes_moved"]),
        agent_seconds=float(out["agent_seconds"]) / scale,
        stop_reason=str(out["stop_reason"]),
        extra={
            "startup_s": out.get("startup_s"),
            "round_overhead_s": out.get("round_overhead_s"),
            "note": "rounds, bytes and agent-seconds are Flower's totals for the whole run",
        },
    )
