"""CheckpointStore on a real state directory: a real SQLite file and real npz archives."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import coordinator.checkpoint as checkpoint
from coordinator.checkpoint import CheckpointStore
from coordinator.engine import JobProgress, RoundRecord, advance, start
from coordinator.errors import CheckpointError, JobConfigError, JobStateConflict
from coordinator.job import JobSpec
from coordinator.strategies import ClientUpdate, FedAdam, make_strategy
from protocol import Weights

SPEC = {"job_id": "job", "rounds": {"participants": 3}, "holdout": "/data/holdout.npz"}


def weights(value: float) -> Weights:
    return (
        np.arange(12, dtype=np.float32).reshape(4, 3) + value,
        np.full(3, value, dtype=np.float32),
    )


def record(rnd: int, accuracy: float) -> RoundRecord:
    return RoundRecord(
        round=rnd,
        started_s=10.0 * (rnd - 1),
        duration_s=9.5,
        participants=("a", "b", "c"),
        results=2,
        failures={"c": "timeout"},
        accuracy=accuracy,
        loss=2.0 - accuracy,
        aggregated=True,
        bytes_moved=1000 * rnd,
        agent_seconds=3.25,
        note=f"round {rnd}",
        plan={"planner": "uniform"},
    )


def rounds(*accuracies: float) -> list[JobProgress]:
    """The job's progress after each round, round ``i`` reaching ``accuracies[i - 1]``."""
    progress = start("job", weights(0.0), accuracy=0.1)
    out = []
    for rnd, accuracy in enumerate(accuracies, start=1):
        progress = advance(progress, record(rnd, accuracy), weights(float(rnd)))
        out.append(progress)
    return out


