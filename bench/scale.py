"""Scale: one coordinator, 50 to 500 agents through Mosquitto, rounds of up to 100 participants.

For each fleet size a fresh Mosquitto, the agents (real :class:`agent.daemon.Agent` daemons with
a no-op trainer, each with its own MQTT connection and heartbeating every 5 s, 125 to a
process), and a real ``hyperfleet coordinator`` process running ten rounds of a small model
(digits MLP, 32 hidden units) with ``min(100, agents)`` participants chosen at random. Measured:
the coordinator's CPU seconds and peak resident memory over the job, the broker's CPU seconds,
and the round duration (the agents answer at once, so a round's time is the system's
overhead: instructions out, replies in, aggregation, evaluation, checkpoint). Then 500 agents
again through a two-node Mosquitto bridge (half the agents on each node, the coordinator on
the first). Writes ``bench/results/scale.json``; figures in ``docs/benchmarks.md``.

    .venv/bin/python bench/scale.py                 # ~10 minutes
    .venv/bin/python bench/scale.py --sizes 50,100  # a short look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
# Python puts bench/ first on sys.path, where bench/protocol.py would shadow the protocol package.
sys.path[:] = [str(ROOT.parent), *[p for p in sys.path if Path(p or os.curdir).resolve() != ROOT]]

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
import psutil  # noqa: E402

PER_PROCESS = 125
ROUNDS = 10
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------- the agents' process


async def serve_agents(count: int, offset: int, broker_url: str, prefix: str) -> None:
    """``count`` no-op agents ``scale-{offset+i}``; ``ready`` on stdout once all are connected;
    they stop when stdin closes."""
    from agent import daemon, probe
    from agent import trainer as trainer_port
    from protocol import Topics, parse_broker_url

    class NoopTrainer:
        name = "noop"

        def fit(
            self, model: str, weights: tuple[npt.NDArray[Any], ...], config: Any, *, stop_at: float
        ) -> Any:
            return trainer_port.FitResult(
                weights=weights, steps=1, num_examples=1, loss=0.0, train_s=0.0
            )

        def evaluate(self, model: str, weights: tuple[npt.NDArray[Any], ...]) -> Any:
            return trainer_port.EvalResult(loss=0.0, accuracy=0.0, num_examples=1)

    broker = parse_broker_url(broker_url)
    caps = probe.Capabilities(arch=platform.machine(), cores=1, memory_bytes=1 << 30, gpus=(),
                              runtimes=("numpy",))  # fmt: skip
    agents = [
        daemon.Agent(
            settings=daemon.AgentSettings(
                agent_id=f"scale-{offset + i:04d}",
                broker=broker,
                device_class="x86-cpu",
                topics=Topics(prefix),
                heartbeat_s=5.0,
            ),
            trainer=NoopTrainer(),
            capabilities=caps,
            num_examples=1,
        )
        for i in range(count)
    ]
    stdin = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin
    )
    async with asyncio.TaskGroup() as tg:
        for a in agents:
            tg.create_task(a.run())
        try:
            async with asyncio.timeout(120):
                for a in agents:
                    await a.connected.wait()
            sys.stdout.write("ready\n")
            sys.stdout.flush()
            await stdin.read()
        finally:
            for a in agents:
                a.stop()


def spawn_agents(count: int, offset: int, url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, str(Path(__file__)), "--serve-agents", str(count), "--offset",
             str(offset), "--broker", url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=ENV,
        )  # fmt: skip


# ---------------------------------------------------------------------- brokers


def mosquitto(workdir: Path, port: int, bridge_to: int | None = None) -> subprocess.Popen[bytes]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    conf = workdir / f"mosquitto-{port}.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false",
             "max_queued_messages 10000", "log_type error"]  # fmt: skip
    if bridge_to is not None:
        lines += [f"connection bridge-{port}", f"address 127.0.0.1:{bridge_to}",
                  "topic # both 1", "cleansession true", "bridge_protocol_version mqttv311"]  # fmt: skip
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=(workdir / f"mosquitto-{port}.log").open("wb"))  # fmt: skip
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    raise RuntimeError(f"mosquitto on {port} did not start")


# ---------------------------------------------------------------------- one fleet size


def job_toml(work: Path, holdout: Path, agents: int) -> Path:
    participants = min(100, agents)
    path = work / "job.toml"
    path.write_text(f"""job_id = "scale"
holdout = "{holdout}"
seed = 0

[model]
name = "digits-mlp"
hidden = [32]

[strategy]
name = "fedavg"

[planner]
name = "uniform"

[rounds]
participants = {participants}
min_results = {participants}
round_timeout_s = 60
local_epochs = 1
batch_size = 16
learning_rate = 0.1
min_agents = {agents}
wait_for_agents_s = 180

