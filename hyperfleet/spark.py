"""``hyperfleet spark profile``: run an unmodified PySpark script once and write what each
stage cost, for ``hyperfleet spark run`` to plan with (docs/dynaspark.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cloud.dynaspark import JobProfile
from cloud.dynaspark.profiler import profile_script
from link import atomic_write_json

from .errors import UsageError

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


def run_spark(args: argparse.Namespace) -> int:
    script_args = list(getattr(args, "script_args", []))
    conf = _conf(args.conf)
    profile = profile_script(args.target, script_args, master=args.master, conf=conf)
    out = args.out or Path(Path(args.target).stem + ".profile.json")
    atomic_write_json(out, profile.to_json())
    _print(profile, out)
    return 0
