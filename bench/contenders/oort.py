"""Contender (d): Oort's guided participant selection (Lai et al., OSDI'21) with a deadline,
through hyperfleet's engine (``[planner] name = "oort"``, :mod:`coordinator.planners.oort`):
statistical x system utility, epsilon-greedy exploration, over-commitment and the pacer; agents
cut their work at the deadline ``T`` the pacer keeps.

Grid: learning rate x local epochs x participants (K) x initial deadline T."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from bench.verdicts import RunResult

from .harness import Task, Trial, run_hyperfleet_job

name = "oort"


def grid(task: Task) -> list[dict[str, Any]]:
    return [
        {"learning_rate": lr, "local_epochs": e, "participants": k, "deadline_s": d}
        for lr, e, k, d in itertools.product((0.1, 0.3), (1, 2), (10, 20), (5.0, 10.0, 20.0))
    ]


def overrides(config: Mapping[str, Any]) -> dict[str, Any]:
    """The job-file tables this contender's configuration sets (durations in device seconds)."""
    return {
        "planner": {"name": "oort", "oort": {"deadline_s": config["deadline_s"]}},
        "rounds": {
            "learning_rate": config["learning_rate"],
            "local_epochs": config["local_epochs"],
            "participants": config["participants"],
            # T may relax up to here (the pacer); the planner's deadline is what rounds use.
            "round_timeout_s": 4 * config["deadline_s"],
        },
    }


def run(trial: Trial, config: Mapping[str, Any]) -> RunResult:
    return run_hyperfleet_job(trial, contender=name, config=config, overrides=overrides(config))
