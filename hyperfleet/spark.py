"""``hyperfleet spark profile``: run an unmodified PySpark script once and write what each
stage cost, for ``hyperfleet spark run`` to plan with; ``hyperfleet spark run``: run it under a
deadline with the fewest cores (docs/dynaspark.md)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from cloud.dynaspark import JobProfile
from cloud.dynaspark.profiler import profile_script
from cloud.dynaspark.report import RunReport, Sample, write_png
from cloud.dynaspark.runner import Prepared, RunSettings, prepare, run
from link import atomic_write_json

from .errors import UsageError
from .exits import EXIT_NOT_REACHED, EXIT_OK

__all__ = ["add_spark_parser", "run_spark", "split_script_args"]


def split_script_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """``spark ... -- ARGS``: what argparse parses, and the script's own arguments (after the
    first ``--``, untouched: argparse would read their options as ours)."""
    if argv[:1] == ["spark"] and "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def add_spark_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("spark", help="PySpark jobs by their deadlines (dynaSpark)")
    spark_sub = p.add_subparsers(dest="spark_command", required=True)
    q = spark_sub.add_parser(
        "profile",
        help="run a PySpark script once; write its stage profile",
        usage="hyperfleet spark profile TARGET [--master URL] [--conf K=V] [--out FILE] [-- ARGS]",
    )
    q.add_argument("target", help="the script (SCRIPT.py) or module to run, as spark-submit would")
    q.add_argument("--master", default="local-cluster[2,1,1024]",
                   help="Spark master (default local-cluster[2,1,1024])")  # fmt: skip
    q.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="a Spark setting for the session (repeatable)")  # fmt: skip
    q.add_argument("--out", type=Path, default=None,
                   help="profile file (default: TARGET's name + .profile.json)")  # fmt: skip
    q.add_argument("--log-level", default="WARNING")
    _add_run_parser(spark_sub)


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (argparse names the flag when it is not)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _add_run_parser(spark_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from .flags import absolute_path

    r = spark_sub.add_parser(
        "run",
        help="run a PySpark script under a deadline with the fewest cores",
        usage="hyperfleet spark run TARGET --deadline S [--master URL] [--profile FILE] "
        "[--conf K=V] [--period S] [--out REPORT.json] [--png FILE] [--force] [--control job|stage] "
        "[-- ARGS]",
    )
    r.add_argument("target", help="the script (SCRIPT.py) or module to run, as spark-submit would")
    r.add_argument("--deadline", type=_seconds, required=True,
                   help="seconds from the script's start")  # fmt: skip
    r.add_argument("--master", default="local-cluster[2,1,1024]",
                   help="Spark master (default local-cluster[2,1,1024]; local[N] runs "
                   "without control)")  # fmt: skip
    r.add_argument("--profile", type=absolute_path, default=None,
                   help="the profile (default: TARGET's name + .profile.json, here or beside "
                   "the script)")  # fmt: skip
    r.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="a Spark setting for the session (repeatable)")  # fmt: skip
    r.add_argument("--period", type=_seconds, default=1.0, help="control period, seconds")
    r.add_argument("--out", type=absolute_path, default=None,
                   help="report JSON (default: TARGET's name + .run.json)")  # fmt: skip
    r.add_argument("--png", type=absolute_path, default=None,
                   help="cores and progress over time (default: TARGET's name + .run.png)")  # fmt: skip
    r.add_argument("--force", action="store_true",
                   help="run an infeasible deadline anyway, with every core")  # fmt: skip
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--control", choices=["job", "stage"], default="job",
                   help="one controller on the job's progress (default) or dynaSpark's "
                   "controller per stage")  # fmt: skip
    r.add_argument("--log-level", default="WARNING")


def _conf(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--conf {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def _print(profile: JobProfile, out: Path) -> None:
    print(f"{profile.script}: {len(profile.stages)} stages, {profile.work_s:.1f} core-seconds of "
          f"tasks, {profile.wall_s:.1f}s wall on {profile.cores} cores")  # fmt: skip
    for s in profile.stages:
        print(f"  {s.key:50.50s} {s.tasks:5d} tasks {s.duration_s:7.2f}s "
              f"{s.work_s:8.2f} core-s {s.nominal_rate:12.0f} rec/core-s")  # fmt: skip
    print(f"wrote {out}")


def _stem(target: str) -> str:
    """``jobs/prep.py`` → ``prep``; a module's name is kept whole (``pkg.prep``)."""
    return Path(target).stem if target.endswith(".py") else target


