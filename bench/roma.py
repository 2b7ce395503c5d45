"""ROMA against static allocations and a real peer (MLServer with adaptive batching), side by
side in one run, under one step load.

Two models of different cost, each with its SLA: the digits MLP (64 → 32 → 10; p95 ≤ 20 ms) and
a CNN on 96×96 digits (five 3×3 convolutions of 32 to 128 filters, ~5 ms a row on one core;
p95 ≤ 100 ms), both trained here and served as float TFLite under LiteRT by every contender. The load is open-loop Poisson,
low → high → low for each model at once (``hyperfleet loadgen``'s :func:`run_load`), the same
seeds for every contender, as JSON tensors (the KServe v2 encoding every contender speaks). Contenders, each a server process of its own, one after another:

- ``roma``: ``hyperfleet serve`` with the core controller (0.1 to 2 cores per model, 2 in all);
- ``static-max``: the same server, the node split evenly and held: 1 core per model, no control;
- ``static-min``: each model held at 0.2 cores;
- ``one-worker``: one worker process per model, no quota, no control;
- ``roma-kernel-quota``: ROMA with the kernel's CPU quota (``cgroup = "auto"``) in place of the
  user-space one, where this machine lets the server write cgroups (reported, not judged);
- ``mlserver``: MLServer 1.7 (in its own virtualenv, made on first use) with a LiteRT runtime
  (``bench/roma_peer/litert_runtime.py``) and its adaptive batching.

Tuning budget: the two contenders with knobs get the same number of trials on a short
calibration load (``--trials``, default 2): ROMA its controller gains, MLServer its batch wait;
each keeps its best trial (fewest violating windows, then fewest core-seconds).

Reported per contender and model: share of 1 s windows whose p95 breaks the SLA, p50/p95/p99,
sheds, allocated core-seconds (the controller's allocation; for MLServer and one-worker, which
allocate nothing, the node's cores) and the CPU seconds the server's processes really used; and
the serving layer's own cost at low load (client p50 minus the model's compute p50). Writes
``bench/results/roma.json`` and ``roma.png`` (latency and cores over time).

    .venv/bin/python bench/roma.py            # full run, ~12 min
    .venv/bin/python bench/roma.py --quick    # a smoke run of ~2 min, writes nothing
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import psutil

ROOT = Path(__file__).resolve().parent
# Python puts bench/ first on sys.path, where bench/protocol.py would shadow the protocol package.
sys.path[:] = [str(ROOT.parent), *[p for p in sys.path if Path(p or os.curdir).resolve() != ROOT]]

from cloud.roma.loadgen import Step, run_load  # noqa: E402

RESULTS = ROOT / "results"
PEER_VENV = ROOT / ".mlserver-venv"
# uvloop 0.22 breaks MLServer 1.7's parallel workers (SeldonIO/MLServer#2286): pinned below it.
PEER_PACKAGES = ["mlserver==1.7.1", "uvloop==0.21.0", "ai-edge-litert==2.3.0", "numpy==2.4.6"]
SLA_MS = {"mlp": 20.0, "cnn": 100.0}
MAX_BATCH = {"mlp": 16, "cnn": 8}


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    tflite: Path
    x: npt.NDArray[np.float32]


def _train_models(work: Path) -> list[Model]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target
    images = np.kron(x.reshape(-1, 8, 8), np.ones((12, 12), np.float32))[..., None]  # 96×96×1
    keras.utils.set_random_seed(0)
    mlp = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                            keras.layers.Dense(10, activation="softmax")])  # fmt: skip

    def conv(filters: int) -> Any:
        return keras.layers.Conv2D(filters, 3, activation="relu", padding="same")

    cnn = keras.Sequential([
        keras.Input((96, 96, 1)),
        conv(32), conv(32), keras.layers.MaxPooling2D(),
        conv(64), conv(64), keras.layers.MaxPooling2D(),
        conv(128), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])  # fmt: skip
    models = []
    for name, model, data in (("mlp", mlp, x), ("cnn", cnn, images)):
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(data[:1400], y[:1400], epochs=2 if name == "cnn" else 10, verbose=0)
        acc = model.evaluate(data[1400:], y[1400:], verbose=0)[1]
        path = work / f"{name}.tflite"
        path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        print(
            f"trained {name}: holdout accuracy {acc:.3f}, {path.stat().st_size} bytes", flush=True
        )
        models.append(Model(name, path, data[1400:]))
    return models


# ---------------------------------------------------------------------- contenders


@dataclass(slots=True)
class Contender:
    name: str
    kind: str  # "roma" or "mlserver"
    settings: dict[str, Any] = field(default_factory=dict)
    allocates: bool = True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _roma_repository(work: Path, models: list[Model], cores: dict[str, float]) -> Path:
    repo = work / "repository"
    shutil.rmtree(repo, ignore_errors=True)
    for m in models:
        (repo / m.name / "1").mkdir(parents=True)
        shutil.copy(m.tflite, repo / m.name / "1" / "model.tflite")
        (repo / m.name / "config.toml").write_text(
            f"sla_ms = {SLA_MS[m.name]}\nmax_batch = {MAX_BATCH[m.name]}\nmax_queue = 512\n"
            f"initial_cores = {cores['initial']}\nmin_cores = {cores['min']}\n"
            f"max_cores = {cores['max']}\n"
        )
    return repo


def _start_roma(work: Path, models: list[Model], c: Contender, log: Path) -> tuple[Any, str]:
    s = c.settings
    repo = _roma_repository(work, models, s["cores"])
    config = work / "serve.toml"
    config.write_text(
        f"quota = {str(s.get('quota', True)).lower()}\ncores = 2.0\n"
        f'cgroup = "{s.get("cgroup", "off")}"\n[controller]\n'
        f'mode = "{s.get("mode", "pi")}"\nkp = {s.get("kp", 0.3)}\nki = {s.get("ki", 0.6)}\n'
    )
    port = _free_port()
    args = [sys.executable, "-m", "hyperfleet", "serve", "--repository", str(repo),
            "--port", str(port), "--config", str(config), "--log-level", "WARNING"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def _ensure_peer_venv() -> Path:
    python = PEER_VENV / "bin" / "python"
    stamp = PEER_VENV / ".installed"
    if stamp.exists() and stamp.read_text() == " ".join(PEER_PACKAGES):
        return python
    if not python.exists():
        print(f"making MLServer's virtualenv in {PEER_VENV} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    stamp.write_text(" ".join(PEER_PACKAGES))
    return python


def _start_mlserver(work: Path, models: list[Model], c: Contender, log: Path) -> tuple[Any, str]:
    python = _ensure_peer_venv()
    root = work / "mlserver"
    shutil.rmtree(root, ignore_errors=True)
    port = _free_port()
    root.mkdir()
    (root / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": _free_port(), "metrics_port": _free_port(),
        "parallel_workers": c.settings.get("parallel_workers", 1), "debug": False,
    }))  # fmt: skip
    for m in models:
        folder = root / m.name
        folder.mkdir()
        shutil.copy(m.tflite, folder / "model.tflite")
        (folder / "model-settings.json").write_text(json.dumps({
            "name": m.name, "implementation": "litert_runtime.LiteRTModel",
            "max_batch_size": MAX_BATCH[m.name], "max_batch_time": c.settings.get("max_batch_time", 0.002),
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, *m.x.shape[1:]]}],
            "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}],
            "parameters": {"uri": str(folder / "model.tflite"), "extra": {"threads": 1}},
        }))  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "roma_peer")}
    with log.open("wb") as out:
        proc = subprocess.Popen([str(python.parent / "mlserver"), "start", str(root)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)  # fmt: skip
    return proc, f"http://127.0.0.1:{port}"


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def _wait_ready(url: str, models: list[Model], proc: Any, log: Path) -> None:
    deadline = time.monotonic() + 180
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}:\n{_tail(log)}")
            try:
                ok = True
                for m in models:
                    async with s.get(f"{url}/v2/models/{m.name}/ready") as r:
                        ok = ok and r.status == 200
                if ok:
                    return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"server not ready in 180 s:\n{_tail(log)}")


def _cpu_seconds(proc: Any) -> float:
    try:
        root = psutil.Process(proc.pid)
        total = 0.0
        for p in [root, *root.children(recursive=True)]:
            t = p.cpu_times()
            total += t.user + t.system
        return total
    except psutil.NoSuchProcess:
        return 0.0


async def _poll_stats(url: str, models: list[Model], trace: list[dict[str, Any]]) -> None:
    async with aiohttp.ClientSession() as s:
        t0 = time.monotonic()
        while True:
            row: dict[str, Any] = {"t_s": round(time.monotonic() - t0, 2)}
            for m in models:
                async with s.get(f"{url}/v2/models/{m.name}/stats") as r:
                    doc = await r.json()
                row[m.name] = {k: doc.get(k) for k in ("cores", "window_response_ms", "queued",
                                                       "core_seconds", "window_compute_p50_ms", "window_p50_ms",
                                                       "quota", "throttled_s")}  # fmt: skip
            trace.append(row)
            await asyncio.sleep(1.0)


def _pattern(model: str, phase_s: float, scale: float) -> tuple[Step, ...]:
    low, high = {"mlp": (40.0, 300.0), "cnn": (15.0, 80.0)}[model]
    return (Step(rate=low * scale, duration_s=phase_s), Step(rate=high * scale, duration_s=phase_s),
            Step(rate=low * scale, duration_s=phase_s))  # fmt: skip


async def _run_contender(
    c: Contender, models: list[Model], work: Path, *, phase_s: float, scale: float, seed: int
) -> dict[str, Any]:
    log = work / f"{c.name}.log"
    start = _start_mlserver if c.kind == "mlserver" else _start_roma
    proc, url = start(work, models, c, log)
    try:
        await _wait_ready(url, models, proc, log)
        # Warm up: a few seconds of low load, not measured.
        await asyncio.gather(*(run_load(url, model=m.name, steps=(Step(rate=10, duration_s=3),),
                                        samples=m.x, binary=False, progress=False) for m in models))  # fmt: skip
        trace: list[dict[str, Any]] = []
        poller = asyncio.create_task(_poll_stats(url, models, trace)) if c.kind == "roma" else None
        cpu0, t0 = _cpu_seconds(proc), time.monotonic()
        reports = await asyncio.gather(*(
            run_load(url, model=m.name, steps=_pattern(m.name, phase_s, scale), samples=m.x,
                     binary=False, sla_ms=SLA_MS[m.name], seed=seed + i, progress=False)
            for i, m in enumerate(models)
        ))  # fmt: skip
        wall, cpu = time.monotonic() - t0, _cpu_seconds(proc) - cpu0
        if poller is not None:
            poller.cancel()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    result: dict[str, Any] = {"contender": c.name, "settings": c.settings, "wall_s": wall,
                              "cpu_seconds": cpu, "models": {}, "trace": trace}  # fmt: skip
    for m, report in zip(models, reports, strict=True):
        doc = report.to_json()
        per = {k: doc[k] for k in ("sent", "ok", "shed", "errors", "p50_ms", "p95_ms", "p99_ms",
                                   "sla_ms", "sla_violation_share", "windows_violating_share")}  # fmt: skip
        per["low_load_p50_ms"] = doc["steps"][0]["p50_ms"]
        per["windows"] = doc["windows"]
        if trace:
            first, last = trace[0][m.name], trace[-1][m.name]
            per["core_seconds"] = (last["core_seconds"] or 0) - (first["core_seconds"] or 0)
            computes = [row[m.name]["window_compute_p50_ms"] for row in trace[: int(phase_s)]
                        if row[m.name]["window_compute_p50_ms"] is not None]  # fmt: skip
            per["low_load_compute_p50_ms"] = float(np.median(computes)) if computes else None
            inside = [row[m.name]["window_p50_ms"] for row in trace[: int(phase_s)]
                      if row[m.name]["window_p50_ms"] is not None]  # fmt: skip
            per["low_load_server_p50_ms"] = float(np.median(inside)) if inside else None
        else:
            per["core_seconds"] = None
        result["models"][m.name] = per
    allocated = [result["models"][m.name]["core_seconds"] for m in models]
    result["core_seconds"] = (
        sum(allocated) if c.allocates and all(a is not None for a in allocated) else 2.0 * wall
    )
    result["windows_violating_share"] = float(np.mean(
        [result["models"][m.name]["windows_violating_share"] or 0.0 for m in models]))  # fmt: skip
    return result


# ROMA may give one model the whole node (2 cores) when the other needs less; static-max splits
# the node evenly, 1 core each, all the time.
CORES_PI = {"initial": 0.5, "min": 0.1, "max": 2.0}


def contenders(trial: int) -> list[Contender]:
    """Trial ``trial`` of each tunable contender, and the fixed baselines on trial 0."""
    gains = [(0.3, 0.6), (0.6, 1.2), (0.15, 0.3)][trial]
    waits = [0.002, 0.010, 0.0][trial]
    out = [
        Contender(f"roma#{trial}", "roma", {"cores": CORES_PI, "kp": gains[0], "ki": gains[1]}),
        Contender(f"mlserver#{trial}", "mlserver", {"max_batch_time": waits}, allocates=False),
    ]
    if trial == 0:
        out += [
            Contender("static-max", "roma",
                      {"cores": {"initial": 1.0, "min": 1.0, "max": 1.0}, "mode": "static"}),
            Contender("static-min", "roma",
                      {"cores": {"initial": 0.2, "min": 0.2, "max": 0.2}, "mode": "static"}),
            Contender("one-worker", "roma", {"cores": {"initial": 1.0, "min": 1.0, "max": 1.0},
                                             "mode": "static", "quota": False}, allocates=False),
            # ROMA with the kernel's CPU quota (cgroups) instead of the user-space one: reported
            # beside the others, at the first trial's gains; not part of the verdict.
            Contender("roma-kernel-quota", "roma",
                      {"cores": CORES_PI, "kp": 0.3, "ki": 0.6, "cgroup": "auto"}),
        ]  # fmt: skip
    return out


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda r: (r["windows_violating_share"], r["core_seconds"]))


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="roma-bench-"))
    models = _train_models(work)
    phase = 5.0 if args.quick else args.phase_s
    scale = args.scale if args.scale is not None else (0.5 if args.quick else 1.0)
    tuning: dict[str, list[dict[str, Any]]] = {"roma": [], "mlserver": []}
    final: list[dict[str, Any]] = []
    for trial in range(args.trials):
        for c in contenders(trial):
            calibration = c.kind in ("roma", "mlserver") and "#" in c.name
            print(f"running {c.name} ...", flush=True)
            r = await _run_contender(c, models, work, phase_s=phase, scale=scale, seed=args.seed)
            print(f"  {c.name}: windows violating {r['windows_violating_share']:.3f}, "
                  f"core-seconds {r['core_seconds']:.1f}, cpu {r['cpu_seconds']:.1f} s", flush=True)  # fmt: skip
            (tuning[c.name.split("#")[0]] if calibration else final).append(r)
    for family, runs in tuning.items():
        best = _best(runs)
        final.insert(0, {**best, "contender": family, "tuning": [
            {"trial": r["contender"], "settings": r["settings"],
             "windows_violating_share": r["windows_violating_share"],
             "core_seconds": r["core_seconds"]} for r in runs]})  # fmt: skip
    return _verdict(final, work)


def _verdict(runs: list[dict[str, Any]], work: Path) -> dict[str, Any]:
    by = {r["contender"]: r for r in runs}
    roma, smax, peer = by["roma"], by["static-max"], by.get("mlserver")
    ok_windows = roma["windows_violating_share"] <= 0.05
    saving = 1 - roma["core_seconds"] / smax["core_seconds"]
    overhead = None
    m = roma["models"]["mlp"]
    if m.get("low_load_compute_p50_ms") is not None and m["low_load_p50_ms"] is not None:
        overhead = m["low_load_p50_ms"] - m["low_load_compute_p50_ms"]
    inside = None
    if m.get("low_load_compute_p50_ms") is not None and m.get("low_load_server_p50_ms") is not None:
        inside = m["low_load_server_p50_ms"] - m["low_load_compute_p50_ms"]
    return {
        "benchmark": "roma",
        "machine": {"cpus": os.cpu_count()},
        "sla_ms": SLA_MS,
        "contenders": runs,
        "targets": {
            "roma_windows_violating_share": roma["windows_violating_share"],
            "roma_within_5pct": ok_windows,
            "core_seconds_saving_vs_static_max": saving,
            "saving_at_least_30pct": saving >= 0.30,
            "fewer_violations_than_peer": None
            if peer is None
            else roma["windows_violating_share"] < peer["windows_violating_share"],
            "static_max_windows_violating_share": smax["windows_violating_share"],
            "serving_overhead_p50_ms_small_model": overhead,
            "server_internal_overhead_p50_ms_small_model": inside,
        },
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roma = next(r for r in result["contenders"] if r["contender"] == "roma")
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for name in ("mlp", "cnn"):
        w = roma["models"][name]["windows"]
        axes[0].plot([x["t_s"] for x in w], [x["p95_ms"] for x in w], label=f"{name} p95")
        axes[0].axhline(SLA_MS[name], linestyle="--", linewidth=0.8)
        axes[1].plot([row["t_s"] for row in roma["trace"]],
                     [row[name]["cores"] for row in roma["trace"]], label=f"{name} cores")  # fmt: skip
    axes[0].set_ylabel("p95 per 1 s window (ms)")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("cores (ROMA)")
    axes[1].set_xlabel("time (s)")
    for ax in axes:
        ax.legend(loc="upper right")
    fig.suptitle("ROMA under a low-high-low step load")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--phase-s", type=float, default=20.0, help="seconds per load step")
    parser.add_argument("--scale", type=float, default=None, help="load multiplier (default 1)")
    parser.add_argument("--trials", type=int, default=2, choices=[1, 2, 3])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    out = args.out or (None if args.quick else RESULTS)
    summary = {k: v for k, v in result["targets"].items()}
    print(json.dumps(summary, indent=2))
    rows = [(r["contender"], r["windows_violating_share"], r["core_seconds"], r["cpu_seconds"])
            for r in result["contenders"]]  # fmt: skip
    for name, share, core_s, cpu in rows:
        print(
            f"{name:12s} windows violating {share:6.3f}  core-seconds {core_s:7.1f}  cpu {cpu:6.1f} s"
        )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "roma.json").write_text(json.dumps(result, indent=1) + "\n")
        plot(result, out / "roma.png")
        print(f"wrote {out / 'roma.json'} and {out / 'roma.png'}")


if __name__ == "__main__":
    main()
