"""Contender (c): FedAvg with a round deadline. Uniform sampling of ``participants`` live agents,
the same local epochs for all, and a short deadline the agents are told: each cuts its work at
the deadline and replies with what it did (``rounds.cut_work_at_deadline = true``), so slow
devices contribute partial work instead of stalling the round.

Grid: learning rate x local epochs x participants x deadline."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from bench.verdicts import RunResult

from .harness import Task, Trial, run_hyperfleet_job

name = "fedavg_deadline"


def grid(task: Task) -> list[dict[str, Any]]:
    return [
        {"learning_rate": lr, "local_epochs": e, "participants": k, "deadline_s": d}
        for lr, e, k, d in itertools.product((0.1, 0.3), (1, 2), (10, 20), (5.0, 10.0, 20.0))
    ]


def overrides(config: Mapping[str, Any]) -> dict[str, Any]:
    """The job-file tables this contender's configuration sets (durations in device seconds)."""
    return {
        "planner": {"name": "uniform"},
        "rounds": {
            "learning_rate": config["learning_rate"],
            "local_epochs": config["local_epochs"],
            "participants": config["participants"],
            "round_timeout_s": config["deadline_s"],
            "cut_work_at_deadline": True,
        },
    }


def run(trial: Trial, config: Mapping[str, Any]) -> RunResult:
    return run_hyperfleet_job(trial, contender=name, config=config, overrides=overrides(config))
