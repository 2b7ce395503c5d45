"""cloud.pipelines' pure parts behind the Spark job: row assignment from class counts (the same
split as prepare_federated), moments and normalisation statistics, raw file writers."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from cloud.pipelines import (
    HOLDOUT,
    DataError,
    Moments,
    Normalization,
    assign_by_label,
    assign_users,
    dirichlet_indices,
    export_raw,
    holdout_indices,
    iid_indices,
    load_csv,
    merge_moments,
    moments_of,
    normalization_from_json,
    write_csv,
    write_leaf_json,
    write_parquet,
)
from cloud.pipelines.assignment import PartitionKind
from protocol import Shard


def ranks_within_class(labels: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    ranks = np.empty(labels.shape[0], dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        ranks[members] = np.arange(members.shape[0])
    return ranks


# --- assignment ---------------------------------------------------------------------------------


@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
def test_assignment_from_counts_equals_the_split_of_the_rows(partition: PartitionKind) -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 6, size=600).astype(np.int64)  # unsorted, uneven classes
    counts = np.bincount(labels, minlength=6)
    assignment = assign_by_label(
        counts, agents=7, partition=partition, alpha=0.3, holdout=0.25, seed=11
    )
    dest, slot = assignment.lookup(labels, ranks_within_class(labels))

    rest, held = holdout_indices(labels, 0.25, 11)
    if partition == "iid":
        parts = iid_indices(rest.shape[0], 7, 11)
    else:
        parts = dirichlet_indices(labels[rest], 7, 0.3, 11)
    expected = {HOLDOUT: held, **{a: rest[part] for a, part in enumerate(parts)}}
    for target, rows in expected.items():
        mine = np.flatnonzero(dest == target)
        np.testing.assert_array_equal(mine[np.argsort(slot[mine])], rows)
    assert sorted(np.unique(dest).tolist()) == [HOLDOUT, *range(7)]


def test_users_assignment_decides_the_holdout_only() -> None:
    counts = [30, 50, 20]
    assignment = assign_by_label(
        counts, agents=3, partition="users", alpha=1.0, holdout=0.2, seed=0
    )
    assert int((assignment.dest == HOLDOUT).sum()) == 20
    assert set(assignment.dest.tolist()) == {HOLDOUT, 0}
    # Stratified: each class gives a fifth.
    for c, n in enumerate(counts):
        block = assignment.dest[assignment.starts[c] : assignment.starts[c + 1]]
        assert int((block == HOLDOUT).sum()) == n // 5


def test_lookup_refuses_ranks_past_the_counts() -> None:
    assignment = assign_by_label([3, 3], agents=2, partition="iid", alpha=1.0, holdout=0.5, seed=0)
    with pytest.raises(DataError, match="past its class's count"):
        assignment.lookup(np.array([0]), np.array([3]))
    with pytest.raises(DataError, match="outside the counted classes"):
        assignment.lookup(np.array([2]), np.array([0]))


def test_assignment_rejects_impossible_parameters() -> None:
    with pytest.raises(DataError, match="cannot give 9 agents"):
        assign_by_label([4, 4], agents=9, partition="iid", alpha=1.0, holdout=0.25, seed=0)
    with pytest.raises(DataError, match="partition must be"):
        assign_by_label([4, 4], agents=2, partition="zipf", alpha=1.0, holdout=0.25, seed=0)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="holdout fraction"):
        assign_by_label([4, 4], agents=2, partition="iid", alpha=1.0, holdout=1.0, seed=0)


def test_users_are_dealt_to_agents_deterministically_and_evenly() -> None:
    examples = {f"u{i:02d}": 10 + 7 * (i % 5) for i in range(23)}
    owners = assign_users(examples, 4, seed=3)
    assert owners == assign_users(dict(reversed(examples.items())), 4, seed=3)
    assert set(owners) == set(examples)
    load = np.zeros(4)
    for user, agent in owners.items():
        load[agent] += examples[user]
    assert load.min() > 0
    assert load.max() - load.min() <= max(examples.values())
    assert owners != assign_users(examples, 4, seed=4)
    with pytest.raises(DataError, match="a user each from 3 users"):
        assign_users({"a": 1, "b": 1, "c": 1}, 4, seed=0)


# --- moments and normalisation ------------------------------------------------------------------


def test_merged_moments_equal_numpy_on_the_whole() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(1e6, 0.5, size=(1000, 3))  # a large offset: sums of squares would lose it
    x[:, 2] = 4.0
    cuts = [0, 1, 1, 200, 731, 1000]  # an empty piece and a single row among them
    parts = [moments_of(x[a:b]) for a, b in itertools.pairwise(cuts)]
    merged = merge_moments(parts)
    assert merged.count == 1000
    np.testing.assert_allclose(merged.mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(merged.std, x.std(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(merged.minimum, x.min(axis=0))
    np.testing.assert_array_equal(merged.maximum, x.max(axis=0))


def test_standard_normalisation_and_roma_convention() -> None:
    x = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 10.0], [5.0, 5.0, 20.0]])
    norm = Normalization.from_moments(moments_of(x), "standard")
    np.testing.assert_allclose(norm.offset, [3.0, 5.0, 10.0])
    std = x.std(axis=0)
    np.testing.assert_allclose(norm.scale, [1 / std[0], 1.0, 1 / std[2]])  # constant: scale 1
    out = norm.apply(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(out.std(axis=0), [1.0, 0.0, 1.0], rtol=1e-6)
    # Exactly ROMA's arithmetic: (x32 - offset32) * scale32.
    offset = np.asarray(norm.offset, dtype=np.float32)
    expected = (x.astype(np.float32) - offset) * np.asarray(norm.scale, dtype=np.float32)
    np.testing.assert_array_equal(out, expected)


def test_minmax_and_none() -> None:
    x = np.array([[2.0, -1.0], [6.0, 1.0]])
    minmax = Normalization.from_moments(moments_of(x), "minmax")
    np.testing.assert_allclose(minmax.apply(x), [[0.0, 0.0], [1.0, 1.0]])
    none = Normalization.from_moments(moments_of(x), "none")
    np.testing.assert_array_equal(none.apply(x), x.astype(np.float32))
    with pytest.raises(DataError, match="one of"):
        Normalization.from_moments(moments_of(x), "zscore")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="at least one training row"):
        Normalization.from_moments(moments_of(np.zeros((0, 2))), "standard")


def test_normalisation_json_round_trips_and_rejects_bad_documents() -> None:
    norm = Normalization.from_moments(moments_of(np.array([[1.0, 2.0], [3.0, 6.0]])), "standard")
    doc = json.loads(json.dumps(norm.to_json()))
    assert doc["convention"] == "(x - offset) * scale"
    assert normalization_from_json(doc) == norm
    for key, value, message in [
        ("version", 2, "unsupported version"),
        ("offset", [1.0], "differ in length"),
        ("scale", [1.0, math.inf], "finite"),
        ("scale", "1", "non-empty list"),
        ("method", "zscore", "method must be"),
        ("examples", 0, "positive integer"),
    ]:
        bad = {**doc, key: value}
        with pytest.raises(DataError, match=message):
            normalization_from_json(bad)


def test_moments_need_rows_of_features() -> None:
    with pytest.raises(DataError, match=r"\[n, features\]"):
        moments_of(np.zeros(3))
    with pytest.raises(DataError, match="differ"):
        merge_moments([moments_of(np.zeros((2, 2))), moments_of(np.zeros((2, 3)))])
    assert isinstance(merge_moments([moments_of(np.ones((2, 2)))]), Moments)


# --- raw files ----------------------------------------------------------------------------------


def small_shard() -> Shard:
    rng = np.random.default_rng(2)
    return Shard(
        x=rng.normal(size=(12, 3)).astype(np.float32), y=rng.integers(0, 4, 12).astype(np.int64)
    )


def test_csv_round_trips_exactly_through_load_csv(tmp_path: Path) -> None:
    shard = small_shard()
    back = load_csv(write_csv(tmp_path / "d.csv", shard))
    np.testing.assert_array_equal(back.x, shard.x)
    np.testing.assert_array_equal(back.y, shard.y)


def test_parquet_and_leaf_files_hold_the_shard(tmp_path: Path) -> None:
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    shard = small_shard()
    table = pq.read_table(write_parquet(tmp_path / "d.parquet", shard))
    assert table.column_names == ["f0", "f1", "f2", "label"]
    np.testing.assert_array_equal(table.column("f1").to_numpy(), shard.x[:, 1])
    np.testing.assert_array_equal(table.column("label").to_numpy(), shard.y)

    doc = json.loads(write_leaf_json(tmp_path / "d.json", shard, users=5).read_text())
    assert doc["users"] == [f"user-{i:03d}" for i in range(5)]
    assert doc["num_samples"] == [3, 3, 2, 2, 2]
    xs = np.concatenate([doc["user_data"][u]["x"] for u in doc["users"]]).astype(np.float32)
    ys = np.concatenate([doc["user_data"][u]["y"] for u in doc["users"]])
    np.testing.assert_array_equal(xs, shard.x)
    np.testing.assert_array_equal(ys, shard.y)
    with pytest.raises(DataError, match="13 users"):
        write_leaf_json(tmp_path / "e.json", shard, users=13)


def test_export_raw_writes_unscaled_digits(tmp_path: Path) -> None:
    paths = export_raw(tmp_path, formats=["csv"])
    shard = load_csv(paths["csv"])
    assert shard.x.shape == (1797, 64)
    assert float(shard.x.max()) == 16.0  # raw pixel counts: normalisation is the job's
    with pytest.raises(DataError, match="unknown raw format"):
        export_raw(tmp_path, formats=["xlsx"])  # type: ignore[list-item]
    with pytest.raises(DataError, match="unknown source"):
        export_raw(tmp_path, source="cifar")  # type: ignore[arg-type]
