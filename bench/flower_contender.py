"""Contender (c) of ``bench/time_to_accuracy.py``: Flower itself, on its deployment runtime.

:func:`run_flower` runs the Flower App in ``bench/flower/`` (Flower's own ``FedAvg``, hyperfleet's
model, shards, NumPy trainer and device emulation) the way a Flower deployment runs it, all on
localhost:

1. ``bench/.venv-flower``: a venv of its own with ``flwr==1.42.0`` and hyperfleet installed
   editable without dependencies (plus the few its agent modules import). Flower's grpcio and
   protobuf pins never meet the main venv's TensorFlow.
2. ``flower-superlink --insecure --host 127.0.0.1 --port P
   --disable-runtime-dependency-installation``: one port serves the Fleet, Control and ServerAppIo
   APIs in 1.42; installing app dependencies at run time is on by default and would run
   ``uv sync``.
3. One ``flower-supernode --insecure --superlink 127.0.0.1:P --port Q_i --node-config
   'partition-id=i num-partitions=n'`` per fleet member (each SuperNode needs its own ClientAppIo
   port and starts its own ``flower-superexec``, which starts a fresh ``flwr-clientapp`` process
   for every instruction).
4. ``flwr run bench/flower local-deployment --run-config <work_dir>/run-config.toml --stream``,
   with ``FLWR_HOME=<work_dir>/flwr-home`` holding the ``local-deployment`` SuperLink connection
   (Flower >= 1.26 reads connections from ``$FLWR_HOME/config.toml``).

The ServerApp writes its results file after every round and stops the run itself (target, budget
or round cap); this module waits for that, samples the memory of every process it started, and
always tears the whole tree down: every process carries a marker in its environment, so even the
ones Flower detaches into their own sessions are found and killed.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import psutil

__all__ = ["APP_DIR", "FLWR_VERSION", "VENV_DIR", "FlowerError", "ensure_flower_venv", "run_flower"]

_log = logging.getLogger("bench.flower")

FLWR_VERSION = "1.42.0"
_ROOT = Path(__file__).resolve().parent.parent
APP_DIR = _ROOT / "bench" / "flower"
VENV_DIR = _ROOT / "bench" / ".venv-flower"
# What hyperfleet's agent modules import at run time, at the versions the project pins.
_AGENT_DEPS = (
    "numpy==2.4.6",
    "msgpack==1.2.4",
    "pydantic==2.14.4",
    "aiomqtt==2.5.1",
    "paho-mqtt==2.2.0",
    "psutil==7.2.2",
)
_CONNECTION = "local-deployment"
_MARKER = "HYPERFLEET_FLOWER_RUN"
_POLL_S = 0.5
_MEMORY_EVERY_S = 2.0
_STARTUP_BASE_S = 60.0
_SUPERNODE_WAVE = 4
_SUPERNODE_ATTEMPTS = 3
_REGISTERED = b"SuperNode ID:"
# Each SuperNode is two Python processes (supernode + superexec) of ~2.5 CPU-s to start.
_STARTUP_PER_NODE_S = 8.0


class FlowerError(RuntimeError):
    """Flower could not be installed or started, or its run ended without results; give up."""


# --------------------------------------------------------------------------------------- venv


def ensure_flower_venv(venv: Path = VENV_DIR) -> Path:
    """Create (or repair) the Flower venv and return its ``bin`` directory."""
    bin_dir = venv / "bin"
    if _venv_ready(bin_dir):
        return bin_dir
    _log.info("creating %s with flwr==%s", venv, FLWR_VERSION)
    _check_call([sys.executable, "-m", "venv", "--clear", str(venv)])
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet"]
    _check_call([*pip, f"flwr=={FLWR_VERSION}", *_AGENT_DEPS])
    _check_call([*pip, "--no-deps", "-e", str(_ROOT)])
    if not _venv_ready(bin_dir):
        raise FlowerError(f"{venv} was built but cannot import flwr {FLWR_VERSION} and hyperfleet")
    return bin_dir


def _venv_ready(bin_dir: Path) -> bool:
    python = bin_dir / "python"
    if not python.exists() or not (bin_dir / "flower-superlink").exists():
        return False
    probe = (
        "import importlib.metadata as m, agent.numpy_trainer, agent.emulation, agent.app;"
        "print(m.version('flwr')); print(agent.numpy_trainer.__file__)"
    )
    done = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, check=False, cwd="/"
    )
    lines = done.stdout.split()
    return (
        done.returncode == 0
        and lines[:1] == [FLWR_VERSION]
        and Path(lines[1]).resolve().is_relative_to(_ROOT)
    )


def _check_call(argv: Sequence[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise FlowerError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-2000:]}")


# ------------------------------------------------------------------------------- processes


class _ProcessTree:
    """Every process of one run: started in their own sessions, marked, torn down together."""

    def __init__(self, *, env: dict[str, str], log_dir: Path, cwd: Path) -> None:
        self.marker = uuid.uuid4().hex
        self._env = {**env, _MARKER: self.marker}
        self._log_dir = log_dir
        self._cwd = cwd
        self._started: list[subprocess.Popen[bytes]] = []
        self.commands: list[list[str]] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def log_path(self, name: str) -> Path:
        return self._log_dir / f"{name}.log"

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` in a session of its own; output goes to ``<name>.log`` (appended)."""
        with self.log_path(name).open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
            )
        self._started.append(proc)
        self.commands.append(argv)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Kill one started process and its session (a SuperNode's SuperExec is in it)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self._started.remove(proc)

    def members(self) -> list[Any]:
        """Live processes of this run: those started here, their descendants, and any process
        carrying this run's marker (Flower detaches some into sessions of their own)."""
        found: dict[int, Any] = {}
        for proc in self._started:
            with contextlib.suppress(psutil.Error):
                parent = psutil.Process(proc.pid)
                found[parent.pid] = parent
                for child in parent.children(recursive=True):
                    found[child.pid] = child
        me = os.getuid()
        for candidate in psutil.process_iter(["uids"]):
            with contextlib.suppress(psutil.Error):
                if candidate.pid in found or candidate.info["uids"].real != me:
                    continue
                if candidate.environ().get(_MARKER) == self.marker:
                    found[candidate.pid] = candidate
        return list(found.values())

    def rss_bytes(self) -> tuple[int, int]:
        """Resident memory of all members, summed (shared pages counted in each), and how many."""
        total = count = 0
        for proc in self.members():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
                count += 1
        return total, count

    def close(self) -> None:
        for proc in self._started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(p.poll() is None for p in self._started):
            time.sleep(0.1)
        for _ in range(3):  # Flower starts children while it shuts down; sweep until none left
            left = self.members()
            if not left:
                break
            for proc in left:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            psutil.wait_procs(left, timeout=5.0)
        for proc in self._started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)


