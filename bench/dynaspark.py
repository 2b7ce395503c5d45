"""dynaSpark's benchmark: the deadline controller against static maximum, static minimum and
Spark's own dynamic allocation, side by side in one run, three deadlines per job.

(a) Real runs on ``local-cluster[2,1,1024]`` here, both benchmark jobs (``bench/spark_jobs/
agg_events.py``, aggregation-heavy; ``join_skew.py``, join- and shuffle-heavy). Each job is
profiled once (``hyperfleet spark profile``: every core); its deadlines are multiples of the
profiled run's time on every core plus the executors' start (``LEAD_S``), the same for every
contender. Every contender runs through the same harness, :func:`cloud.dynaspark.runner.run`, in
a fresh process (its own JVM and local cluster), timed from the script's start to its end, with
core-seconds the integral of the executors' cores read from Spark's REST API every second:

- ``dynaspark``: the runner with deadline control (executor totals);
- ``static-max``: every executor, fixed (control off);
- ``static-min``: one executor, fixed (``spark.cores.max`` = one executor's cores);
- ``dynamic-allocation``: Spark's own (``spark.dynamicAllocation.enabled=true`` with shuffle
  tracking, its default timeouts, ``maxExecutors`` = the cluster's).

(b) The simulator (:func:`cloud.dynaspark.simulate`) on the profiles those runs recorded, at 16
and 64 cores (executors of 2 and 4 cores; the input grown with the cluster: every stage of more
than one task gets cores/2 times its tasks), with the same contenders' policies and deadlines
defined the same way (from the simulated shortest time), three seeds.

(c) The real runs on a 16-core device machine (``local-cluster[8,2,...]``): ``--master``; not run
unless one is lent.

Reported per run: deadline met, deadline error (% of the deadline, + late), core-seconds, and
the saving against static maximum (computed only where both met the deadline). Writes
``bench/results/dynaspark.json`` (everything, timelines included) and ``dynaspark.png``.

    .venv/bin/python bench/dynaspark.py            # full: both jobs, 3 deadlines, 4 contenders
    .venv/bin/python bench/dynaspark.py --quick    # smaller inputs, the static contenders once
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
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

log = logging.getLogger("bench.dynaspark")

MASTER = "local-cluster[2,1,1024]"
LEAD_S = 10.0
"""Seconds an executor takes to start, added to every deadline and the controller's ``lead_s``
(measured here: ~10 s under load, where the runner's default of 5 s is an idle machine's)."""
FACTORS = (("tight", 1.25), ("medium", 1.6), ("loose", 2.2))
"""Deadline = factor × the profiled time on every core + ``LEAD_S``."""
CONTENDERS = ("dynaspark", "static-max", "static-min", "dynamic-allocation")
SIM_ONLY = ("dynaspark-per-stage",)
JOBS = {
    # job: (script, full-size args, --quick args): 30-60 s on every core of this shared machine
    "agg_events": ("agg_events.py", ["--rows", "300000", "--users", "50000"],
                   ["--rows", "150000", "--users", "30000"]),
    "join_skew": ("join_skew.py", ["--rows", "200000", "--customers", "80000"],
                  ["--rows", "100000", "--customers", "50000"]),
}  # fmt: skip
SIM_CORES = ((16, 2), (64, 4))
"""(cluster cores, cores per executor) of the simulated clusters."""
SIM_SEEDS = (0, 1, 2)
ERROR_TARGET_PCT = 5.0
SAVING_TARGET = 0.25
ERROR_CLIP = 100.0
"""The figure's deadline-error axis stops here (the value is written on a clipped bar)."""


def _python() -> str:
    return sys.executable


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env["PYTHONPATH"] = str(ROOT.parent)
    return env


# --- one contender's run, in its own process -----------------------------------------------


