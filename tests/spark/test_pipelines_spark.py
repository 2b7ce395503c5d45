"""The preparation job on a real Spark session (``local-cluster``: executors in their own JVMs and
Python workers, so the job's code travels to them as it would on a cluster): CSV, Parquet and
LEAF JSON in; bad rows dropped and counted; shards readable by ``read_shard_file`` and equal to
``prepare_federated``'s split; IID vs Dirichlet label skew; normalisation from the training rows
only; the manifest; errors that name what is wrong and leave nothing half-written."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from cloud.pipelines import (
    DataError,
    label_histogram,
    normalization_from_json,
    prepare_federated,
    read_shard_file,
    write_parquet,
)
from cloud.pipelines.spark_prepare import PrepareConfig, main, prepare_with_spark
from protocol import Shard

MASTER = "local-cluster[2,1,1024]"
LABELS = np.array([3, 7, 10, 12, 20])  # not 0..K-1, and "10" < "3" as text: remapped by number
SCALES = np.array([100.0, -5.0, 0.0, 1000.0]), np.array([1.0, 0.1, 3.0, 50.0])


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master(MASTER)
        .appName("pipelines test")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    yield session
    session.stop()


def clean_rows(n: int, seed: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Features on different scales, raw labels from LABELS (uneven classes)."""
    rng = np.random.default_rng(seed)
    mean, spread = SCALES
    x = (mean + spread * rng.normal(size=(n, 4))).astype(np.float32)
    y = LABELS[rng.choice(5, size=n, p=[0.3, 0.25, 0.2, 0.15, 0.1])]
    return x, y


BAD_CSV_ROWS = {  # (line, reason)
    "1.0,2.0,3.0,4.0,": "missing_label",
    "1.0,2.0,3.0,4.0,1.5": "bad_label",
    "1.0,2.0,3.0,4.0,cat": "bad_label",
    "1.0,abc,3.0,4.0,3": "missing_feature",
    "1.0,,3.0,4.0,3": "missing_feature",
    "1.0,2.0,3": "missing_label",  # a short row: its missing cells, the label first, are nulls
    "NaN,2.0,3.0,4.0,7": "nonfinite_feature",
    "1.0,2.0,1e40,4.0,7": "nonfinite_feature",  # past float32
}


@pytest.fixture(scope="module")
def csv_input(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Shard]:
    """A CSV with bad rows among the good, and the good rows as the reference shard."""
    x, y = clean_rows(400, seed=1)
    lines = ["f0,f1,f2,f3,label"]
    bad = list(BAD_CSV_ROWS)
    for i, (row, label) in enumerate(zip(x.tolist(), y.tolist(), strict=True)):
        lines.append(",".join([*(repr(v) for v in row), str(label)]))
        if i % 40 == 7 and bad:
            lines.append(bad.pop())
    path = tmp_path_factory.mktemp("raw") / "data.csv"
    path.write_text("\n".join(lines) + "\n")
    classes = np.searchsorted(LABELS, y).astype(np.int64)
    return path, Shard(x=x, y=classes)


@pytest.fixture(scope="module")
def csv_run(
    spark: Any, csv_input: tuple[Path, Shard], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Any, Path]:
    path, _ = csv_input
    out = tmp_path_factory.mktemp("csv-out")
    config = PrepareConfig(
        input=str(path), format="csv", out_dir=out, agents=4, partition="dirichlet", alpha=0.5
    )
    return prepare_with_spark(spark, config), out


def test_csv_bad_rows_are_dropped_and_counted(csv_run: tuple[Any, Path]) -> None:
    report, out = csv_run
    expected: dict[str, int] = {}
    for reason in BAD_CSV_ROWS.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert {k: v for k, v in report.cleaning.dropped.items() if v} == expected
    assert report.cleaning.rows_kept == 400
    assert report.cleaning.rows_read == 400 + len(BAD_CSV_ROWS)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["cleaning"]["dropped"]["bad_label"] == 2
    assert manifest["classes"] == ["3", "7", "10", "12", "20"]


def test_csv_shards_equal_prepare_federated_normalised(
    csv_run: tuple[Any, Path], csv_input: tuple[Path, Shard], tmp_path: Path
) -> None:
    report, out = csv_run
    _, reference = csv_input
    ref = prepare_federated(
        reference, agents=4, partition="dirichlet", alpha=0.5, holdout=0.2, seed=0, out_dir=tmp_path
    )
    norm = normalization_from_json(json.loads((out / "normalization.json").read_text()))
    pairs = [
        (ref.holdout, report.layout.holdout),
        *zip(ref.shards, report.layout.shards, strict=True),
    ]
    for expected_path, got_path in pairs:
        expected, got = read_shard_file(expected_path), read_shard_file(got_path)
        assert got.x.dtype == np.float32
        assert got.y.dtype == np.int64
        np.testing.assert_array_equal(got.y, expected.y)
        np.testing.assert_array_equal(got.x, norm.apply(expected.x))