def _print_plan(prepared: Prepared) -> None:
    s = prepared.settings
    if not prepared.control:
        print(f"hyperfleet spark run: {prepared.note}", file=sys.stderr)
        return
    plan = prepared.plan
    assert plan is not None
    print(f"{prepared.target}: deadline {s.deadline_s:.1f}s on {s.master}, up to "
          f"{prepared.max_cores} cores in steps of {prepared.cores_per_executor}; {plan.reason}")  # fmt: skip
    if prepared.note:
        print(f"hyperfleet spark run: {prepared.note}", file=sys.stderr)
    for st in plan.stages:
        print(f"  {st.key:50.50s} {st.start_s:7.1f}s -> {st.deadline_s:7.1f}s "
              f"{st.cores:3d} cores")  # fmt: skip


def _progress_bar(prepared: Prepared) -> Any:
    """A tqdm bar of the job's progress (percent of the profile's work), with the time and the
    cores in its postfix; stderr, off when it is not a terminal."""
    from tqdm import tqdm

    bar = tqdm(total=100, unit="%", desc="job", disable=None, leave=True,
               bar_format="{l_bar}{bar}| {n:.0f}% {postfix}")  # fmt: skip
    deadline = prepared.settings.deadline_s

    def update(sample: Sample) -> None:
        if sample.job_progress is not None:
            bar.update(round(100 * sample.job_progress, 1) - bar.n)
        asked = "" if sample.cores_asked is None else f"{sample.cores_asked} asked, "
        bar.set_postfix_str(f"{sample.t_s:.0f}/{deadline:.0f}s, cores {asked}"
                            f"{sample.cores_observed} running")  # fmt: skip

    update.close = bar.close  # type: ignore[attr-defined]
    return update


def _print_result(report: RunReport, out: Path, png: Path) -> None:
    verdict = "met" if report.met else "MISSED"
    control = "" if report.control else " (no control: local master)"
    print(f"finished in {report.finish_s:.1f}s, deadline {report.deadline_s:.1f}s {verdict} "
          f"({report.deadline_error_pct:+.1f}%), {report.core_seconds:.1f} core-seconds, "
          f"{report.actuations} executor changes{control}")  # fmt: skip
    if report.unknown_stages:
        print(f"stages the profile did not know (given every core): "
              f"{', '.join(report.unknown_stages)}")  # fmt: skip
    print(f"wrote {out} and {png}")


def _run_job(args: argparse.Namespace, script_args: list[str], conf: dict[str, str]) -> int:
    try:
        settings = RunSettings(deadline_s=args.deadline, master=args.master, conf=conf,
                               period_s=args.period, force=args.force,
                               level=args.control)  # fmt: skip
        prepared = prepare(args.target, settings, profile_path=args.profile)
    except ValueError as exc:
        if isinstance(exc, UsageError) or type(exc) is not ValueError:
            raise
        raise UsageError(str(exc)) from exc
    _print_plan(prepared)
    bar = None if args.no_progress else _progress_bar(prepared)
    try:
        report = run(prepared, script_args, on_sample=bar)
    finally:
        if bar is not None:
            bar.close()
    stem = _stem(args.target)
    out = args.out or Path(stem + ".run.json").resolve()
    png = args.png or Path(stem + ".run.png").resolve()
    atomic_write_json(out, report.to_json())
    write_png(report, png)
    _print_result(report, out, png)
    return EXIT_OK if report.met else EXIT_NOT_REACHED


def run_spark(args: argparse.Namespace) -> int:
    script_args = list(getattr(args, "script_args", []))
    conf = _conf(args.conf)
    if args.spark_command == "run":
        return _run_job(args, script_args, conf)
    profile = profile_script(args.target, script_args, master=args.master, conf=conf)
    out = args.out or Path(_stem(args.target) + ".profile.json")
    atomic_write_json(out, profile.to_json())
    _print(profile, out)
    return 0