def contender_conf(contender: str, master: str) -> dict[str, str]:
    """The Spark settings that make ``contender`` on ``master`` (all contenders: the same
    master, the same job, the same harness)."""
    from cloud.dynaspark.runner import cluster_cores

    total, per = cluster_cores(master)
    if contender == "static-min":
        return {"spark.cores.max": str(per)}
    if contender == "dynamic-allocation":
        return {
            "spark.dynamicAllocation.enabled": "true",
            "spark.dynamicAllocation.shuffleTracking.enabled": "true",
            "spark.dynamicAllocation.maxExecutors": str(total // per),
        }
    return {}


def start_cores(contender: str, master: str) -> int:
    """Cores awaited before the script starts: the static contenders' executors (and every
    one for dynaSpark, as ``hyperfleet spark run`` does); none for dynamic allocation, which
    starts its own."""
    from cloud.dynaspark.runner import cluster_cores

    total, per = cluster_cores(master)
    return {"static-min": per, "dynamic-allocation": 0}.get(contender, total)


def one(args: argparse.Namespace, script_args: Sequence[str]) -> int:
    """``--one``: profile the job, or run it as one contender, and write the JSON."""
    from cloud.dynaspark.profiler import profile_script
    from cloud.dynaspark.runner import RunSettings, prepare, run

    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    if args.one == "profile":
        profile = profile_script(args.script, script_args, master=args.master)
        out.write_text(json.dumps(profile.to_json()))
        return 0
    conf = contender_conf(args.one, args.master)
    settings = RunSettings(deadline_s=args.deadline, master=args.master, conf=conf,
                           control=args.one == "dynaspark", lead_s=LEAD_S, level="job")  # fmt: skip
    prepared = prepare(args.script, settings, profile_path=Path(args.profile))
    report = run(prepared, script_args, start_cores=start_cores(args.one, args.master))
    out.write_text(json.dumps(report.to_json()))
    return 0


def spawn(kind: str, job: Path, script_args: Sequence[str], out: Path, *, master: str,
          deadline: float = 1.0, profile: Path | None = None, timeout_s: float = 900) -> float:  # fmt: skip
    """Run ``--one kind`` in a fresh process; returns its wall seconds. Raises
    ``RuntimeError`` with its stderr's tail when it fails."""
    cmd = [_python(), str(Path(__file__).resolve()), "--one", kind, "--script", str(job),
           "--master", master, "--deadline", str(deadline), "--out", str(out)]  # fmt: skip
    if profile is not None:
        cmd += ["--profile", str(profile)]
    t0 = time.monotonic()
    proc = subprocess.run([*cmd, "--", *script_args], env=_env(), capture_output=True,
                          text=True, timeout=timeout_s)  # fmt: skip
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"{kind} on {job.name} failed ({proc.returncode}): "
                           f"{proc.stderr[-2000:]}")  # fmt: skip
    return time.monotonic() - t0


# --- scoring -----------------------------------------------------------------------------


def score(rows: list[dict[str, Any]]) -> None:
    """Adds ``saving_vs_static_max`` to each row: ``1 − core-s / static max's core-s`` of the
    same setting (job or profile, cores, deadline, seed), only where both met the deadline
    (``None`` otherwise)."""

    def group(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["part"], r["job"], r["cores"], r["deadline"], r.get("seed", 0))

    best = {group(r): r for r in rows if r["contender"] == "static-max"}
    for r in rows:
        ref = best.get(group(r))
        ok = ref is not None and r["met"] and ref["met"] and ref["core_seconds"] > 0
        r["saving_vs_static_max"] = (round(1 - r["core_seconds"] / ref["core_seconds"], 3)
                                     if ok and ref is not None else None)  # fmt: skip


def at_minimum(row: dict[str, Any], floor: int) -> bool:
    """A real run whose controller asked for no more than ``floor`` cores (one executor)
    throughout: finishing early is then not the controller's error (it cannot go lower)."""
    timeline = row.get("timeline") or []
    asked = [s[2] for s in timeline if s[2] is not None]
    return bool(asked) and max(asked) <= floor


