"""The README's commands as a user types them: from a clone as the working directory, with the
default ``--out`` (a relative path), never an absolute temporary one.

Every other demo test passes ``--out`` as an absolute path, which hid issue 12: the relative
default reached the broker, whose own working directory is the logs folder, and pointed nowhere.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

_ROUND_LINE = re.compile(r"^round +(\d+) ", re.MULTILINE)


def _hyperfleet(clone: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    # The clone's packages, not the checkout's, are the ones that run.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(clone)}
    return subprocess.run(
        [sys.executable, "-m", "hyperfleet", *args],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_demo_with_its_default_out_runs_from_a_clone(clone: Path, mosquitto_binary: str) -> None:
    """``hyperfleet demo`` with no ``--out``, as ``make demo`` runs it, from the clone's root."""
    proc = _hyperfleet(
        clone,
        "demo",
        "--fleet",
        "small-4",
        "--target-accuracy",
        "0.6",
        "--time-budget",
        "120",
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = clone / "results" / "demo"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reached"] is True
    assert summary["agents"] == 4
    assert (out / "accuracy.png").is_file()
    assert (out / "logs" / "mosquitto.conf").is_file()
    assert Path(summary["model"]["keras"]).is_absolute()
    assert Path(summary["model"]["keras"]).is_file()
    # Each round is printed once, however many times its state reaches the follower.
    rounds = [int(n) for n in _ROUND_LINE.findall(proc.stdout)]
    assert rounds, proc.stdout[-2000:]
    assert len(rounds) == len(set(rounds)), proc.stdout[-3000:]
    assert rounds == sorted(rounds)
    assert rounds[-1] == summary["rounds"]
