"""Shard files: :class:`protocol.Shard` on disk, written atomically, read with clear errors."""

from __future__ import annotations

from pathlib import Path

from protocol import ProtocolError, Shard, decode_shard, encode_shard

from ._errors import ShardError
from ._files import atomic_write_bytes

__all__ = ["read_shard", "write_shard"]


def read_shard(path: Path) -> Shard:
    """Read the shard at ``path``.

    Raises :class:`ShardError` when the file is missing or unreadable (``__cause__`` is the
    ``OSError``) or holds no valid shard (``__cause__`` is the :class:`protocol.ProtocolError`).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ShardError(f"{path}: no such shard file") from exc
    except OSError as exc:
        raise ShardError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    try:
        return decode_shard(data)
    except ProtocolError as exc:
        raise ShardError(f"{path}: not a valid shard: {exc}") from exc


def write_shard(path: Path, shard: Shard) -> str:
    """Write ``shard`` to ``path`` atomically; return the file's sha256 (hex). ``OSError`` on
    failure, with any old file left intact."""
    return atomic_write_bytes(Path(path), encode_shard(shard))