def targets(rows: list[dict[str, Any]], floor: int = 1) -> dict[str, Any]:
    """The issue's targets, per part (real, sim-16, sim-64): dynaSpark met every feasible
    deadline with |error| ≤ 5 %; ≥ 25 % fewer core-seconds than static maximum at medium and
    loose deadlines (mean over the runs where both met); fewer misses than dynamic
    allocation. Also: the runs static maximum met (the deadlines feasible in practice), and
    dynaSpark's runs met within 5 % *or* early on one executor throughout (``floor`` cores of
    the real cluster: :func:`at_minimum`)."""
    out: dict[str, Any] = {}
    for part in sorted({(r["part"], r["cores"]) for r in rows}):
        mine = [r for r in rows if (r["part"], r["cores"]) == part]
        dyn = [r for r in mine if r["contender"] == "dynaspark" and r.get("feasible", True)]
        da = [r for r in mine if r["contender"] == "dynamic-allocation"]
        savings = [r["saving_vs_static_max"] for r in dyn
                   if r["deadline"] in ("medium", "loose") and r["saving_vs_static_max"] is not None]  # fmt: skip
        within = [r for r in dyn if r["met"] and abs(r["deadline_error_pct"]) <= ERROR_TARGET_PCT]
        floor_bound = [r for r in dyn if r["met"] and r not in within and at_minimum(r, floor)]
        static_max_met = sum(r["met"] for r in mine if r["contender"] == "static-max")
        misses = sum(not r["met"] for r in dyn)
        da_misses = sum(not r["met"] for r in da)
        mean_saving = sum(savings) / len(savings) if savings else None
        out[f"{part[0]}-{part[1]}"] = {
            "runs": len(dyn), "met": len(dyn) - misses,
            "met_within_5pct": len(within),
            "all_met_within_5pct": bool(dyn) and len(within) == len(dyn),
            "met_early_on_one_executor": len(floor_bound),
            "static_max_met": static_max_met,
            "mean_saving_medium_loose": None if mean_saving is None else round(mean_saving, 3),
            "saving_target_met": mean_saving is not None and mean_saving >= SAVING_TARGET,
            "misses": misses, "dynamic_allocation_misses": da_misses,
            "fewer_misses_than_dynamic_allocation": misses < da_misses,
            "no_more_misses_than_dynamic_allocation": misses <= da_misses,
        }  # fmt: skip
    return out


# --- (a) real runs -----------------------------------------------------------------------


def real_row(job: str, contender: str, label: str, deadline: float, seed: int,
             report: dict[str, Any], wall_s: float) -> dict[str, Any]:  # fmt: skip
    finish = float(report["finish_s"])
    return {
        "part": "real", "job": job, "cores": report["max_cores"], "contender": contender,
        "deadline": label, "deadline_s": round(deadline, 2), "seed": seed,
        "finish_s": round(finish, 2), "met": finish <= deadline,
        "deadline_error_pct": round(100 * (finish - deadline) / deadline, 2),
        "core_seconds": round(float(report["core_seconds"]), 1),
        "actuations": report["actuations"], "feasible": report["feasible"] is not False,
        "process_wall_s": round(wall_s, 1), "load_after": round(os.getloadavg()[0], 2),
        "timeline": [[round(s["t_s"], 2), s["cores_observed"], s["cores_asked"],
                      None if s["job_progress"] is None else round(s["job_progress"], 3)]
                     for s in report["timeline"]],
        "stages": [{k: s[k] for k in ("key", "tasks", "started_s", "completed_s",
                                      "planned_deadline_s", "planned_cores", "cores_observed")}
                   for s in report["stages"]],
    }  # fmt: skip


