"""``hyperfleet spark run`` on a real ``local-cluster[2,1,1024]``: a job profiled, then run under
a loose deadline with the controller beside it (the report's figures agree with each other and
with its timeline, executors were really released, the live stages got the profile's keys);
the same job on ``local[1]``, run plainly and saying so. No timing is asserted: whether the
deadline is met depends on the machine's load, and the exit status must say which it was."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from cloud.dynaspark import JobProfile, Sample
from hyperfleet.cli import main

JOB = Path(__file__).parent / "jobs" / "stages.py"
CLUSTER = "local-cluster[2,1,1024]"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The job profiled once on the cluster, by the CLI, as a user would."""
    out = tmp_path_factory.mktemp("profile") / "stages.profile.json"
    assert main(["spark", "profile", str(JOB), "--master", CLUSTER, "--out", str(out)]) == 0
    return out


def run(tmp_path: Path, profile: Path, *flags: str) -> tuple[int, dict[str, Any], Path]:
    out, png = tmp_path / "run.json", tmp_path / "run.png"
    status = main(["spark", "run", str(JOB), "--profile", str(profile), "--out", str(out),
                   "--png", str(png), "--no-progress", *flags])  # fmt: skip
    return status, json.loads(out.read_text()), png


def integral(timeline: list[dict[str, Any]], end: float) -> float:
    """Observed cores held from each sample to the next (the first from 0), to ``end``."""
    total = 0.0
    for i, s in enumerate(timeline):
        lo = 0.0 if i == 0 else s["t_s"]
        hi = timeline[i + 1]["t_s"] if i + 1 < len(timeline) else end
        total += s["cores_observed"] * max(0.0, min(hi, end) - lo)
    return total


def test_a_profiled_job_runs_under_its_deadline_with_executors_controlled(
    profile: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prof = JobProfile.loads(profile.read_text())
    deadline = 2 * prof.wall_s + 10  # loose: every stage is planned on one core
    status, doc, png = run(tmp_path, profile, "--master", CLUSTER, "--deadline", f"{deadline}")
    printed = capsys.readouterr().out
    assert f"deadline {deadline:.1f}s on {CLUSTER}" in printed  # the plan, up front
    assert "core-seconds" in printed

    assert doc["control"] is True
    assert doc["feasible"] is True
    assert doc["met"] == (doc["finish_s"] <= deadline)
    assert status == (0 if doc["met"] else 2)
    assert doc["deadline_error_pct"] == pytest.approx(100 * (doc["finish_s"] - deadline) / deadline)
    # The live stages got the profile's keys, repeated call site included (#0, #1), in order.
    assert [s["key"] for s in doc["stages"]] == [s.key for s in prof.stages]
    assert doc["unknown_stages"] == []
    assert doc["rekeyed"] == []
    for stage in doc["stages"]:
        assert stage["in_profile"] is True
        assert 1 <= stage["planned_cores"] <= 2
        assert stage["planned_deadline_s"] <= deadline
        assert 0 <= stage["started_s"] <= stage["completed_s"] <= doc["finish_s"]
        assert 1 <= stage["cores_observed"] <= 2
    # The control thread set executor totals, and Spark carried one out: an executor went.
    timeline = doc["timeline"]
    assert doc["actuations"] >= 1
    assert all(s["cores_asked"] in (1, 2) for s in timeline)
    assert all(s["cores_observed"] >= 1 for s in timeline)
    assert min(s["cores_observed"] for s in timeline) == 1
    assert timeline[-1]["t_s"] == pytest.approx(doc["finish_s"])
    assert timeline[-1]["job_progress"] == 1.0
    # Core-seconds are the integral of the observed cores over the run, within its bounds.
    assert doc["core_seconds"] == pytest.approx(integral(timeline, doc["finish_s"]))
    assert doc["finish_s"] <= doc["core_seconds"] <= 2 * doc["finish_s"] + 1e-6
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_on_local_masters_the_job_runs_plainly_and_says_so(
    profile: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="cloud.dynaspark.runner"):
        status, doc, png = run(tmp_path, profile, "--master", "local[1]", "--deadline", "120")
    err = capsys.readouterr().err
    assert "deadline control is unavailable on local[1]" in err
    assert "local-cluster" in err
    assert any(
        "unavailable" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
    )
    assert doc["control"] is False
    assert status == (0 if doc["met"] else 2)
    assert doc["actuations"] == 0
    assert all(s["cores_asked"] is None for s in doc["timeline"])
    assert all(s["cores_observed"] == 1 for s in doc["timeline"])  # the driver's one slot
    assert doc["core_seconds"] == pytest.approx(doc["finish_s"])
    assert len(doc["stages"]) == 4
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_an_error_in_the_control_thread_surfaces_when_the_script_ends(tmp_path: Path) -> None:
    from cloud.dynaspark import ControlError, RunSettings, prepare, run

    seen: list[float] = []

    def failing(sample: Sample) -> None:
        seen.append(sample.t_s)
        if len(seen) == 2:
            raise RuntimeError("sample sink broke")

    prepared = prepare(str(JOB), RunSettings(deadline_s=60, master="local[1]"),
                       profile_path=tmp_path / "absent.json")  # fmt: skip
    with pytest.raises(ControlError, match="sample sink broke") as exc:
        run(prepared, ["0.5"], on_sample=failing)
    assert isinstance(exc.value.__cause__, RuntimeError)
    assert len(seen) == 2  # control stopped at the error; the script still ran to its end
