"""Atomic writes: the old file survives any failure, and no temporary is left behind."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import BinaryIO

import pytest

from link import atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text


def test_writes_and_replaces_returning_the_sha256(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    assert atomic_write_bytes(path, b"one") == hashlib.sha256(b"one").hexdigest()
    assert atomic_write_bytes(path, b"two") == hashlib.sha256(b"two").hexdigest()
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_text_and_json(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    digest = atomic_write_json(tmp_path / "m.json", {"b": [1, 2], "a": None})
    text = (tmp_path / "m.json").read_text()
    assert text.endswith("}\n")
    assert json.loads(text) == {"b": [1, 2], "a": None}
    assert digest == hashlib.sha256(text.encode()).hexdigest()


def test_a_crash_mid_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "state.npz"
    atomic_write_bytes(path, b"old contents")

    def half_then_crash(stream: BinaryIO) -> None:
        stream.write(b"new conte")
        raise KeyboardInterrupt  # even a BaseException mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_crash)
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.npz"]


def test_a_failed_rename_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.json"
    atomic_write_json(path, {"v": 1})

    def crash(src: object, dst: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="Input/output"):
        atomic_write_json(path, {"v": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_a_value_json_cannot_hold_never_touches_the_file(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    atomic_write_json(path, [1])
    with pytest.raises(TypeError):
        atomic_write_json(path, {"x": object()})
    assert json.loads(path.read_text()) == [1]


def test_a_missing_directory_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write_bytes(tmp_path / "no" / "such" / "dir.bin", b"x")
