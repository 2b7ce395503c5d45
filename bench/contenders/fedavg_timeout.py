"""Contender (b): FedAvg as Flower and FedML run it by default. ``participants`` agents drawn
uniformly among the live ones, the same local epochs for all; agents are not told the round's
timeout and train their whole work; the server waits for every sampled agent up to ``timeout_s``
device seconds, and whoever replies later is dropped (``rounds.cut_work_at_deadline = false``).

Grid: learning rate x local epochs x participants x timeout."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from bench.verdicts import RunResult

from .harness import Task, Trial, run_hyperfleet_job

name = "fedavg_timeout"


def grid(task: Task) -> list[dict[str, Any]]:
    return [
        {"learning_rate": lr, "local_epochs": e, "participants": k, "timeout_s": t}
        for lr, e, k, t in itertools.product((0.1, 0.3), (1, 2), (10, 20), (30.0, 60.0))
    ]


def overrides(config: Mapping[str, Any]) -> dict[str, Any]:
    """The job-file tables this contender's configuration sets (durations in device seconds)."""
    return {
        "planner": {"name": "uniform"},
        "rounds": {
            "learning_rate": config["learning_rate"],
            "local_epochs": config["local_epochs"],
            "participants": config["participants"],
            "round_timeout_s": config["timeout_s"],
            "cut_work_at_deadline": False,
        },
    }


def run(trial: Trial, config: Mapping[str, Any]) -> RunResult:
    return run_hyperfleet_job(trial, contender=name, config=config, overrides=overrides(config))
