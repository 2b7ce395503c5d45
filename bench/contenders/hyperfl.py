"""Contender (a): hyperFL, hyperfleet's own planner (deadlines, work sizing, utility selection,
pacing, feasibility verdicts) on the job's own budget (no extra room: it plans to the budget).

Grid: learning rate x starting participants x most local epochs per round."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from bench.verdicts import RunResult

from .harness import Task, Trial, run_hyperfleet_job

name = "hyperfl"


def grid(task: Task) -> list[dict[str, Any]]:
    return [
        {"learning_rate": lr, "participants": k, "max_local_epochs": e}
        for lr, k, e in itertools.product((0.1, 0.3), (10, 20), (2.0, 5.0))
    ]


def overrides(config: Mapping[str, Any]) -> dict[str, Any]:
    """The job-file tables this contender's configuration sets (durations in device seconds)."""
    return {
        "planner": {"name": "hyperfl", "max_local_epochs": config["max_local_epochs"]},
        "rounds": {
            "learning_rate": config["learning_rate"],
            "participants": config["participants"],
        },
    }


def run(trial: Trial, config: Mapping[str, Any]) -> RunResult:
    return run_hyperfleet_job(
        trial, contender=name, config=config, overrides=overrides(config), baseline=False
    )