def test_normalisation_comes_from_the_training_rows_only(
    csv_run: tuple[Any, Path], csv_input: tuple[Path, Shard], tmp_path: Path
) -> None:
    report, out = csv_run
    _, reference = csv_input
    ref = prepare_federated(
        reference, agents=4, partition="dirichlet", alpha=0.5, holdout=0.2, seed=0, out_dir=tmp_path
    )
    training = np.concatenate([read_shard_file(p).x for p in ref.shards]).astype(np.float64)
    doc = json.loads((out / "normalization.json").read_text())
    assert doc["method"] == "standard"
    assert doc["examples"] == training.shape[0] == 320
    np.testing.assert_allclose(doc["offset"], training.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(doc["scale"], 1.0 / training.std(axis=0), rtol=1e-9)
    everything = reference.x.astype(np.float64)
    assert not np.allclose(doc["offset"], everything.mean(axis=0), rtol=1e-9)
    # Agents' data is normalised: the training rows have mean 0 and std 1 per feature.
    trained = np.concatenate([read_shard_file(p).x for p in report.layout.shards])
    np.testing.assert_allclose(trained.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(trained.std(axis=0), 1.0, rtol=1e-4)


def test_manifest_describes_the_files(csv_run: tuple[Any, Path]) -> None:
    _, out = csv_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["agents"] == 4
    assert manifest["partition"] == "dirichlet"
    assert manifest["num_classes"] == 5
    assert manifest["feature_shape"] == [4]
    assert manifest["examples"] == 400
    assert manifest["features_normalized"] is True
    assert manifest["feature_names"] == ["f0", "f1", "f2", "f3"]
    entries = [manifest["holdout"], *manifest["shards"]]
    assert sum(e["examples"] for e in entries) == 400
    for entry in entries:
        path = out / entry["path"]
        shard = read_shard_file(path)
        assert len(shard) == entry["examples"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert label_histogram([shard], 5)[0].tolist() == entry["label_histogram"]
    norm_bytes = (out / "normalization.json").read_bytes()
    assert hashlib.sha256(norm_bytes).hexdigest() == manifest["normalization"]["sha256"]
    assert not list(out.glob(".staging-*"))


def entropy(histograms: list[list[int]]) -> float:
    h = np.asarray(histograms, dtype=np.float64)
    p = h / h.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.where(p > 0, -p * np.log(p), 0.0).sum(axis=1).mean())


def test_parquet_iid_and_dirichlet_label_skew(spark: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(600, 3)).astype(np.float32)
    y = (np.arange(600) % 6).astype(np.int64)
    source = write_parquet(tmp_path / "data.parquet", Shard(x=x, y=y))
    runs = {}
    for partition, alpha, writer in (("iid", 0.5, "driver"), ("dirichlet", 0.1, "executors")):
        out = tmp_path / partition
        config = PrepareConfig(
            input=str(source),
            format="parquet",
            out_dir=out,
            agents=5,
            partition=partition,  # type: ignore[arg-type]
            alpha=alpha,
            seed=2,
            writer=writer,  # type: ignore[arg-type]
        )
        prepare_with_spark(spark, config)
        manifest = json.loads((out / "manifest.json").read_text())
        for entry in manifest["shards"]:
            assert len(read_shard_file(out / entry["path"])) == entry["examples"]
        runs[partition] = [e["label_histogram"] for e in manifest["shards"]]
        assert manifest["classes"] == [str(c) for c in range(6)]  # 0..K-1 kept as is
    iid_sizes = [sum(h) for h in runs["iid"]]
    assert max(iid_sizes) - min(iid_sizes) <= 1
    assert entropy(runs["iid"]) > float(np.log(6)) - 0.1  # near uniform over six classes
    assert entropy(runs["dirichlet"]) < entropy(runs["iid"]) - 0.5


@pytest.fixture(scope="module")
def leaf_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 users with word labels; feature 0 is the user's number, so shards show whose rows they hold."""
    rng = np.random.default_rng(6)
    user_data = {}
    for u in range(8):
        n = 20 + 5 * u
        x = rng.normal(size=(n, 3))
        x[:, 0] = u
        y = rng.choice(["cat", "dog", "emu"], size=n)
        user_data[f"u{u}"] = {"x": x.tolist(), "y": y.tolist()}
    user_data["u3"]["x"][0] = [3.0, 1.0]  # too few features
    user_data["u5"]["x"][1] = [5.0, None, 1.0]  # a missing feature
    path = tmp_path_factory.mktemp("leaf") / "train.json"
    doc = {"users": list(user_data), "num_samples": [len(v["y"]) for v in user_data.values()]}
    path.write_text(json.dumps({**doc, "user_data": user_data}))
    return path


def test_leaf_users_partition_keeps_users_whole(
    spark: Any, leaf_input: Path, tmp_path: Path
) -> None:
    config = PrepareConfig(
        input=str(leaf_input), format="leaf-json", out_dir=tmp_path, agents=3, partition="users"
    )
    report = prepare_with_spark(spark, config)
    assert report.classes == ("cat", "dog", "emu")
    assert report.cleaning.dropped["wrong_feature_count"] == 1
    assert report.cleaning.dropped["missing_feature"] == 1
    assert report.cleaning.rows_kept == sum(20 + 5 * u for u in range(8)) - 2
    norm = normalization_from_json(json.loads((tmp_path / "normalization.json").read_text()))
    owners = []
    for path in report.layout.shards:
        shard = read_shard_file(path)
        assert len(shard) > 0
        raw_user = shard.x[:, 0] / np.float32(norm.scale[0]) + np.float32(norm.offset[0])
        owners.append(set(np.round(raw_user).astype(int).tolist()))
    for i in range(3):
        for j in range(i + 1, 3):
            assert not owners[i] & owners[j]  # no user split between agents
    assert set().union(*owners) == set(range(8))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["partition"] == "users"
    assert manifest["alpha"] is None


def test_errors_name_what_is_wrong_and_write_nothing(
    spark: Any, csv_input: tuple[Path, Shard], leaf_input: Path, tmp_path: Path
) -> None:
    csv_path, _ = csv_input
    out = tmp_path / "out"

    def run(**changes: Any) -> None:
        fields: dict[str, Any] = {
            "input": str(csv_path),
            "format": "csv",
            "out_dir": out,
            "agents": 3,
            "partition": "iid",
        }
        prepare_with_spark(spark, PrepareConfig(**{**fields, **changes}))

    with pytest.raises(DataError, match=r"absent\.csv: no such file"):
        run(input=str(tmp_path / "absent.csv"))
    with pytest.raises(DataError, match="unknown input format 'xlsx'"):
        run(format="xlsx")
    with pytest.raises(DataError, match="no label column 'target'"):
        run(label="target")
    parquet = tmp_path / "typed.parquet"
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    pq.write_table(pa.table({"a": [1.0, 2.0], "flag": [True, False], "label": [0, 1]}), parquet)
    with pytest.raises(DataError, match="column 'flag' is boolean, not a number"):
        run(input=str(parquet), format="parquet")
    assert not out.exists()

    # A layout already there survives a failed run untouched.
    run(agents=2)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(DataError, match="cannot give 10 agents a user each from 8 users"):
        run(input=str(leaf_input), format="leaf-json", agents=10, partition="users")
    with pytest.raises(DataError, match="partition 'users' needs users"):
        run(partition="users")
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert not list(out.glob(".staging-*"))


def test_command_line_uses_the_running_session_and_reports_json(
    spark: Any, csv_input: tuple[Path, Shard], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path, _ = csv_input
    common = ["--format", "csv", "--agents", "2", "--partition", "iid", "--out", str(tmp_path)]
    assert main(["--input", str(csv_path), "--label", "nope", *common]) == 2
    assert "no label column 'nope'" in capsys.readouterr().err
    pattern = str(csv_path.parent / "*.csv")  # a glob, as Spark reads them
    assert main(["--input", pattern, "--normalize", "minmax", *common]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["shards"] == 2
    assert report["cleaning"]["rows_kept"] == 400
    assert set(report["stage_s"]) == {"read_clean", "assign", "statistics", "write"}
    norm = json.loads((tmp_path / "normalization.json").read_text())
    assert norm["method"] == "minmax"
    training = np.concatenate(
        [
            read_shard_file(tmp_path / e["path"]).x
            for e in json.loads((tmp_path / "manifest.json").read_text())["shards"]
        ]
    )
    np.testing.assert_allclose(training.min(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(training.max(axis=0), 1.0, atol=1e-6)
    assert spark.sparkContext._jsc is not None  # the test's session was not stopped by main


def test_many_input_partitions_give_the_same_split(
    spark: Any, csv_input: tuple[Path, Shard], tmp_path: Path
) -> None:
    """Ranks within a class run across input partitions: a CSV cut into many splits gives
    exactly prepare_federated's shards of the same rows."""
    csv_path, reference = csv_input
    spark.conf.set("spark.sql.files.maxPartitionBytes", "4096")
    try:
        assert spark.read.csv(str(csv_path)).rdd.getNumPartitions() >= 5
        config = PrepareConfig(
            input=str(csv_path), format="csv", out_dir=tmp_path / "spark", agents=3, partition="iid"
        )
        report = prepare_with_spark(spark, config)
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    ref = prepare_federated(
        reference, agents=3, partition="iid", holdout=0.2, seed=0, out_dir=tmp_path / "ref"
    )
    norm = normalization_from_json(json.loads(report.normalization.read_text()))
    for expected_path, got_path in zip(ref.shards, report.layout.shards, strict=True):
        expected, got = read_shard_file(expected_path), read_shard_file(got_path)
        np.testing.assert_array_equal(got.y, expected.y)
        np.testing.assert_array_equal(got.x, norm.apply(expected.x))
