"""The shard format: how a pipeline hands an agent its local data, and the coordinator its holdout.

A shard is an ``.npz`` archive with exactly two arrays: ``x`` (float32, ``[n, ...features]``) and
``y`` (int64 labels, ``[n]``). This module turns shards into bytes and back; reading and writing
files is the caller's business.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ._errors import InvalidArray, MalformedMessage, NonFiniteValues

__all__ = ["Shard", "decode_shard", "encode_shard"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Shard:
    """Examples ``x`` with integer labels ``y``, one row each."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        _check(self.x, self.y)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1 if len(self) else 0


def _check(x: npt.NDArray[np.generic], y: npt.NDArray[np.generic]) -> None:
    if x.dtype != np.float32:
        raise InvalidArray(f"shard x must be float32, got {x.dtype}")
    if y.dtype != np.int64:
        raise InvalidArray(f"shard y must be int64, got {y.dtype}")
    if x.ndim < 2 or y.ndim != 1:
        raise InvalidArray(
            f"shard x must be [n, features...] and y [n]; got {x.shape} and {y.shape}"
        )
    if x.shape[0] != y.shape[0]:
        raise InvalidArray(f"shard has {x.shape[0]} examples but {y.shape[0]} labels")
    if y.size and int(y.min()) < 0:
        raise InvalidArray("shard labels must be non-negative")
    if x.size and not np.isfinite(x).all():
        raise NonFiniteValues("shard x holds NaN or Inf")


def encode_shard(shard: Shard) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=shard.x, y=shard.y)
    return buf.getvalue()


def decode_shard(data: bytes) -> Shard:
    """Parse shard bytes; raises :class:`MalformedMessage` or :class:`InvalidArray` when wrong."""
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise MalformedMessage("not a shard archive: a bare .npy array, not an .npz")
        with loaded as archive:
            names = sorted(archive.files)
            if names != ["x", "y"]:
                raise MalformedMessage(f"a shard holds exactly arrays x and y, found {names}")
            x, y = archive["x"], archive["y"]
    # zipfile refuses unsupported or encrypted members with NotImplementedError / RuntimeError.
    except (
        OSError,
        ValueError,
        zipfile.BadZipFile,
        EOFError,
        zlib.error,
        NotImplementedError,
        RuntimeError,
    ) as exc:
        if isinstance(exc, MalformedMessage):
            raise
        raise MalformedMessage(f"not a shard archive: {exc}") from exc
    return Shard(x=x, y=y)
