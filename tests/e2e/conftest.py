"""Fixtures of the end-to-end tests: a fresh copy of the repository, as a clone holds it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _tracked_files() -> list[str]:
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist, say)
        return []
    return [name for name in listing.decode().split("\0") if name]


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A copy of the repository's files (those git does not ignore), as a fresh clone holds them."""
    dest = tmp_path / "clone"
    files = _tracked_files()
    if not files:
        shutil.copytree(
            REPO,
            dest,
            ignore=shutil.ignore_patterns(".git", ".venv", "results", "__pycache__", "*_cache"),
        )
        return dest
    for name in files:
        src = REPO / name
        if src.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest
