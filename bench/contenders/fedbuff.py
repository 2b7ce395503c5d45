"""Contender (e): asynchronous buffered aggregation (FedBuff, Nguyen et al., AISTATS'22) through
hyperfleet's engine in its asynchronous mode: the job file's ``mode = "async"`` with an
``[async]`` table (``buffer_size`` K updates per aggregation, ``concurrency`` agents training at
once, ``max_staleness``, ``server_lr``), FedAvg-weighted with staleness discounting.

Until the engine has that mode, the coordinator refuses the job file and every run of this
contender is recorded as ``engine has no async mode`` (an error in the results, never a
silent skip).

Grid: learning rate x local epochs x buffer size x concurrency."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from bench.verdicts import RunResult

from .harness import ContenderUnavailable, Task, Trial, run_hyperfleet_job, validate_job

name = "fedbuff"


def grid(task: Task) -> list[dict[str, Any]]:
    return [
        {"learning_rate": lr, "local_epochs": e, "buffer_size": b, "concurrency": c}
        for lr, e, b, c in itertools.product((0.1, 0.3), (1, 2), (5, 10), (20, 30))
    ]


def overrides(config: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "mode": "async",
        "async": {
            "buffer_size": config["buffer_size"],
            "concurrency": config["concurrency"],
            "max_staleness": 10,
            "server_lr": 1.0,
        },
        "planner": {"name": "uniform"},
        "rounds": {
            "learning_rate": config["learning_rate"],
            "local_epochs": config["local_epochs"],
            "participants": config["buffer_size"],
        },
    }


def check_async_mode() -> None:
    """Raise :class:`ContenderUnavailable` ("engine has no async mode") unless the coordinator's
    job file knows ``mode = "async"``."""
    from coordinator.job import JobSpec

    if "mode" not in JobSpec.model_fields:
        raise ContenderUnavailable(
            'engine has no async mode: the job file has no mode = "async" on this branch '
            "(issue 16 part 3, FedBuff in the engine)"
        )


def run(trial: Trial, config: Mapping[str, Any]) -> RunResult:
    check_async_mode()
    doc = overrides(config)
    validate_minimal = {
        "job_id": "fedbuff-check",
        "holdout": str(trial.data / "holdout.npz"),
        "constraints": {"target_accuracy": trial.target, "time_budget_s": 1.0},
        **doc,
    }
    validate_job(validate_minimal)
    return run_hyperfleet_job(trial, contender=name, config=config, overrides=doc)