def _start_supernodes(
    tree: _ProcessTree,
    *,
    bin_dir: Path,
    superlink_port: int,
    node_ports: list[int],
    deadline: float,
) -> None:
    """Start one SuperNode per fleet member, a few at a time, restarting those that give up.

    Started all at once on a small machine, SuperNodes time out registering with the busy
    SuperLink; the retried registration is then refused as a duplicate and the SuperNode exits
    (code 305). Waves of :data:`_SUPERNODE_WAVE` until each has logged its node id avoid that.
    """
    pending = list(range(len(node_ports)))
    starting: dict[int, tuple[subprocess.Popen[bytes], int]] = {}
    attempts = [0] * len(node_ports)
    while pending or starting:
        while pending and len(starting) < _SUPERNODE_WAVE:
            index = pending.pop(0)
            attempts[index] += 1
            log = tree.log_path(f"supernode-{index:03d}")
            offset = log.stat().st_size if log.exists() else 0
            proc = tree.start(
                f"supernode-{index:03d}",
                [
                    str(bin_dir / "flower-supernode"),
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{superlink_port}",
                    "--port",
                    str(node_ports[index]),
                    "--node-config",
                    f"partition-id={index} num-partitions={len(node_ports)}",
                ],
            )
            starting[index] = (proc, offset)
        for index, (proc, offset) in list(starting.items()):
            log = tree.log_path(f"supernode-{index:03d}")
            with log.open("rb") as f:
                f.seek(offset)
                registered = _REGISTERED in f.read()
            if registered:
                del starting[index]
            elif proc.poll() is not None:
                del starting[index]
                tree.stop(proc)
                if attempts[index] >= _SUPERNODE_ATTEMPTS:
                    raise FlowerError(
                        f"SuperNode {index} exited {attempts[index]} times:\n{_tail(log)}"
                    )
                _log.info("SuperNode %d exited (%s); restarting it", index, proc.returncode)
                pending.append(index)
        if time.monotonic() > deadline:
            raise FlowerError(f"{len(pending) + len(starting)} SuperNodes had not started in time")
        time.sleep(0.2)


