"""Atomic file writes: a reader sees the old file or the new one, never half of either.

The data goes to a temporary file in the target's own directory (so the rename never crosses a
file system), is flushed and fsynced, and then replaces the target with :func:`os.replace`. A
crash or an error at any point leaves the old file (or none) and no temporary behind, except
after a power loss between write and rename, where a ``.<name>.*.tmp`` file may remain.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(stream)`` on a temporary file and move it into place at ``path``.

    For writers that stream (``np.savez``, ``zipfile``). Raises ``OSError`` when the directory
    cannot be written; whatever ``write`` raises propagates, with the old file left intact.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; return its sha256 (hex). ``OSError`` on failure."""
    atomic_write(path, lambda stream: stream.write(data))
    return hashlib.sha256(data).hexdigest()


def atomic_write_text(path: Path, text: str, *, encoding: str = "utf-8") -> str:
    """Write ``text`` to ``path`` atomically; return the sha256 (hex) of its encoded bytes."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: Path, value: Any, *, indent: int | None = 2) -> str:
    """Write ``value`` as JSON (with a final newline) atomically; return the sha256 (hex).

    Raises ``TypeError``/``ValueError`` for values JSON cannot hold, before touching the file.
    """
    return atomic_write_text(path, json.dumps(value, indent=indent) + "\n")


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable where the platform allows opening a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the rename is still atomic
    finally:
        os.close(fd)
