"""``hyperfleet demo``: a whole federated job on this machine, with live progress.

It prepares digits shards (Dirichlet non-IID) and a holdout, starts a broker (unless one is given),
one agent process per shard and a coordinator process, follows the retained ``jobs/{id}/state``
topic like any monitor would, and writes ``summary.json`` and ``accuracy.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.device_class import load_fleet
from link import Backoff, read_shard
from link.mqtt import MqttConnection, MqttSession, TlsFiles
from protocol import JobState, ProtocolError, Topics, decode, parse_broker_url, redact_url

from .broker import start_broker
from .demo_data import prepare_demo_data
from .demo_serving import check_served, free_port, raw_inputs, roma_args, wait_served
from .errors import UsageError
from .exits import EXIT_FAILED, EXIT_NOT_REACHED, EXIT_OK
from .flags import require_absolute
from .output import dump_json
from .progress import ProgressPrinter
from .summary import demo_summary, plot_accuracy
from .transport import tls_env, tls_files

__all__ = ["DemoSettings", "run_demo"]

_log = logging.getLogger("hyperfleet.demo")
DEMO_CLASSES = ("x86-cpu", "x86-gpu-server", "jetson-orin-nano", "raspberry-pi-5")
MODEL_NAME = "digits-mlp"
"""The job's model name: the coordinator publishes it on ``models/digits-mlp/latest``."""
DEFAULT_FLEET = "mixed-50"
"""The fleet ``hyperfleet demo`` (and ``make demo``) runs when given no ``--agents``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoSettings:
    """What ``hyperfleet demo`` runs. ``out`` must be absolute (the CLI resolves it).

    With ``fleet`` set (the default, ``mixed-50``) its agents run emulated in one
    ``hyperfleet agents`` process; with ``fleet=None``, ``agents`` real agent processes run.
    """

    out: Path
    """Where shards, logs, state, the model, ``summary.json`` and ``accuracy.png`` go."""
    fleet: str | None = DEFAULT_FLEET
    """A fleet name in ``firmware_configs/fleets`` or an absolute path to a fleet file."""
    agents: int = 8
    target_accuracy: float = 0.90
    time_budget_s: float = 600.0
    alpha: float = 0.5
    seed: int = 0
    broker: str | None = None
    prefix: str = "hf/v1"
    runtime: str = "auto"
    log_level: str = "WARNING"
    time_scale: float = 1.0
    planner: str = "hyperfl"
    participants: int = 10
    data: str = "spark"
    """``spark``: the preparation pipeline on Spark under :attr:`prep_deadline_s`; ``numpy``."""
    prep_deadline_s: float = 120.0
    tls: TlsFiles | None = None
    """CA bundle and client certificate for an ``mqtts://`` ``broker``; the processes the demo
    starts get them as ``HYPERFLEET_TLS_*``."""
    dashboard: int | None = None
    """Serve the coordinator's dashboard on 127.0.0.1 at this port (0: a free one); ``None``:
    none."""
    mode: str = "sync"
    """``sync``: rounds; ``async``: FedBuff (the job's ``mode``, with :data:`ASYNC_SETTINGS`)."""

    def __post_init__(self) -> None:
        require_absolute("out", self.out)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DemoSettings:
        """Settings from ``hyperfleet demo``'s flags (paths already absolute).

        Raises:
            UsageError: a value out of range, or ``--agents`` with ``--fleet``.
        """
        if args.agents is not None and args.fleet is not None:
            raise UsageError(
                "--agents (real agent processes) and --fleet (emulated) exclude each other"
            )
        if args.agents is not None and not 1 <= args.agents <= 200:
            raise UsageError("--agents must be between 1 and 200")
        if not 0 < args.target_accuracy <= 1:
            raise UsageError("--target-accuracy must be in (0, 1]")
        if args.time_budget <= 0:
            raise UsageError("--time-budget must be positive")
        if args.time_scale <= 0:
            raise UsageError("--time-scale must be positive")
        if args.participants < 1:
            raise UsageError("--participants must be at least 1")
        if not args.prep_deadline > 0 or args.prep_deadline == float("inf"):
            raise UsageError("--prep-deadline must be a positive number of seconds")
        fleet = None if args.agents is not None else (args.fleet or DEFAULT_FLEET)
        planner = args.planner or ("hyperfl" if fleet else "uniform")
        return cls(
            agents=args.agents or 8,
            target_accuracy=args.target_accuracy,
            time_budget_s=args.time_budget,
            alpha=args.alpha,
            seed=args.seed,
            out=args.out,
            broker=args.broker,
            prefix=args.prefix,
            runtime=args.runtime,
            log_level=args.log_level,
            fleet=fleet,
            time_scale=args.time_scale,
            planner=planner,
            participants=args.participants,
            data=args.data,
            prep_deadline_s=args.prep_deadline,
            tls=tls_files(args, args.broker),
            dashboard=args.dashboard,
            mode=args.mode,
        )


ASYNC_SETTINGS = {"buffer_size": 5, "concurrency": 15, "max_staleness": 8, "server_lr": 1.0}
"""The ``[async]`` table of ``hyperfleet demo --mode async`` (FedBuff's K, concurrency, the
staleness bound and the server learning rate), capped by the fleet's size."""


def _async_table(s: DemoSettings, agents: int) -> str:
    if s.mode != "async":
        return ""
    a = dict(ASYNC_SETTINGS)
    a["concurrency"] = min(a["concurrency"], agents)
    a["buffer_size"] = min(a["buffer_size"], a["concurrency"])
    return "\n[async]\n" + "".join(f"{k} = {v}\n" for k, v in a.items())


def _job_toml(s: DemoSettings, holdout: Path, agents: int, normalization: Path | None) -> str:
    if s.fleet is None:  # a handful of real agents: everyone trains every round
        participants, min_agents, timeout, epochs = agents, agents, 20.0, 2
        emulation = ""
    else:  # an emulated fleet, some of it offline at any time; its seconds are device-seconds
        participants, min_agents, timeout, epochs = s.participants, max(1, agents // 2), 60.0, 1
        emulation = f"\n[emulation]\ntime_scale = {s.time_scale!r}\n"
    return f"""# Written by `hyperfleet demo`.
job_id = "digits-demo"
mode = "{s.mode}"
holdout = "{holdout.resolve()}"
{"" if normalization is None else f'normalization = "{normalization.resolve()}"'}
seed = {s.seed}

[model]
name = "{MODEL_NAME}"
hidden = [64, 32]

[strategy]
name = "fedavg"

[planner]
name = "{s.planner}"

[rounds]
participants = {min(participants, agents)}
min_results = 1
round_timeout_s = {timeout:g}
local_epochs = {epochs}
batch_size = 16
learning_rate = 0.1
min_agents = {min_agents}
wait_for_agents_s = {min(120.0, s.time_budget_s / 2):.0f}

{_async_table(s, agents)}
[constraints]
target_accuracy = {s.target_accuracy}
time_budget_s = {s.time_budget_s}
{emulation}"""


@contextlib.contextmanager
def _processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _spawn(
    args: list[str],
    log: Path,
    procs: list[subprocess.Popen[bytes]],
    tls: TlsFiles | None = None,
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **tls_env(tls)}
    with log.open("wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hyperfleet", *args], stdout=f, stderr=subprocess.STDOUT, env=env
        )
    procs.append(proc)
    return proc


async def _follow(
    broker_url: str,
    topics: Topics,
    job_id: str,
    states: list[tuple[float, JobState]],
    t0: float,
    tls: TlsFiles | None = None,
) -> None:
    """Print each new round of the job, once, as the coordinator publishes it. A monitor: it
    rides out broker outages (reconnecting with backoff) and never ends the job it watches."""
    printer = ProgressPrinter()

    def on_message(topic: str, payload: object) -> None:
        if not isinstance(payload, (bytes, bytearray)):
            return
        try:
            env = decode(payload)
        except ProtocolError:
            return
        state = env.body
        if not isinstance(state, JobState) or env.ts < t0:
            return  # a retained state of an earlier run
        states.append((time.time() - t0, state))
        for line in printer.lines(state):
            print(line, flush=True)

    async def subscribe(conn: MqttConnection) -> None:
        await conn.subscribe(topics.job_state(job_id), qos=1)

    session = MqttSession(
        broker=parse_broker_url(broker_url),
        identifier=f"hf-demo-{os.getpid()}",
        on_message=on_message,
        on_connect=subscribe,
        backoff=Backoff(min_s=0.2, max_s=2.0),
        tls=tls,
        name="demo monitor",
    )
    await session.run()


async def _serve_check(
    out: Path, roma_url: str, holdout: Path, normalization: Path | None
) -> dict[str, Any] | None:
    """Once the job has published its model: wait until ROMA serves it, then check it with a
    burst of KServe v2 requests from the holdout (see :mod:`.demo_serving`). With the
    pipeline's ``normalization`` the requests carry raw inputs, as clients send them: ROMA
    normalises them with the statistics the ``ModelRef`` shipped."""
    outcome_file = out / "outcome.json"
    if not outcome_file.exists():
        return None
    model = json.loads(outcome_file.read_text()).get("model")
    if not model or model.get("version") is None:
        return None
    version = int(model["version"])
    if not await wait_served(roma_url, MODEL_NAME, version):
        print(f"ROMA did not serve {MODEL_NAME} v{version}; see {out / 'logs' / 'roma.log'}",
              file=sys.stderr)  # fmt: skip
        return {"served": False, "url": roma_url}
    data = read_shard(holdout)
    x = data.x.reshape(len(data), -1).astype(np.float32)
    if normalization is not None:
        x = raw_inputs(x, normalization)
    report = await check_served(roma_url, MODEL_NAME, x, data.y)
    report["inputs"] = "raw" if normalization is not None else "normalised"
    report.update(served=True, url=roma_url, model=MODEL_NAME, version=version)
    print(
        f"served {MODEL_NAME} v{version} by ROMA at {roma_url}: {report['rows']} holdout rows in "
        f"{report['requests']} KServe v2 requests, accuracy {report['accuracy']:.4f}, "
        f"p50 {report['p50_ms']:.1f} ms, p95 {report['p95_ms']:.1f} ms, "
        f"{report['within_sla_share']:.0%} within the {report['sla_ms']:g} ms SLA",
        flush=True,
    )
    return report


async def run_demo(s: DemoSettings) -> int:
    out = s.out
    if out.exists():
        for child in ("state", "data", "raw", "logs", "model", "serving"):
            shutil.rmtree(out / child, ignore_errors=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    fleet = load_fleet(s.fleet) if s.fleet else None
    agents = fleet.total if fleet else s.agents
    prep = prepare_demo_data(
        out / "data",
        agents=agents,
        alpha=s.alpha,
        seed=s.seed,
        deadline_s=s.prep_deadline_s,
        use_spark=s.data == "spark",
        profile=out / "prepare.profile.json",
        logs=out / "logs",
    )
    layout = prep.layout
    job = out / "job.toml"
    job.write_text(_job_toml(s, layout.holdout, agents, prep.normalization))
    topics = Topics(s.prefix)
    with contextlib.ExitStack() as stack:
        if s.broker is None:
            broker = stack.enter_context(start_broker(port=0, workdir=out / "logs"))
            broker_url, broker_kind = broker.url, str(broker.kind)
        else:
            parse_broker_url(s.broker)
            broker_url, broker_kind = s.broker, "external"
        print(f"broker: {broker_kind} at {redact_url(broker_url)}", flush=True)
        procs = stack.enter_context(_processes())
        common = ["--broker", broker_url, "--prefix", s.prefix, "--log-level", "INFO"]
        if fleet is not None:
            fleet_args = [
                "agents",
                "--fleet",
                str(s.fleet),
                "--shards",
                str(layout.shards[0].parent),
            ]
            fleet_args += ["--emulate", "--time-scale", str(s.time_scale), "--seed", str(s.seed)]
            fleet_args += ["--runtime", "numpy" if s.runtime == "auto" else s.runtime]
            fleet_args += ["--report", str(out / "fidelity.json")]
            _spawn([*fleet_args, *common], out / "logs" / "agents.log", procs, s.tls)
        else:
            for i, shard in enumerate(layout.shards):
                device = DEMO_CLASSES[i % len(DEMO_CLASSES)]
                agent_args = ["agent", "--id", f"agent-{i:03d}", "--data", str(shard)]
                agent_args += ["--device-class", device, "--runtime", s.runtime]
                _spawn([*agent_args, *common], out / "logs" / f"agent-{i:03d}.log", procs, s.tls)
        roma_port = free_port()
        roma_url = f"http://127.0.0.1:{roma_port}"
        _spawn(
            roma_args(repository=out / "serving", model=MODEL_NAME, port=roma_port,
                      broker_url=broker_url, prefix=s.prefix),
            out / "logs" / "roma.log",
            procs,
            s.tls,
        )  # fmt: skip
        dashboard: list[str] = []
        if s.dashboard is not None:
            dashboard_port = s.dashboard or free_port()
            dashboard = ["--dashboard", str(dashboard_port), "--roma-url", roma_url]
            print(
                f"dashboard: http://127.0.0.1:{dashboard_port}/ (the coordinator's; live until "
                "the demo ends)",
                flush=True,
            )
        coordinator = _spawn(
            [
                "coordinator",
                "--job",
                str(job),
                "--state-dir",
                str(out / "state"),
                "--out",
                str(out),
                "--linger-s",
                "60",
                *dashboard,
                *common,
            ],
            out / "logs" / "coordinator.log",
            procs,
            s.tls,
        )
        print(
            f"started {agents} agents and a coordinator ({s.planner} planner, {s.mode} mode); target {s.target_accuracy} within "
            f"{s.time_budget_s:.0f}s (logs in {out / 'logs'})",
            flush=True,
        )
        states: list[tuple[float, JobState]] = []
        async with asyncio.TaskGroup() as tg:
            follower = tg.create_task(_follow(broker_url, topics, "digits-demo", states, t0, s.tls))
            # The job's seconds are device-seconds of an emulated fleet: wall = x time scale.
            wall_budget = s.time_budget_s * (s.time_scale if fleet is not None else 1.0)
            hard_limit = wall_budget + 180  # start-up, export and slack; never wait forever
            outcome_file = out / "outcome.json"
            while (
                coordinator.poll() is None
                and not outcome_file.exists()
                and time.time() - t0 < hard_limit
            ):
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)  # let the last retained state arrive
            follower.cancel()
        serving = await _serve_check(out, roma_url, layout.holdout, prep.normalization)
        if coordinator.poll() is None and not outcome_file.exists():
            coordinator.kill()
            print("the coordinator did not finish in time; see its log", file=sys.stderr)
    wall_s = time.time() - t0
    outcome_path = out / "outcome.json"
    if not outcome_path.exists():
        print(
            f"the coordinator failed (exit {coordinator.returncode}); see {out / 'logs' / 'coordinator.log'}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    outcome = json.loads(outcome_path.read_text())
    summary = demo_summary(s, outcome, wall_s, broker_kind, states, agents)
    fidelity = out / "fidelity.json"
    if fleet is not None and fidelity.exists():  # the fleet process writes it as it stops
        report = json.loads(fidelity.read_text())
        summary["emulation"] = {
            "fleet": fleet.name,
            "time_scale": s.time_scale,
            "replies": report["replies_total"],
            "overrun_share": report["overrun_share"],
        }
    summary["preparation"] = prep.report
    if serving is not None:
        summary["serving"] = serving
    dump_json(out / "summary.json", summary)
    plot_accuracy(out / "accuracy.png", summary)
    print(
        f"{'REACHED' if summary['reached'] else 'NOT REACHED'}: accuracy {summary['final_accuracy']:.4f}"
        f" (target {s.target_accuracy}) in {summary['rounds']} {'versions' if s.mode == 'async' else 'rounds'}, {wall_s:.1f}s wall"
        f"; summary {out / 'summary.json'}, plot {out / 'accuracy.png'}",
        flush=True,
    )
    if not summary["reached"]:
        print(f"the target was not reached: {outcome['reason'].replace('_', ' ')}", file=sys.stderr)
        return EXIT_NOT_REACHED
    if serving is not None and not serving["served"]:
        return EXIT_FAILED  # trained and published, but the served half of the demo failed (said above)
    return EXIT_OK