def assert_arrays_equal(got: Sequence[npt.NDArray[Any]], want: Sequence[npt.NDArray[Any]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


@pytest.fixture
def store(tmp_path: Path) -> CheckpointStore:
    return CheckpointStore(tmp_path / "state")


@pytest.fixture
def fedadam_state() -> dict[str, Weights]:
    """FedAdam's moments after one aggregation: non-zero ``m`` and ``v``."""
    strategy = make_strategy("fedadam")
    current = weights(0.0)
    strategy.initialize(current)
    update = ClientUpdate(agent_id="a", weights=weights(1.0), num_examples=10, loss=0.5)
    strategy.aggregate_train(1, current, [update], [])
    state = strategy.state()
    assert set(state) == {"m", "v"}
    assert all(np.any(a != 0) for a in state["m"] + state["v"])
    return dict(state)


def test_save_then_load_round_trips_everything(
    store: CheckpointStore, fedadam_state: dict[str, Weights]
) -> None:
    p1, p2 = rounds(0.6, 0.4)  # round 2 is worse: latest and best weights differ
    store.save(p1, spec=SPEC, strategy_state=fedadam_state)
    store.save(p2, spec=SPEC, strategy_state=fedadam_state)

    loaded = store.load("job")

    assert loaded is not None
    got = loaded.progress
    assert_arrays_equal(got.weights, p2.weights)
    assert_arrays_equal(got.best_weights, p1.weights)
    assert (got.round, got.best_round, got.status) == (2, 1, "running")
    assert (got.accuracy, got.best_accuracy) == (0.4, 0.6)
    assert got.elapsed_s == p2.elapsed_s
    assert (got.bytes_moved, got.agent_seconds) == (p2.bytes_moved, p2.agent_seconds)
    assert got.history == p2.history == (record(1, 0.6), record(2, 0.4))
    assert loaded.spec == SPEC
    assert sorted(loaded.strategy_state) == ["m", "v"]
    for key in ("m", "v"):
        assert_arrays_equal(loaded.strategy_state[key], fedadam_state[key])


def test_a_restored_fedadam_continues_exactly_where_it_stopped(
    store: CheckpointStore, fedadam_state: dict[str, Weights]
) -> None:
    (p1,) = rounds(0.5)
    store.save(p1, spec=SPEC, strategy_state=fedadam_state)
    loaded = store.load("job")
    assert loaded is not None

    current = p1.weights
    update = ClientUpdate(agent_id="b", weights=weights(3.0), num_examples=5, loss=0.4)
    original, resumed = FedAdam(), FedAdam()
    original.restore(fedadam_state)
    resumed.restore(loaded.strategy_state)

    assert_arrays_equal(
        resumed.aggregate_train(2, current, [update], []),
        original.aggregate_train(2, current, [update], []),
    )


def test_a_stateless_strategy_round_trips_as_empty_state(store: CheckpointStore) -> None:
    (p1,) = rounds(0.5)
    store.save(p1, spec=SPEC, strategy_state={})

    loaded = store.load("job")

    assert loaded is not None
    assert loaded.strategy_state == {}


def test_only_the_latest_npz_remains(store: CheckpointStore) -> None:
    for progress in rounds(0.2, 0.3, 0.4):
        path = store.save(progress, spec=SPEC, strategy_state={})

    job_dir = store.state_dir / "job"
    assert path == job_dir / "round-000003.npz"
    assert sorted(p.name for p in job_dir.iterdir()) == ["round-000003.npz"]  # no temp files


def _disk_full(path: Path, data: bytes) -> str:
    raise OSError(28, "No space left on device")


def test_a_failed_write_keeps_the_previous_checkpoint(
    store: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    p1, p2, p3 = rounds(0.2, 0.3, 0.4)
    store.save(p1, spec=SPEC, strategy_state={})
    store.save(p2, spec=SPEC, strategy_state={})
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", _disk_full)

    with pytest.raises(CheckpointError, match="No space left"):
        store.save(p3, spec=SPEC, strategy_state={})

    loaded = store.load("job")
    assert loaded is not None
    assert loaded.progress.round == 2
    assert_arrays_equal(loaded.progress.weights, p2.weights)
    assert [r.round for r in loaded.progress.history] == [1, 2]
    assert (store.state_dir / "job" / "round-000002.npz").exists()


def test_a_rename_that_fails_leaves_no_temp_file_and_the_previous_checkpoint(
    store: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, p2, p3 = rounds(0.2, 0.3, 0.4)
    store.save(p2, spec=SPEC, strategy_state={})

    def crash(src: object, dst: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", crash)  # what link.atomic_write_bytes renames with
    with pytest.raises(CheckpointError):
        store.save(p3, spec=SPEC, strategy_state={})
    monkeypatch.undo()

    assert sorted(p.name for p in (store.state_dir / "job").iterdir()) == ["round-000002.npz"]
    loaded = store.load("job")
    assert loaded is not None
    assert loaded.progress.round == 2


def test_a_failed_commit_keeps_the_previous_checkpoint(
    store: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, p2, p3 = rounds(0.2, 0.3, 0.4)
    store.save(p2, spec=SPEC, strategy_state={})

    def locked() -> sqlite3.Connection:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store, "_connect", locked)
    with pytest.raises(CheckpointError, match="database is locked"):
        store.save(p3, spec=SPEC, strategy_state={})
    monkeypatch.undo()

    loaded = store.load("job")
    assert loaded is not None
    assert loaded.progress.round == 2
    assert_arrays_equal(loaded.progress.weights, p2.weights)
    # The next successful save tidies up the npz the failed one left behind.
    store.save(p3, spec=SPEC, strategy_state={})
    assert sorted(p.name for p in (store.state_dir / "job").iterdir()) == ["round-000003.npz"]


def test_a_new_store_on_the_same_directory_resumes(tmp_path: Path) -> None:
    (p1,) = rounds(0.5)
    CheckpointStore(tmp_path / "state").save(p1, spec=SPEC, strategy_state={})

    loaded = CheckpointStore(tmp_path / "state").load("job")

    assert loaded is not None
    assert loaded.progress.round == 1


def test_loading_an_unknown_job_gives_none(store: CheckpointStore) -> None:
    (p1,) = rounds(0.5)
    store.save(p1, spec=SPEC, strategy_state={})

    assert store.load("other-job") is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda good: b"not an npz archive",
        lambda good: b"",
        lambda good: good[: len(good) // 2],
        lambda good: good[:-10],
    ],
    ids=["garbage", "empty", "half", "truncated-end"],
)
def test_a_damaged_npz_is_a_checkpoint_error(store: CheckpointStore, damage: Any) -> None:
    (p1,) = rounds(0.5)
    path = store.save(p1, spec=SPEC, strategy_state={})
    path.write_bytes(damage(path.read_bytes()))

    with pytest.raises(CheckpointError, match="cannot load the checkpoint of job job"):
        store.load("job")


def test_a_missing_npz_is_a_checkpoint_error(store: CheckpointStore) -> None:
    (p1,) = rounds(0.5)
    os.unlink(store.save(p1, spec=SPEC, strategy_state={}))

    with pytest.raises(CheckpointError):
        store.load("job")


def test_a_state_directory_that_is_a_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a directory")

    with pytest.raises(CheckpointError, match="cannot open state directory"):
        CheckpointStore(tmp_path / "state")


def test_model_versions_count_up_per_name(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "state")

    assert [store.next_model_version("digits", "job-1") for _ in range(3)] == [1, 2, 3]
    assert store.next_model_version("mnist", "job-2") == 1
    assert CheckpointStore(tmp_path / "state").next_model_version("digits", "job-3") == 4
    assert store.next_model_version("mnist", "job-2") == 2


# --- the spec saved with the state ------------------------------------------------------------

SAVED: dict[str, Any] = {
    **SPEC,
    "model": {"hidden": [64, 32], "activation": "relu", "input_dim": None, "num_classes": None},
    "strategy": {"name": "fedavg", "params": {}},
    "constraints": {"target_accuracy": 0.9, "time_budget_s": 300},
}


def with_(section: str, **values: Any) -> dict[str, Any]:
    return {**SAVED, section: {**SAVED[section], **values}}


def test_a_job_that_never_ran_or_keeps_its_model_and_strategy_may_resume(
    store: CheckpointStore,
) -> None:
    store.check_spec("job", with_("model", hidden=[8]))  # nothing saved yet
    store.save(rounds(0.5)[0], spec=SAVED, strategy_state={})
    assert store.saved_spec("job") == SAVED
    store.check_spec("job", SAVED)
    store.check_spec("job", with_("constraints", time_budget_s=900, max_rounds=50))
    store.check_spec("job", with_("strategy", params={"eta": 0.2}))
    assert store.load("job", spec=with_("constraints", target_accuracy=0.95)) is not None


def test_a_changed_model_or_strategy_is_refused_naming_every_key(store: CheckpointStore) -> None:
    store.save(rounds(0.5)[0], spec=SAVED, strategy_state={})
    edited = {**with_("model", hidden=[128], activation="tanh"), "strategy": {"name": "fedadam"}}
    with pytest.raises(JobStateConflict) as info:
        store.check_spec("job", edited)
    message = str(info.value)
    assert "model.hidden: saved [64, 32], job file [128]" in message
    assert 'model.activation: saved "relu", job file "tanh"' in message
    assert 'strategy.name: saved "fedavg", job file "fedadam"' in message
    assert "new job_id" in message
    assert "fresh state directory" in message
    assert isinstance(info.value, JobConfigError)
    with pytest.raises(JobStateConflict, match=r"model\.hidden"):
        store.load("job", spec=with_("model", hidden=[8]))


def test_every_resume_key_is_a_key_of_the_job_spec() -> None:
    spec = JobSpec.model_validate(
        {
            "job_id": "j",
            "holdout": "/h.npz",
            "constraints": {"target_accuracy": 0.9, "time_budget_s": 1},
        }
    ).model_dump(mode="json")
    for key in checkpoint.RESUME_KEYS:
        section, name = key.split(".")
        assert name in spec[section], key