[constraints]
target_accuracy = 0.999
time_budget_s = 900
max_rounds = {ROUNDS}
""")
    return path


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def run_size(agents: int, holdout: Path, *, bridged: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"hyperfleet-scale-{agents}-"))
    port_a = free_port()
    brokers = [mosquitto(work, port_a)]
    ports = [port_a]
    if bridged:
        port_b = free_port()
        brokers.append(mosquitto(work, port_b, bridge_to=port_a))
        ports.append(port_b)
    children: list[subprocess.Popen[bytes]] = []
    try:
        started = time.monotonic()
        for k in range(math.ceil(agents / PER_PROCESS)):
            count = min(PER_PROCESS, agents - k * PER_PROCESS)
            port = ports[k % len(ports)]
            url = f"mqtt://127.0.0.1:{port}"
            children.append(spawn_agents(count, k * PER_PROCESS, url, work / f"agents-{k}.log"))
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()
            if line.strip() != b"ready":
                raise RuntimeError(f"an agent process did not start: {line!r}")
        connect_s = time.monotonic() - started
        broker_cpu0 = sum(cpu_s(psutil.Process(b.pid)) for b in brokers)
        log = (work / "coordinator.log").open("wb")
        coordinator = subprocess.Popen(
            [sys.executable, "-m", "hyperfleet", "coordinator", "--job",
             str(job_toml(work, holdout, agents)), "--state-dir", str(work / "state"),
             "--out", str(work / "out"), "--linger-s", "0", "--broker",
             f"mqtt://127.0.0.1:{port_a}", "--log-level", "WARNING"],
            stdout=log, stderr=subprocess.STDOUT, env=ENV,
        )  # fmt: skip
        proc = psutil.Process(coordinator.pid)
        peak_rss = 0
        samples: list[tuple[float, float]] = []  # (time, CPU seconds so far)
        while coordinator.poll() is None:
            try:
                peak_rss = max(peak_rss, proc.memory_info().rss)
                samples.append((time.monotonic(), cpu_s(proc)))
            except psutil.Error:
                break
            time.sleep(0.2)
        status = coordinator.wait()
        broker_cpu = sum(cpu_s(psutil.Process(b.pid)) for b in brokers) - broker_cpu0
        outcome_path = work / "out" / "outcome.json"
        if not outcome_path.exists():
            raise RuntimeError(f"no outcome (exit {status}); see {work / 'coordinator.log'}")
        history = json.loads(outcome_path.read_text())["history"]
        durations = [r["duration_s"] for r in history]
        results = [r["results"] for r in history]
        # The rounds are the end of the process's life: its CPU over them is the last sample's
        # less the one taken as the first round began (start-up, TensorFlow's import and the
        # wait for agents excluded).
        end_t, cpu = samples[-1]
        begin = end_t - sum(durations)
        cpu -= max((c for t, c in samples if t <= begin), default=0.0)
        return {
            "agents": agents, "bridged": bridged, "participants": min(100, agents),
            "rounds": len(history), "results_per_round": results,
            "all_replied": all(r == min(100, agents) for r in results),
            "connect_s": round(connect_s, 2),
            "round_s_median": round(statistics.median(durations), 3),
            "round_s_max": round(max(durations), 3),
            "round_s_after_first_median": round(statistics.median(durations[1:]), 3)
            if len(durations) > 1 else None,
            "coordinator_cpu_s_rounds": round(cpu, 2),
            "coordinator_cpu_s_per_round": round(cpu / max(1, len(history)), 3),
            "coordinator_peak_rss_mb": round(peak_rss / 2**20, 1),
            "broker_cpu_s": round(broker_cpu, 2),
            "exit": status,
        }  # fmt: skip
    finally:
        for child in children:
            if child.stdin is not None:
                child.stdin.close()
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        for b in brokers:
            b.terminate()
            b.wait(10)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="50,100,200,500")
    p.add_argument("--bridge-size", type=int, default=500, help="0: no bridged run")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "scale.json")
    p.add_argument("--serve-agents", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--broker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_agents is not None:
        asyncio.run(serve_agents(args.serve_agents, args.offset, args.broker, "hf/v1"))
        return 0
    from cloud.pipelines import load_digits, prepare_federated

    data = Path(tempfile.mkdtemp(prefix="hyperfleet-scale-data-"))
    layout = prepare_federated(load_digits(), agents=1, alpha=1.0, holdout=0.2, seed=0,
                               out_dir=data)  # fmt: skip
    t0 = time.time()
    load_before = os.getloadavg()
    rows = []
    sizes = [int(x) for x in args.sizes.split(",") if x]
    runs = [(n, False) for n in sizes] + ([(args.bridge_size, True)] if args.bridge_size else [])
    for n, bridged in runs:
        row = run_size(n, layout.holdout, bridged=bridged)
        print(json.dumps(row), flush=True)
        rows.append(row)
    single = [r for r in rows if not r["bridged"]]
    growth: dict[str, Any] = {}
    if len(single) >= 2:
        a, b = single[0], single[-1]
        for key in ("round_s_median", "coordinator_cpu_s_per_round", "coordinator_peak_rss_mb",
                    "broker_cpu_s"):  # fmt: skip
            growth[key] = {"from": a[key], "to": b[key], "agents": [a["agents"], b["agents"]],
                           "ratio": round(b[key] / a[key], 2) if a[key] else None}  # fmt: skip
    doc = {
        "benchmark": "scale", "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t0)),
        "seconds": round(time.time() - t0, 1), "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "rounds": ROUNDS, "agents_per_process": PER_PROCESS, "heartbeat_s": 5.0,
        "model": "digits-mlp [32]", "runs": rows, "growth": growth,
        "command": " ".join(["bench/scale.py", *sys.argv[1:]]),
        "numpy": np.__version__,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(growth, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
