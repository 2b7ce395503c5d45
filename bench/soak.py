"""Soak: the fleet demo for 30 minutes with churn; memory and connections must stay flat.

Runs ``hyperfleet demo --fleet mixed-50`` with a target it cannot reach (so rounds go on for
the whole budget; the emulated devices go offline and come back by their availability model)
and, beside it, three real ``hyperfleet agent`` processes of which one is killed (kill -9) and
started again every ``--churn-s`` seconds. Every ``--sample-s`` seconds it records each
process's resident memory and open file descriptors (psutil) and the broker's TCP connections.
Writes ``bench/results/soak.json``; the verdict compares the last fifth of the run with the
fifth after warm-up (growth of each process's RSS, connections back to the same count).

    make soak                                  # 30 minutes
    .venv/bin/python bench/soak.py --duration 300 --out /tmp/soak.json   # a short look
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent
TIME_SCALE = 0.25
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def hyperfleet(*args: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as f:
        return subprocess.Popen([sys.executable, "-m", "hyperfleet", *args], stdout=f,
                                stderr=subprocess.STDOUT, env=ENV)  # fmt: skip


def role(proc: psutil.Process) -> str | None:
    """What a process of the demo's tree is, by its command line."""
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return None
    if cmd and Path(cmd[0]).name == "mosquitto":
        return "broker"
    if "hyperfleet" in cmd:
        i = cmd.index("hyperfleet")
        if i + 1 < len(cmd):
            return {"agents": "fleet", "coordinator": "coordinator", "serve": "roma"}.get(
                cmd[i + 1]
            )
    return None


def sample(demo: psutil.Process, t: float) -> dict[str, Any]:
    row: dict[str, Any] = {"t_s": round(t, 1)}
    try:
        tree = [demo, *demo.children(recursive=True)]
    except psutil.Error:
        return row
    for proc in tree:
        name = "demo" if proc.pid == demo.pid else role(proc)
        if name is None:
            continue
        try:
            with proc.oneshot():
                row[f"{name}_rss_mb"] = round(proc.memory_info().rss / 2**20, 1)
                row[f"{name}_fds"] = proc.num_fds()
                if name == "broker":
                    row["broker_connections"] = sum(
                        1 for c in proc.net_connections("tcp") if c.status == "ESTABLISHED"
                    )
        except psutil.Error:
            continue
    return row


def verdict(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    """Each series' mean over the fifth of the run after ``warmup_s`` against its last fifth."""
    rows = [s for s in samples if s["t_s"] >= warmup_s]
    if len(rows) < 10:
        return {"error": "too few samples after warm-up"}
    fifth = max(2, len(rows) // 5)
    early, late = rows[:fifth], rows[-fifth:]
    out: dict[str, Any] = {}
    keys = sorted({k for s in rows for k in s if k != "t_s"})
    for key in keys:
        a = [s[key] for s in early if key in s]
        b = [s[key] for s in late if key in s]
        if not a or not b:
            continue
        ma, mb = sum(a) / len(a), sum(b) / len(b)
        out[key] = {"early": round(ma, 1), "late": round(mb, 1),
                    "growth_pct": round(100 * (mb - ma) / ma, 1) if ma else None}  # fmt: skip
    rss = [v["growth_pct"] for k, v in out.items() if k.endswith("_rss_mb")]
    out["flat"] = bool(rss) and all(g is not None and g < 10 for g in rss)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=1800.0, help="seconds of soak")
    p.add_argument("--sample-s", type=float, default=15.0)
    p.add_argument("--churn-s", type=float, default=60.0)
    p.add_argument("--warmup-s", type=float, default=180.0)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "soak.json")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hyperfleet-soak-"))
    logs = work / "logs"
    logs.mkdir()
    demo_log = logs / "demo.log"
    # The demo's budget is in device-seconds: wall seconds / the time scale.
    budget = (args.duration + 300) / TIME_SCALE
    demo = hyperfleet("demo", "--fleet", "mixed-50", "--data", "numpy", "--time-scale",
                      str(TIME_SCALE), "--target-accuracy", "0.999", "--time-budget", str(budget),
                      "--out", str(work / "demo"), log=demo_log)  # fmt: skip
    url = None
    for _ in range(600):
        m = re.search(r"broker: \S+ at (mqtt://\S+)", demo_log.read_text(errors="replace"))
        if m:
            url = m.group(1)
            break
        if demo.poll() is not None:
            raise SystemExit(f"the demo ended early; see {demo_log}")
        time.sleep(0.5)
    if url is None:
        raise SystemExit(f"the demo never printed its broker; see {demo_log}")
    shard = next((work / "demo" / "data").rglob("agent-000.npz"))
    churners: dict[int, subprocess.Popen[bytes]] = {}

    def start(k: int) -> None:
        churners[k] = hyperfleet("agent", "--id", f"churn-{k}", "--data", str(shard),
                                 "--device-class", "x86-cpu", "--runtime", "numpy",
                                 "--broker", url, log=logs / f"churn-{k}.log")  # fmt: skip

    for k in range(3):
        start(k)
    t0 = time.monotonic()
    samples: list[dict[str, Any]] = []
    kills = 0
    next_churn = args.churn_s
    print(f"soak: {args.duration:.0f} s, files in {work}", flush=True)
    try:
        while (t := time.monotonic() - t0) < args.duration:
            if demo.poll() is not None:
                raise SystemExit(f"the demo ended at {t:.0f} s; see {demo_log}")
            if t >= next_churn:
                k = kills % 3
                churners[k].send_signal(signal.SIGKILL)
                churners[k].wait(10)
                start(k)
                kills += 1
                next_churn += args.churn_s
            row = sample(psutil.Process(demo.pid), t)
            samples.append(row)
            print(json.dumps(row), flush=True)
            time.sleep(args.sample_s)
    finally:
        for proc in [*churners.values(), demo]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*churners.values(), demo]:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    doc = {
        "benchmark": "soak",
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "duration_s": args.duration,
        "churn": {"agents": 3, "every_s": args.churn_s, "kills": kills},
        "fleet": "mixed-50",
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "verdict": verdict(samples, args.warmup_s),
        "samples": samples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc["verdict"], indent=1))
    print(f"wrote {args.out}")
    return 0 if doc["verdict"].get("flat") else 1


if __name__ == "__main__":
    raise SystemExit(main())