def real_part(jobs_dir: Path, work: Path, *, quick: bool, seeds: int, master: str,
              only: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    rows: list[dict[str, Any]] = []
    profiles: dict[str, Any] = {}
    for job, (script, full, small) in JOBS.items():
        if only and job not in only:
            continue
        path = jobs_dir / script
        if not path.is_file():
            raise SystemExit(f"{path}: no such job (--jobs-dir)")
        args = small if quick else full
        prof_path = work / f"{job}.profile.json"
        load = os.getloadavg()[0]
        wall = spawn("profile", path, args, prof_path, master=master)
        profile = JobProfile.loads(prof_path.read_text())
        base = profile.wall_s
        deadlines = {label: f * base + LEAD_S for label, f in FACTORS}
        profiles[job] = {"args": args, "profile": profile.to_json(), "base_s": round(base, 2),
                         "deadlines_s": {k: round(v, 2) for k, v in deadlines.items()},
                         "load_before": round(load, 2), "process_wall_s": round(wall, 1)}  # fmt: skip
        log.info("%s profiled: %.1fs on every core; deadlines %s", job, base,
                 {k: round(v, 1) for k, v in deadlines.items()})  # fmt: skip
        # The static contenders and dynamic allocation ignore the deadline: in --quick they
        # run once per seed and are scored against every deadline; otherwise once per deadline.
        for seed in range(seeds):
            cache: dict[str, tuple[dict[str, Any], float]] = {}
            for label, deadline in deadlines.items():
                for contender in CONTENDERS:
                    reused = quick and contender != "dynaspark" and contender in cache
                    if reused:
                        report, w = cache[contender]
                    else:
                        out = work / f"{job}.{contender}.{label}.{seed}.json"
                        w = spawn(contender, path, args, out, master=master, deadline=deadline,
                                  profile=prof_path)  # fmt: skip
                        report = json.loads(out.read_text())
                        cache[contender] = (report, w)
                    row = real_row(job, contender, label, deadline, seed, report, w)
                    row["reused"] = reused
                    rows.append(row)
                    log.info("%s %-6s %-18s finish %6.1fs / %6.1fs %s, %6.1f core-s", job,
                             label, contender, row["finish_s"], deadline,
                             "met " if row["met"] else "MISS", row["core_seconds"])  # fmt: skip
    return rows, profiles


# --- (b) the simulator -------------------------------------------------------------------


def grown(profile: JobProfile, factor: int) -> JobProfile:
    """The profile with ``factor`` times the tasks (and work) in every stage of more than one
    task: the same job on ``factor`` times the input (final single-task stages stay single)."""
    stages = tuple(
        StageProfile(key=s.key, name=s.name, tasks=s.tasks * (factor if s.tasks > 1 else 1),
                     duration_s=s.duration_s,
                     task_s=s.task_s * (factor if s.tasks > 1 else 1), task_cv=s.task_cv)
        for s in profile.stages if s.task_s > 0
    )  # fmt: skip
    return JobProfile(script=profile.script, cores=profile.cores, wall_s=profile.wall_s,
                      stages=stages)  # fmt: skip


def sim_contenders(profile: JobProfile, cores: int, per: int, deadline: float) -> list[Policy]:
    """The real runs' contenders, and dynaSpark's per-stage controller (the paper's) beside
    its per-job one (the runner's default), in the simulator only."""
    settings = ControlSettings(max_cores=cores, min_cores=per, quantum=per, lead_s=LEAD_S,
                               level="job")  # fmt: skip
    per_stage = ControlSettings(max_cores=cores, min_cores=per, quantum=per, lead_s=LEAD_S,
                                level="stage")  # fmt: skip
    return [
        DeadlinePolicy(JobController(profile, deadline, settings)),
        DeadlinePolicy(JobController(profile, deadline, per_stage), name="dynaspark-per-stage"),
        StaticPolicy(cores, name="static-max"),
        StaticPolicy(per, name="static-min"),
        DynamicAllocationPolicy(min_cores=per, max_cores=cores, initial_cores=per,
                                cores_per_executor=per),
    ]  # fmt: skip


def sim_part(profiles: dict[str, JobProfile]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for job, recorded in profiles.items():
        for cores, per in SIM_CORES:
            profile = grown(recorded, cores // recorded.cores)
            shortest = profile.shortest_s(cores)
            for label, factor in FACTORS:
                deadline = factor * shortest + LEAD_S
                for seed in SIM_SEEDS:
                    settings = SimSettings(max_cores=cores, cores_per_executor=per,
                                           executor_start_s=LEAD_S, seed=seed)  # fmt: skip
                    for policy in sim_contenders(profile, cores, per, deadline):
                        r = simulate(profile, policy, settings)
                        rows.append({
                            "part": "sim", "job": job, "cores": cores, "contender": r.policy,
                            "deadline": label, "deadline_s": round(deadline, 2), "seed": seed,
                            "finish_s": round(r.finish_s, 2),
                            "met": r.finished and r.finish_s <= deadline,
                            "deadline_error_pct": round(100 * (r.finish_s - deadline) / deadline, 2),
                            "core_seconds": round(r.core_seconds, 1), "feasible": True,
                        })  # fmt: skip
    return rows


# --- output ------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: per setting and contender, met (of runs), mean error, mean core-s,
    mean saving vs static max."""
    keys: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        keys.setdefault(
            (r["part"], r["job"], r["cores"], r["deadline"], r["contender"]), []
        ).append(r)
    order = {label: i for i, (label, _) in enumerate(FACTORS)}
    lines = ["| part | job | cores | deadline | contender | met | error % (mean) | core-s (mean) "
             "| saving vs static max (mean, where both met) |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for k in sorted(keys, key=lambda k: (k[0] != "real", k[1], k[2], order[k[3]],
                                         (*CONTENDERS, *SIM_ONLY).index(k[4]))):  # fmt: skip
        rs = keys[k]
        sv = [r["saving_vs_static_max"] for r in rs if r["saving_vs_static_max"] is not None]
        lines.append(
            f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} {rs[0]['deadline_s']:.1f} s | {k[4]} | "
            f"{sum(r['met'] for r in rs)}/{len(rs)} | "
            f"{sum(r['deadline_error_pct'] for r in rs) / len(rs):+.1f} | "
            f"{sum(r['core_seconds'] for r in rs) / len(rs):.0f} | "
            + (f"{sum(sv) / len(sv):.0%} |" if sv else "– |")
        )  # fmt: skip
    return lines


def figure(rows: list[dict[str, Any]], path: Path) -> None:
    """Per setting (real or simulated job and cores), core-seconds (top; hatched and ✗: runs
    that missed) and deadline error (bottom; + late) per contender and deadline."""
    from matplotlib.figure import Figure

    settings = sorted({(r["part"], r["job"], r["cores"]) for r in rows},
                      key=lambda s: (s[0] != "real", s[1], s[2]))  # fmt: skip
    names = (*CONTENDERS, *SIM_ONLY)
    colours = dict(zip(names, ("tab:blue", "tab:red", "tab:green", "tab:orange", "tab:purple"),
                       strict=True))  # fmt: skip
    width = 0.16
    cols = 3
    blocks = math.ceil(len(settings) / cols)
    fig = Figure(figsize=(5 * cols, 6.4 * blocks), layout="constrained")
    axes = fig.subplots(2 * blocks, cols, squeeze=False)
    for n, (part, job, cores) in enumerate(settings):
        top, bottom = axes[2 * (n // cols), n % cols], axes[2 * (n // cols) + 1, n % cols]
        for j, (label, _) in enumerate(FACTORS):
            for i, c in enumerate(names):
                rs = [r for r in rows if (r["part"], r["job"], r["cores"], r["deadline"],
                                          r["contender"]) == (part, job, cores, label, c)]  # fmt: skip
                if not rs:
                    continue
                x = j + (i - 2) * width
                mean = sum(r["core_seconds"] for r in rs) / len(rs)
                missed = sum(not r["met"] for r in rs)
                top.bar(x, mean, width=width, color=colours[c], hatch="//" if missed else None,
                        edgecolor="black" if missed else None, label=c if j == 0 else None)  # fmt: skip
                if missed:
                    top.text(x, mean, f"{missed}✗", ha="center", va="bottom", fontsize=7)
                err = sum(r["deadline_error_pct"] for r in rs) / len(rs)
                bottom.bar(x, max(-ERROR_CLIP, min(ERROR_CLIP, err)), width=width,
                           color=colours[c])  # fmt: skip
                if abs(err) > ERROR_CLIP:  # static minimum on 16 or 64 cores: far off the axis
                    bottom.text(x, math.copysign(ERROR_CLIP, err), f"{err:+.0f}", ha="center",
                                va="bottom" if err > 0 else "top", fontsize=6, rotation=90)  # fmt: skip
        where = "real local-cluster" if part == "real" else "simulator"
        top.set_title(f"{where}: {job}, {cores} cores", fontsize=9)
        top.set_ylabel("core-seconds")
        bottom.set_ylabel("deadline error % (+ late)")
        bottom.axhline(0, color="black", linewidth=0.8)
        bottom.set_ylim(-ERROR_CLIP * 1.3, ERROR_CLIP * 1.3)
        bottom.axhspan(-ERROR_TARGET_PCT, ERROR_TARGET_PCT, color="grey", alpha=0.2)
        for ax in (top, bottom):
            ax.set_xticks(range(len(FACTORS)), [label for label, _ in FACTORS])
        if n == 0 or (part == "sim" and settings[n - 1][0] == "real"):
            top.legend(fontsize=7)
    for ax in list(axes.flat):
        if not ax.has_data():
            ax.axis("off")
    fig.suptitle("dynaSpark vs static max / static min / dynamic allocation: core-seconds "
                 "(hatched, ✗: missed in that many runs) and deadline error (grey: ±5 %)")  # fmt: skip
    fig.savefig(path, dpi=80)


def _floor(master: str) -> int:
    from cloud.dynaspark.runner import cluster_cores

    return cluster_cores(master)[1]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    script_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, script_args = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="smaller inputs; the deadline-blind contenders run once per job")  # fmt: skip
    p.add_argument("--seeds", type=int, default=1, help="real runs per contender and deadline")
    p.add_argument("--jobs-dir", type=Path, default=ROOT / "spark_jobs")
    p.add_argument("--job", action="append", default=[], help="only these jobs (repeatable)")
    p.add_argument("--master", default=MASTER)
    p.add_argument("--sim-only", type=Path, default=None,
                   help="keep the real runs of this results JSON, re-run the simulator on its "
                   "profiles, rewrite the JSON and figure")  # fmt: skip
    p.add_argument("--out", type=Path, default=ROOT / "results" / "dynaspark.json")
    p.add_argument("--work", type=Path, default=None, help="where the runs' files go")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--script", default=None, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--profile", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one is not None:
        return one(args, script_args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    started = time.time()
    load_before = os.getloadavg()
    old: dict[str, Any] = {}
    if args.sim_only is not None:
        old = json.loads(args.sim_only.read_text())
        rows = [r for r in old["runs"] if r["part"] == "real"]
        profiles_doc = old["profiles"]
    else:
        work = args.work or Path(tempfile.mkdtemp(prefix="dynaspark-bench-"))
        work.mkdir(parents=True, exist_ok=True)
        rows, profiles_doc = real_part(args.jobs_dir, work, quick=args.quick, seeds=args.seeds,
                                       master=args.master, only=args.job)  # fmt: skip
    recorded = {job: JobProfile.from_json(d["profile"]) for job, d in profiles_doc.items()}
    rows += sim_part(recorded)
    score(rows)
    doc = {
        "benchmark": "dynaspark", "quick": args.quick, "master": args.master,
        "lead_s": LEAD_S, "factors": dict(FACTORS), "contenders": list(CONTENDERS),
        "sim_cores": [list(c) for c in SIM_CORES], "sim_seeds": list(SIM_SEEDS),
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
        "command": " ".join(["bench/dynaspark.py", *argv]),
        "profiles": profiles_doc, "targets": targets(rows, floor=_floor(args.master)), "runs": rows,
    }  # fmt: skip
    if old:  # the real runs' circumstances are the old run's; the simulator's are now
        doc.update({k: old[k] for k in ("quick", "master", "started", "seconds", "load_before",
                                         "load_after", "command") if k in old})  # fmt: skip
        doc["resimulated"] = time.strftime("%Y-%m-%d %H:%M:%S")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    figure(rows, args.out.with_suffix(".png"))
    print("\n".join(table(rows)))
    print(json.dumps(doc["targets"], indent=1))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
