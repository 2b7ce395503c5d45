"""The demo's first hop: raw data through the Spark preparation pipeline, under a deadline.

``hyperfleet demo`` writes scikit-learn's digits as raw pixel counts (CSV), then runs the
pipeline (:mod:`cloud.pipelines.spark_prepare`: cleaning, normalisation statistics, per-agent
Dirichlet shards and a holdout) with ``hyperfleet spark run --deadline``, which plans and
controls the executors so the job ends by the deadline with as few cores as it can. The run
needs a profile of the job: the first demo on a machine profiles it once (``hyperfleet spark
profile``) and keeps the profile beside the results for the next runs.

Without a Java runtime (Spark needs one) or with ``--data numpy`` the demo prepares the same
layout with NumPy (:func:`cloud.pipelines.prepare_federated`) and says why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud.pipelines import FederatedLayout, export_raw, load_digits, prepare_federated

from .errors import HyperfleetError

__all__ = ["DataPrep", "prepare_demo_data", "spark_available"]

PIPELINE = "cloud.pipelines.spark_prepare"
MASTER = "local-cluster[2,1,1024]"


@dataclass(frozen=True, slots=True, kw_only=True)
class DataPrep:
    """How the demo's data was prepared: the layout, and (Spark) the deadline run's figures."""

    layout: FederatedLayout
    normalization: Path | None
    report: dict[str, Any] = field(default_factory=dict)
    """``summary.json``'s ``preparation``: the path taken and, under Spark, deadline, finish
    time, whether it was met, the deadline error and core-seconds."""


def spark_available() -> str | None:
    """``None`` when Spark can run here, else why not (no ``java`` on PATH)."""
    if shutil.which("java") is None:
        return (
            "no Java runtime (Spark needs Java 17: make demo installs it as root, or "
            "sudo apt-get install openjdk-17-jre-headless)"
        )
    return None


def _layout(out: Path) -> FederatedLayout:
    manifest = json.loads((out / "manifest.json").read_text())
    shards = sorted((out / "shards").glob("agent-*.npz"))
    if len(shards) != int(manifest.get("agents", len(shards))):
        raise HyperfleetError(
            f"{out}: the manifest names {manifest.get('agents')} shards, found {len(shards)}"
        )
    return FederatedLayout(
        holdout=out / "holdout.npz", shards=shards, manifest=out / "manifest.json"
    )


def _hyperfleet(args: list[str], log: Path) -> int:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    with log.open("ab") as f:
        return subprocess.run(
            [sys.executable, "-m", "hyperfleet", *args], stdout=f, stderr=subprocess.STDOUT,
            env=env, check=False,
        ).returncode  # fmt: skip


def prepare_demo_data(
    out: Path,
    *,
    agents: int,
    alpha: float,
    seed: int,
    deadline_s: float,
    use_spark: bool,
    profile: Path,
    logs: Path,
) -> DataPrep:
    """Lay out the demo's data in ``out`` (``holdout.npz``, ``shards/``, ``manifest.json`` and,
    under Spark, ``normalization.json``). Raises :class:`~hyperfleet.errors.HyperfleetError` when the pipeline fails
    (its log named)."""
    why_not = None if use_spark else "--data numpy"
    if why_not is None:
        why_not = spark_available()
    if why_not is not None:
        print(f"preparing digits with NumPy for {agents} agents ({why_not})", flush=True)
        layout = prepare_federated(
            load_digits(), agents=agents, alpha=alpha, holdout=0.2, seed=seed, out_dir=out
        )
        return DataPrep(
            layout=layout, normalization=None, report={"engine": "numpy", "why": why_not}
        )
    raw = export_raw(out.parent / "raw", source="digits", formats=("csv",))["csv"]
    job_args = ["--input", str(raw), "--format", "csv", "--label", "label",
                "--agents", str(agents), "--partition", "dirichlet", "--alpha", str(alpha),
                "--holdout", "0.2", "--seed", str(seed)]  # fmt: skip
    log = logs / "spark.log"
    if not profile.is_file():
        print(f"profiling the preparation job once on {MASTER} (kept in {profile})", flush=True)
        scratch = out.parent / "profile-run"
        code = _hyperfleet(["spark", "profile", PIPELINE, "--master", MASTER, "--out",
                            str(profile), "--", *job_args, "--out", str(scratch)], log)  # fmt: skip
        shutil.rmtree(scratch, ignore_errors=True)
        if code != 0:
            raise HyperfleetError(f"profiling the preparation job failed (exit {code}); see {log}")
    print(f"preparing digits on Spark for {agents} agents (Dirichlet alpha {alpha}, 20% holdout) "
          f"by a deadline of {deadline_s:g} s", flush=True)  # fmt: skip
    run_json = out.parent / "prepare.run.json"
    t0 = time.monotonic()
    code = _hyperfleet(["spark", "run", PIPELINE, "--deadline", f"{deadline_s:g}", "--master",
                        MASTER, "--profile", str(profile), "--out", str(run_json), "--png",
                        str(out.parent / "prepare.run.png"), "--force", "--no-progress", "--",
                        *job_args, "--out", str(out)], log)  # fmt: skip
    if code not in (0, 2) or not run_json.is_file():
        raise HyperfleetError(f"the preparation job failed (exit {code}); see {log}")
    run = json.loads(run_json.read_text())
    report = {
        "engine": "spark",
        "master": run["master"],
        "deadline_s": run["deadline_s"],
        "finish_s": run["finish_s"],
        "met": run["met"],
        "deadline_error_pct": run["deadline_error_pct"],
        "core_seconds": run["core_seconds"],
        "max_cores": run["max_cores"],
        "wall_s": round(time.monotonic() - t0, 1),
        "report": str(run_json),
    }
    print(f"data ready: the job finished in {run['finish_s']:.1f} s against a deadline of "
          f"{run['deadline_s']:g} s ({'met' if run['met'] else 'MISSED'}), "
          f"{run['core_seconds']:.1f} core-seconds of up to {run['max_cores']} cores", flush=True)  # fmt: skip
    return DataPrep(layout=_layout(out), normalization=out / "normalization.json", report=report)
