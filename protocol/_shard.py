"""The shard format: how a pipeline hands an agent its local data, and the coordinator its holdout.

A shard is an ``.npz`` archive with exactly two arrays: ``x`` (float32, ``[n, ...features]``) and
``y`` (int64 labels, ``[n]``). This module turns shards into bytes and back; reading and writing
files is the caller's business.
"""

from __future__ import annotations

import io
import math
import tokenize
import zipfile
import zlib
from dataclasses import dataclass
from typing import IO

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


_MAX_INFLATION = 1032
"""Deflate expands at most about 1032-fold; a member claiming more lies about its size."""


def _check_member(member: IO[bytes], name: str, size: int) -> None:
    """Refuse a ``.npy`` member whose header claims more bytes than the member holds, before
    NumPy allocates them: a header of shape ``(10**11, 3)`` was a ``MemoryError``."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise MalformedMessage(f"{name}: .npy format {version} is not read here")
    need = math.prod(shape) * dtype.itemsize
    if need > size:
        raise MalformedMessage(
            f"{name}: its header claims shape {shape} of {dtype} ({need} bytes); it holds {size}"
        )


def decode_shard(data: bytes) -> Shard:
    """Parse shard bytes; raises :class:`MalformedMessage` or :class:`InvalidArray` when wrong.

    A member's header is checked against the member's size before anything is allocated, so a
    forged shape costs nothing."""
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for info in archive.infolist():
                    if info.file_size > _MAX_INFLATION * info.compress_size + 1024:
                        raise MalformedMessage(
                            f"{info.filename}: claims {info.file_size} bytes from "
                            f"{info.compress_size}, more than deflate can expand to"
                        )
                    with archive.open(info) as member:
                        _check_member(member, info.filename, info.file_size)
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise MalformedMessage("not a shard archive: a bare .npy array, not an .npz")
        with loaded as archive:
            names = sorted(archive.files)
            if names != ["x", "y"]:
                raise MalformedMessage(f"a shard holds exactly arrays x and y, found {names}")
            x, y = archive["x"], archive["y"]
    # zipfile refuses unsupported or encrypted members with NotImplementedError / RuntimeError;
    # NumPy's header parser can raise tokenize.TokenError and SyntaxError on a mangled header.
    except (
        OSError,
        ValueError,
        zipfile.BadZipFile,
        EOFError,
        zlib.error,
        NotImplementedError,
        RuntimeError,
        tokenize.TokenError,
        SyntaxError,
    ) as exc:
        if isinstance(exc, MalformedMessage):
            raise
        raise MalformedMessage(f"not a shard archive: {exc}") from exc
    return Shard(x=x, y=y)
