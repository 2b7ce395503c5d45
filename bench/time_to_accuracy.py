"""Time to accuracy on a heterogeneous, unreliable fleet: hyperFL against the way people do it today.

Contenders, side by side in one run, on the reference fleet ``firmware_configs/fleets/mixed-50.toml``
(50 emulated devices, from 400 down to 3 examples/s, with drop-outs and churn), the same model
(a 64-32-10 MLP on digits), data, partitions (Dirichlet 0.5, 20 % holdout, shards assigned to
devices by the seed) and emulation, for each seed:

(a) ``hyperfl``: hyperfleet with the hyperFL planner (deadlines, work sizing, utility selection,
    pacing) and the job's time budget;
(b) ``fedavg``: hyperfleet with uniform random selection of 10 agents a round, one local epoch and
    no deadlines to speak of (a round waits up to ``--baseline-timeout`` device-seconds);
(c) ``flower``: Flower 1.42 itself, its own FedAvg on its deployment runtime (superlink, 50
    supernodes, ``flwr run``), with the same emulation inside its client code
    (``bench/flower_contender.py``), when ``--flower`` is given.

All emulated durations run ``--time-scale`` times real life (0.25: four times faster) so five seeds
fit in an hour; device time is scaled, runtime overheads are not. Results report wall seconds as run,
device seconds (wall / scale) and, for Flower, its per-round runtime overhead apart from the
emulated device time. Infeasible budgets are run for (a) too: how early the planner says so.

Writes ``bench/results/<name>.json`` and ``<name>.png`` (``--name``, default ``time_to_accuracy``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT), *[p for p in sys.path if Path(p).resolve() != ROOT / "bench"]]

from cloud.pipelines import load_digits, prepare_federated  # noqa: E402
from coordinator.job import JobSpec  # noqa: E402
from coordinator.mqtt_fleet import open_mqtt_fleet  # noqa: E402
from coordinator.service import Coordinator, JobOutcome  # noqa: E402
from hyperfleet.broker import start_broker  # noqa: E402
from protocol import Topics, decode_shard, parse_broker_url  # noqa: E402

_log = logging.getLogger("bench.tta")
FLEET = "mixed-50"


def job_spec(
    contender: str,
    *,
    seed: int,
    holdout: Path,
    scale: float,
    target: float,
    budget_device_s: float,
    baseline_timeout_device_s: float,
    on_infeasible: str = "continue",
) -> JobSpec:
    common_rounds = {
        "participants": 10,
        "batch_size": 16,
        "learning_rate": 0.1,
        "local_epochs": 1,
        "min_agents": 20,
        "wait_for_agents_s": 30,
    }
    if contender == "hyperfl":
        rounds = {**common_rounds, "round_timeout_s": 60 * scale}
        planner = {"name": "hyperfl"}
    else:
        rounds = {**common_rounds, "round_timeout_s": baseline_timeout_device_s * scale}
        planner = {"name": "uniform"}
    return JobSpec.model_validate(
        {
            "job_id": f"{contender}-{seed}",
            "holdout": str(holdout),
            "seed": seed,
            "model": {"hidden": [64, 32], "seed": seed},
            "strategy": {"name": "fedavg"},
            "planner": planner,
            "rounds": rounds,
            "constraints": {
                "target_accuracy": target,
                "time_budget_s": budget_device_s * scale,
                "on_infeasible": on_infeasible,
            },
        }
    )


def start_agents(
    broker_url: str, prefix: str, shards: Path, seed: int, scale: float, report: Path, log: Path
) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "hyperfleet", "agents", "--fleet", FLEET, "--shards", str(shards)]
    args += ["--emulate", "--time-scale", str(scale), "--seed", str(seed), "--runtime", "numpy"]
    args += ["--report", str(report), "--broker", broker_url, "--prefix", prefix]
    args += ["--heartbeat-s", str(max(0.5, 5 * scale)), "--log-level", "INFO"]
    with log.open("wb") as f:
        return subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def summarise(
    outcome: JobOutcome, *, target: float, scale: float, budget_device_s: float
) -> dict[str, Any]:
    hist = outcome.progress.history
    t0 = hist[0].started_s if hist else 0.0
    curve = [[r.started_s + r.duration_s - t0, r.accuracy] for r in hist]
    reached_at = next((t for t, acc in curve if acc >= target), None)
    upto = [r for r in hist if reached_at is None or r.started_s + r.duration_s - t0 <= reached_at]
    return {
        "reached": reached_at is not None,
        "time_to_target_s": reached_at,
        "time_to_target_device_s": None if reached_at is None else reached_at / scale,
        "budget_met": reached_at is not None and reached_at <= budget_device_s * scale,
        "rounds": len(upto),
        "bytes_moved": sum(r.bytes_moved for r in upto),
        "agent_seconds": sum(r.agent_seconds for r in upto),
        "agent_device_seconds": sum(r.agent_seconds for r in upto) / scale,
        "final_accuracy": outcome.progress.best_accuracy,
        "stop_reason": outcome.reason,
        "infeasible_at_s": outcome.progress.infeasible_at_s,
        "curve": curve,
        "round_wall_s": [r.duration_s for r in hist],
        "failures_per_round": [len(r.failures) for r in hist],
    }


async def run_job(broker_url: str, prefix: str, spec: JobSpec, work: Path) -> JobOutcome:
    holdout = decode_shard(spec.holdout.read_bytes())
    async with open_mqtt_fleet(broker=parse_broker_url(broker_url), topics=Topics(prefix)) as fleet:
        coordinator = Coordinator(
            spec=spec, fleet=fleet, holdout=holdout, state_dir=work / "state", out_dir=work / "out"
        )
        return await coordinator.run()


def run_hyperfleet(
    contender: str,
    *,
    seed: int,
    data: Path,
    broker_url: str,
    args: argparse.Namespace,
    work: Path,
    target: float,
    budget_device_s: float,
    on_infeasible: str = "continue",
) -> dict[str, Any]:
    prefix = f"bench/{uuid.uuid4().hex[:8]}/hf/v1"
    shutil.rmtree(work, ignore_errors=True)  # a fresh job: no checkpoint to resume from
    work.mkdir(parents=True)
    # The baseline gets room to finish past the budget, so its time to target can be measured.
    run_budget = budget_device_s if contender == "hyperfl" else budget_device_s * args.baseline_room
    spec = job_spec(
        contender,
        seed=seed,
        holdout=data / "holdout.npz",
        scale=args.time_scale,
        target=target,
        budget_device_s=run_budget,
        baseline_timeout_device_s=args.baseline_timeout,
        on_infeasible=on_infeasible,
    )
    report = work / "fidelity.json"
    agents = start_agents(
        broker_url, prefix, data / "shards", seed, args.time_scale, report, work / "agents.log"
    )
    started = time.monotonic()
    try:
        outcome = asyncio.run(run_job(broker_url, prefix, spec, work))
    finally:
        stop(agents)
    result = summarise(
        outcome, target=target, scale=args.time_scale, budget_device_s=budget_device_s
    )
    fidelity = json.loads(report.read_text()) if report.exists() else {}
    result.update(
        contender=contender,
        seed=seed,
        target=target,
        budget_device_s=budget_device_s,
        wall_s=time.monotonic() - started,
        emulation_overrun_share=fidelity.get("overrun_share"),
        emulation_replies=fidelity.get("replies_total"),
    )
    return result


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by.setdefault(r["contender"], []).append(r)
    out: dict[str, Any] = {}
    for name, rs in by.items():
        out[name] = {
            "runs": len(rs),
            "reached": sum(r["reached"] for r in rs),
            "budget_met": sum(r["budget_met"] for r in rs),
            "median_time_to_target_s": median([r["time_to_target_s"] for r in rs]),
            "median_time_to_target_device_s": median([r["time_to_target_device_s"] for r in rs]),
            "median_rounds": median([r["rounds"] for r in rs]),
            "median_bytes_moved": median([r["bytes_moved"] for r in rs]),
            "median_agent_seconds": median([r["agent_seconds"] for r in rs]),
        }
    return out


def plot(runs: list[dict[str, Any]], path: Path, target: float, budget_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"hyperfl": "tab:green", "fedavg": "tab:blue", "flower": "tab:orange"}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    seen: set[str] = set()
    for r in runs:
        if not r.get("curve"):
            continue
        xs = [p[0] for p in r["curve"]]
        ys = [p[1] for p in r["curve"]]
        name = r["contender"]
        ax.plot(
            xs,
            ys,
            color=colours.get(name, "gray"),
            alpha=0.6,
            lw=1.2,
            label=None if name in seen else name,
        )
        seen.add(name)
    ax.axhline(target, color="tab:red", ls="--", lw=1, label=f"target {target}")
    ax.axvline(budget_s, color="gray", ls=":", lw=1, label="budget")
    ax.set_xlabel("wall seconds from the first round (emulated time scaled)")
    ax.set_ylabel("holdout accuracy")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    ax.set_title("time to accuracy on mixed-50 (5 seeds per contender)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--time-scale", type=float, default=0.25)
    p.add_argument("--target", type=float, default=0.90)
    p.add_argument("--budget", type=float, default=600.0, help="device-seconds")
    p.add_argument("--baseline-timeout", type=float, default=60.0, help="device-seconds per round")
    p.add_argument("--baseline-room", type=float, default=2.0, help="baselines run this x budget")
    p.add_argument("--contenders", default="hyperfl,fedavg")
    p.add_argument("--flower", action="store_true", help="also run Flower 1.42 (contender c)")
    p.add_argument("--infeasible", action="store_true", help="also run infeasible budgets")
    p.add_argument("--work", type=Path, default=Path("/tmp/hyperfleet-bench-tta"))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--name", default="time_to_accuracy", help="output file stem")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    contenders = [c for c in args.contenders.split(",") if c]
    runs: list[dict[str, Any]] = []
    infeasible: list[dict[str, Any]] = []
    args.work.mkdir(parents=True, exist_ok=True)
    with start_broker(prefer="auto", workdir=args.work) as broker:
        for seed in range(args.seeds):
            data = args.work / f"data-{seed}"
            prepare_federated(
                load_digits(), agents=50, alpha=0.5, holdout=0.2, seed=seed, out_dir=data
            )
            order = contenders + (["flower"] if args.flower else [])
            shift = seed % len(order) if order else 0
            for contender in order[shift:] + order[:shift]:
                print(f"seed {seed}: {contender} ...", flush=True)
                if contender == "flower":
                    run_flower = importlib.import_module("bench.flower_contender").run_flower
                    result = run_flower(
                        seed=seed,
                        shards_dir=data / "shards",
                        holdout=data / "holdout.npz",
                        fleet=FLEET,
                        time_scale=args.time_scale,
                        target_accuracy=args.target,
                        time_budget_s=args.budget * args.time_scale * args.baseline_room,
                        round_timeout_s=args.baseline_timeout * args.time_scale,
                        work_dir=args.work / f"flower-{seed}",
                    )
                    t = result.get("time_to_target_s")
                    result["budget_met"] = t is not None and t <= args.budget * args.time_scale
                    result["time_to_target_device_s"] = None if t is None else t / args.time_scale
                else:
                    result = run_hyperfleet(
                        contender,
                        seed=seed,
                        data=data,
                        broker_url=broker.url,
                        args=args,
                        work=args.work / f"{contender}-{seed}",
                        target=args.target,
                        budget_device_s=args.budget,
                    )
                runs.append(result)
                print(
                    f"  reached={result['reached']} t={result.get('time_to_target_s')} "
                    f"rounds={result.get('rounds')} budget_met={result['budget_met']}",
                    flush=True,
                )
            if args.infeasible:
                for label, target, budget in (
                    ("target-0.99", 0.99, args.budget),
                    ("budget-30s", args.target, 30.0),
                ):
                    print(f"seed {seed}: infeasible {label} ...", flush=True)
                    r = run_hyperfleet(
                        "hyperfl",
                        seed=seed,
                        data=data,
                        broker_url=broker.url,
                        args=args,
                        work=args.work / f"infeasible-{label}-{seed}",
                        target=target,
                        budget_device_s=budget,
                        on_infeasible="stop",
                    )
                    at = r["infeasible_at_s"]
                    r.update(
                        scenario=label,
                        declared=at is not None,
                        declared_share_of_budget=None
                        if at is None
                        else at / (budget * args.time_scale),
                    )
                    infeasible.append(r)
                    print(
                        f"  declared={r['declared']} share={r['declared_share_of_budget']}",
                        flush=True,
                    )
    summary = aggregate(runs)
    ratios: dict[str, Any] = {}
    a = summary.get("hyperfl", {}).get("median_time_to_target_s")
    for other in ("fedavg", "flower"):
        b = summary.get(other, {}).get("median_time_to_target_s")
        ratios[f"{other}_over_hyperfl"] = (b / a) if a and b else None
    hyper_runs = [r for r in runs if r["contender"] == "hyperfl"]
    result = {
        "benchmark": "time_to_accuracy",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "summary": summary,
        "ratios": ratios,
        "targets": {
            "fedavg_over_hyperfl": 2.0,
            "flower_over_hyperfl": 3.0,
            "budget_met_share": 0.95,
            "infeasible_declared_before_share": 0.30,
        },
        "hyperfl_budget_met_share": (sum(r["budget_met"] for r in hyper_runs) / len(hyper_runs))
        if hyper_runs
        else None,
        "infeasible": [
            {
                k: r[k]
                for k in (
                    "scenario",
                    "seed",
                    "declared",
                    "declared_share_of_budget",
                    "infeasible_at_s",
                    "final_accuracy",
                    "stop_reason",
                    "rounds",
                )
            }
            for r in infeasible
        ],
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    plot(runs, args.out / f"{args.name}.png", args.target, args.budget * args.time_scale)
    print(
        json.dumps(
            {
                "summary": summary,
                "ratios": ratios,
                "hyperfl_budget_met_share": result["hyperfl_budget_met_share"],
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