def _free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FlowerError(f"flower-superlink exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise FlowerError(f"flower-superlink did not listen on port {port} within {timeout_s:.0f}s")


# ------------------------------------------------------------------------------------ files


def _toml_value(value: str | int | float) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _write_toml_table(path: Path, table: dict[str, str | int | float]) -> None:
    path.write_text("".join(f"{key} = {_toml_value(value)}\n" for key, value in table.items()))


def _write_flower_config(flwr_home: Path, port: int) -> None:
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{_CONNECTION}"\n\n'
        f'[superlink.{_CONNECTION}]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )


def _default_model(holdout: Path, seed: int) -> tuple[str, list[npt.NDArray[np.float32]]]:
    """The benchmark job's model, ``ModelSpec(hidden=[64, 32], seed=seed)``, built by hyperfleet."""
    read_shard = importlib.import_module("agent.app").read_shard
    spec = importlib.import_module("coordinator.job").ModelSpec(hidden=[64, 32], seed=seed)
    model = importlib.import_module("coordinator.model").GlobalModel(spec, read_shard(holdout))
    return str(model.config_json), [np.asarray(w, dtype=np.float32) for w in model.initial_weights]


def _read_results(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


# -------------------------------------------------------------------------------------- run


def run_flower(
    *,
    seed: int,
    shards_dir: Path,
    holdout: Path,
    fleet: str,
    time_scale: float,
    target_accuracy: float,
    time_budget_s: float,
    clients_per_round: int = 10,
    local_epochs: int = 1,
    batch_size: int = 16,
    learning_rate: float = 0.1,
    round_timeout_s: float,
    work_dir: Path,
    max_rounds: int = 1000,
    startup_timeout_s: float | None = None,
    model_json: str | None = None,
    initial_weights: Sequence[npt.NDArray[Any]] | None = None,
    model_wire_bytes: int = 0,
) -> dict[str, Any]:
    """Train the job with Flower's own FedAvg on Flower's deployment runtime; see the module.

    ``model_json`` and ``initial_weights`` are the job's Keras config and initial weights (pass
    ``GlobalModel.config_json`` and ``.initial_weights``); when absent, the benchmark job's model
    ``ModelSpec(hidden=[64, 32], seed=seed)`` is built here, which imports TensorFlow.
    ``time_budget_s`` counts from the start of round 1; the whole call also includes installing
    (once), starting the federation and tearing it down.
    ``startup_timeout_s`` bounds the time from launching the SuperLink to round 1 (default:
    60 s + 8 s per SuperNode). ``model_wire_bytes`` > 0: every download and upload takes the
    time that many bytes would on the device's link (bytes moved still count the real model,
    as hyperfleet's coordinator counts them).

    Raises:
        FlowerError: Flower could not be set up, or its run ended without results.
    """
    agent_fleet = importlib.import_module("agent.device_class").load_fleet(fleet)
    nodes = int(agent_fleet.total)
    shards = sorted(Path(shards_dir).glob("agent-*.npz"))
    if len(shards) != nodes:
        raise FlowerError(f"fleet {fleet} has {nodes} agents but {shards_dir} has {len(shards)}")
    if not 0 < clients_per_round <= nodes:
        raise FlowerError(f"clients_per_round must be in 1..{nodes}, got {clients_per_round}")

    bin_dir = ensure_flower_venv()
    work_dir = Path(work_dir).resolve()
    if work_dir.exists():
        shutil.rmtree(work_dir)
    log_dir = work_dir / "logs"
    log_dir.mkdir(parents=True)
    flwr_home = work_dir / "flwr-home"
    results_path = work_dir / "results.json"

    if model_json is None or initial_weights is None:
        model_json, initial_weights = _default_model(Path(holdout), seed)
    model_json_path = work_dir / "model.json"
    model_json_path.write_text(model_json)
    weights_path = work_dir / "initial-weights.npz"
    np.savez(weights_path, *[np.asarray(w, dtype=np.float32) for w in initial_weights])

    superlink_port, *node_ports = _free_ports(1 + nodes)
    _write_flower_config(flwr_home, superlink_port)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        FLWR_HOME=str(flwr_home),
        PYTHONUNBUFFERED="1",
    )
    run_config_path = work_dir / "run-config.toml"
    system_used_before = int(psutil.virtual_memory().used)
    launched_at = time.time()
    _write_toml_table(
        run_config_path,
        {
            "seed": seed,
            "fleet": fleet,
            "num-nodes": nodes,
            "shards-dir": str(Path(shards_dir).resolve()),
            "holdout": str(Path(holdout).resolve()),
            "model-json": str(model_json_path),
            "initial-weights": str(weights_path),
            "results-path": str(results_path),
            "clock-origin": launched_at,
            "time-scale": float(time_scale),
            "target-accuracy": float(target_accuracy),
            "time-budget-s": float(time_budget_s),
            "max-rounds": max_rounds,
            "clients-per-round": clients_per_round,
            "local-epochs": local_epochs,
            "batch-size": batch_size,
            "learning-rate": float(learning_rate),
            "round-timeout-s": float(round_timeout_s),
            "model-wire-bytes": int(model_wire_bytes),
        },
    )

    peak_rss = peak_procs = peak_used = 0
    with _ProcessTree(env=env, log_dir=log_dir, cwd=work_dir) as tree:
        superlink = tree.start(
            "superlink",
            [
                str(bin_dir / "flower-superlink"),
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(superlink_port),
                "--disable-runtime-dependency-installation",
            ],
        )
        _wait_listening(superlink_port, superlink, timeout_s=_STARTUP_BASE_S)
        startup_allowance_s = (
            startup_timeout_s
            if startup_timeout_s is not None
            else _STARTUP_BASE_S + _STARTUP_PER_NODE_S * nodes
        )
        startup_deadline = time.monotonic() + startup_allowance_s
        _start_supernodes(
            tree,
            bin_dir=bin_dir,
            superlink_port=superlink_port,
            node_ports=node_ports,
            deadline=startup_deadline,
        )
        flwr_run = tree.start(
            "flwr-run",
            [
                str(bin_dir / "flwr"),
                "run",
                str(APP_DIR),
                _CONNECTION,
                "--run-config",
                str(run_config_path),
                "--stream",
            ],
        )
        run_deadline: float | None = None
        next_memory = 0.0
        results: dict[str, Any] | None = None
        while True:
            now = time.monotonic()
            if now >= next_memory:
                rss, procs = tree.rss_bytes()
                peak_rss, peak_procs = max(peak_rss, rss), max(peak_procs, procs)
                used = int(psutil.virtual_memory().used) - system_used_before
                peak_used = max(peak_used, used)
                next_memory = now + _MEMORY_EVERY_S
            results = _read_results(results_path)
            if results is not None and results.get("done"):
                break
            if results is not None and run_deadline is None:
                # Round 1 has started: the budget, the round that may straddle it, and slack.
                run_deadline = now + time_budget_s + 2 * round_timeout_s + 30.0
            if run_deadline is None and now > startup_deadline:
                raise FlowerError(
                    f"round 1 did not start within {startup_allowance_s:.0f}s;"
                    f" flwr run log:\n{_tail(log_dir / 'flwr-run.log')}"
                )
            if run_deadline is not None and now > run_deadline:
                _log.warning("Flower run overran its budget; stopping it with the last results")
                break
            if flwr_run.poll() is not None and (results is None or not results.get("done")):
                time.sleep(1.0)  # the ServerApp may still be writing its last round
                results = _read_results(results_path)
                if results is None or not results.get("done"):
                    raise FlowerError(
                        f"flwr run exited ({flwr_run.returncode}) before the run finished:\n"
                        f"{_tail(log_dir / 'flwr-run.log')}"
                    )
                break
            time.sleep(_POLL_S)
        commands = [list(argv) for argv in tree.commands]
    if results is None:
        raise FlowerError("the Flower run wrote no results")
    return _summarise(
        results,
        seed=seed,
        launched_at=launched_at,
        nodes=nodes,
        commands=commands,
        memory={
            "peak_rss_sum_mb": peak_rss / 2**20,
            "peak_processes": peak_procs,
            "peak_system_used_delta_mb": peak_used / 2**20,
        },
        work_dir=work_dir,
    )


def _summarise(
    results: dict[str, Any],
    *,
    seed: int,
    launched_at: float,
    nodes: int,
    commands: list[list[str]],
    memory: dict[str, float],
    work_dir: Path,
) -> dict[str, Any]:
    wall = [float(w) for w in results["round_wall_s"]]
    device = [float(d) for d in results["round_device_s"]]
    first = results.get("first_round_started_at")
    return {
        "contender": "flower",
        "seed": seed,
        "reached": bool(results["reached"]),
        "time_to_target_s": results["time_to_target_s"],
        "rounds": int(results["rounds"]),
        "curve": results["curve"],
        "bytes_moved": int(results["bytes_moved"]),
        "agent_seconds": float(results["agent_seconds"]),
        "round_wall_s": wall,
        "round_device_s": device,
        "round_overhead_s": [w - d for w, d in zip(wall, device, strict=True)],
        "startup_s": float(first) - launched_at if first is not None else None,
        "round_sampled": results["round_sampled"],
        "round_replies": results["round_replies"],
        "round_pickup_s": results["round_pickup_s"],
        "agent_compute_seconds": float(results["agent_compute_seconds"]),
        "initial_accuracy": results["initial_accuracy"],
        "stop_reason": results["stop_reason"] or "stopped from outside",
        "nodes": nodes,
        "flower_version": FLWR_VERSION,
        "memory": memory,
        "commands": commands[:2] + commands[-1:] if len(commands) > 3 else commands,
        "work_dir": str(work_dir),
    }
