"""The time-to-accuracy contenders (bench/contenders/): grids, the job files they run, the same
tuning budget, and a contender that cannot run saying why."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.contenders import CONTENDERS, contender, fedavg_deadline, fedavg_timeout, hyperfl, oort
from bench.contenders import fedbuff as fedbuff_contender
from bench.contenders.harness import (
    TASKS,
    ContenderUnavailable,
    Trial,
    config_key,
    job_document,
    validate_job,
)
from bench.time_to_accuracy import tuning_configs
from coordinator.job import JobSpec


def trial(tmp_path: Path, task: str = "digits-mlp", scale: float = 0.5) -> Trial:
    return Trial(
        task=TASKS[task],
        seed=3,
        data=tmp_path,
        broker_url="mqtt://127.0.0.1:1883",
        time_scale=scale,
        budget_s=100.0,
        room=2.0,
        target=0.9,
        work=tmp_path / "work",
    )


def test_the_six_contenders_are_there_with_grids_on_both_tasks() -> None:
    assert list(CONTENDERS) == [
        "hyperfl", "fedavg_timeout", "fedavg_deadline", "oort", "fedbuff", "flower",
    ]  # fmt: skip
    for name in CONTENDERS:
        for task in TASKS.values():
            grid = contender(name).grid(task)
            assert len(grid) >= 6
            assert len({config_key(c) for c in grid}) == len(grid)  # no duplicates
    with pytest.raises(KeyError, match="known: hyperfl"):
        contender("fedsgd")


def test_every_contender_gets_the_same_tuning_budget() -> None:
    task = TASKS["digits-mlp"]
    counts = {n: len(tuning_configs(n, task, 6, 0)) for n in CONTENDERS}
    assert set(counts.values()) == {6}
    # Seeded: the same draw every time.
    assert tuning_configs("oort", task, 6, 0) == tuning_configs("oort", task, 6, 0)


def test_config_key_is_stable_and_sorted() -> None:
    assert config_key({"b": 0.1, "a": 2}) == "a=2,b=0.1"


HYPERFLEET = {
    "hyperfl": (hyperfl, False),
    "fedavg_timeout": (fedavg_timeout, True),
    "fedavg_deadline": (fedavg_deadline, True),
    "oort": (oort, True),
}
"""Contenders that run a hyperfleet job: module, and whether it gets the baselines' room."""


@pytest.mark.parametrize("name", ["hyperfl", "fedavg_timeout", "fedavg_deadline", "oort"])
def test_each_hyperfleet_contender_runs_a_job_the_coordinator_accepts(
    name: str, tmp_path: Path
) -> None:
    t = trial(tmp_path)
    module, baseline = HYPERFLEET[name]
    config = module.grid(t.task)[0]
    budget = t.budget_s * (t.room if baseline else 1.0)
    doc = job_document(t, contender=name, budget_s=budget, overrides=module.overrides(config))
    spec = JobSpec.model_validate(doc)
    assert spec.model.hidden == [64, 32]
    assert spec.constraints.time_budget_s == pytest.approx(budget)  # device seconds
    assert spec.emulation.time_scale == 0.5  # the coordinator converts at its edges
    if name == "hyperfl":
        assert spec.planner.name == "hyperfl"
        assert spec.constraints.time_budget_s == pytest.approx(t.budget_s)  # no extra room
    if name == "fedavg_timeout":
        assert spec.planner.name == "uniform"
        assert not spec.rounds.cut_work_at_deadline
        assert spec.rounds.round_timeout_s == pytest.approx(config["timeout_s"])
    if name == "fedavg_deadline":
        assert spec.rounds.cut_work_at_deadline
        assert spec.rounds.round_timeout_s == pytest.approx(config["deadline_s"])
    if name == "oort":
        assert spec.planner.name == "oort"
        assert spec.planner.oort.deadline_s == pytest.approx(config["deadline_s"])


def test_the_cnn_task_asks_for_a_cnn(tmp_path: Path) -> None:
    t = trial(tmp_path, task="mnist-cnn")
    spec = JobSpec.model_validate(job_document(t, contender="x", budget_s=10.0, overrides={}))
    assert spec.model.conv == [8, 16]
    assert spec.rounds.min_agents == 20  # of mixed-100's 100 agents


def test_fedbuff_says_plainly_whether_the_engine_has_an_async_mode(tmp_path: Path) -> None:
    t = trial(tmp_path)
    config = fedbuff_contender.grid(t.task)[0]
    if "mode" not in JobSpec.model_fields:
        with pytest.raises(ContenderUnavailable, match="engine has no async mode"):
            fedbuff_contender.run(t, config)
    else:  # after the asynchronous engine: its job file must be accepted
        validate_job(
            {
                "job_id": "f",
                "holdout": "h.npz",
                "constraints": {"target_accuracy": 0.9, "time_budget_s": 1.0},
                **fedbuff_contender.overrides(config),
            }
        )


def test_flower_declines_the_cnn_its_client_app_cannot_train(tmp_path: Path) -> None:
    flower = contender("flower")
    config = flower.grid(TASKS["digits-mlp"])[0]
    with pytest.raises(ContenderUnavailable, match="dense models only"):
        flower.run(trial(tmp_path, task="mnist-cnn"), config)
