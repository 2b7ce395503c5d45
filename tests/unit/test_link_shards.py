"""Shard files: round trip, and clear errors for missing or corrupt files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from link import LinkError, ShardError, read_shard, write_shard
from protocol import ProtocolError, Shard, encode_shard


def shard(n: int = 6) -> Shard:
    x = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    return Shard(x=x, y=np.arange(n, dtype=np.int64) % 3)


def test_round_trip_and_digest(tmp_path: Path) -> None:
    path = tmp_path / "agent-000.npz"
    original = shard()
    digest = write_shard(path, original)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = read_shard(path)
    np.testing.assert_array_equal(loaded.x, original.x)
    np.testing.assert_array_equal(loaded.y, original.y)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="no such shard file") as caught:
        read_shard(tmp_path / "missing.npz")
    assert isinstance(caught.value.__cause__, FileNotFoundError)
    assert isinstance(caught.value, LinkError)


@pytest.mark.parametrize(
    "content",
    [b"not a zip archive", encode_shard(shard())[:-30], b""],
    ids=["garbage", "truncated", "empty"],
)
def test_a_corrupt_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(ShardError, match="not a valid shard") as caught:
        read_shard(path)
    assert isinstance(caught.value.__cause__, ProtocolError)


def test_a_directory_is_not_a_shard(tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="cannot be read"):
        read_shard(tmp_path)
