"""dynaSpark's controller in the cluster simulator, against static maximum, static minimum and
Spark's dynamic allocation, on a synthetic four-stage profile (until ``bench/dynaspark.py``
records real profiles): 16 and 64 cores, deadlines of 1.3, 2 and 3 × the shortest time plus
the executors' 5 s start, three seeds each. Writes ``bench/results/dynaspark_sim.json``; the
figures are in ``docs/dynaspark.md``. Seconds to run.

    .venv/bin/python bench/dynaspark_sim.py
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
# Python puts bench/ first on sys.path, where bench/protocol.py would shadow the protocol package.
sys.path[:] = [str(ROOT.parent), *[p for p in sys.path if Path(p or os.curdir).resolve() != ROOT]]

from cloud.dynaspark import (  # noqa: E402
    ControlSettings,
    DeadlinePolicy,
    DynamicAllocationPolicy,
    JobController,
    JobProfile,
    Policy,
    SimSettings,
    StageProfile,
    StaticPolicy,
    simulate,
)

STAGES = [("read#0", 64, 64.0), ("agg#0", 200, 300.0), ("join#0", 16, 80.0), ("write#0", 32, 20.0)]
PROFILE = JobProfile(script="synthetic", cores=16, wall_s=0.0, stages=tuple(
    StageProfile(key=k, name=k, tasks=t, duration_s=0.0, task_s=w, task_cv=0.3)
    for k, t, w in STAGES
))  # fmt: skip
START_S = 5.0


def contenders(cores: int, deadline: float) -> list[Policy]:
    return [
        DeadlinePolicy(JobController(PROFILE, deadline, ControlSettings(max_cores=cores))),
        StaticPolicy(cores, name="static-max"),
        StaticPolicy(max(1, cores // 8), name="static-min"),
        DynamicAllocationPolicy(min_cores=1, max_cores=cores, initial_cores=1),
    ]


def main() -> None:
    rows: list[dict[str, Any]] = []
    for cores in (16, 64):
        shortest = PROFILE.shortest_s(cores)
        for label, factor in (("tight", 1.3), ("medium", 2.0), ("loose", 3.0)):
            deadline = shortest * factor + START_S
            for seed in (0, 1, 2):
                settings = SimSettings(max_cores=cores, executor_start_s=START_S, seed=seed)
                results = {
                    p.name: simulate(PROFILE, p, settings) for p in contenders(cores, deadline)
                }
                full = results["static-max"].core_seconds
                for name, r in results.items():
                    rows.append({
                        "cores": cores, "deadline": label, "deadline_s": round(deadline, 2),
                        "seed": seed, "contender": name, "finish_s": round(r.finish_s, 2),
                        "met": r.finished and r.finish_s <= deadline,
                        "deadline_error_pct": round(100 * (r.finish_s - deadline) / deadline, 2),
                        "core_seconds": round(r.core_seconds, 1),
                        "saving_vs_static_max": round(1 - r.core_seconds / full, 3),
                    })  # fmt: skip
    out = ROOT / "results" / "dynaspark_sim.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "dynaspark_sim", "profile": PROFILE.to_json(),
                               "executor_start_s": START_S, "runs": rows}, indent=1) + "\n")  # fmt: skip
    for row in rows:
        if row["contender"] in ("dynaspark", "dynamic-allocation"):
            print(f"{row['cores']:3d} cores {row['deadline']:6s} seed {row['seed']} "
                  f"{row['contender']:18s} met {row['met']!s:5s} error {row['deadline_error_pct']:6.1f}% "
                  f"saving {row['saving_vs_static_max']:6.1%}")  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
