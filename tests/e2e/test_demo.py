"""The demo, as a user runs it: broker, coordinator and agent processes, to a target."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def demo(
    tmp_path: Path, *args: str, timeout: float = 420
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "hyperfleet", "demo", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    return proc, out


def test_demo_with_four_agents_reaches_its_target(tmp_path: Path, mosquitto_binary: str) -> None:
    proc, out = demo(
        tmp_path,
        *("--agents", "4", "--target-accuracy", "0.85", "--time-budget", "240"),
        *("--dashboard", "0"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "REACHED" in proc.stdout
    # The coordinator served its dashboard where the demo said, with ROMA's panel.
    said = re.search(r"^dashboard: (http://127\.0\.0\.1:\d+/)", proc.stdout, re.MULTILINE)
    assert said, proc.stdout[-2000:]
    coordinator_log = (out / "logs" / "coordinator.log").read_text()
    assert f"dashboard at {said.group(1)}" in coordinator_log, coordinator_log[-2000:]
    assert "round   1" in proc.stdout  # live progress was shown
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "reached",
        "final_accuracy",
        "target_accuracy",
        "rounds",
        "wall_s",
        "time_budget_s",
        "agents",
        "model",
    ):
        assert key in summary
    assert summary["reached"] is True
    assert summary["final_accuracy"] >= 0.85
    assert summary["agents"] == 4
    assert summary["rounds"] == len(summary["history"]) >= 1
    model = summary["model"]
    assert Path(model["keras"]).is_file()
    assert Path(model["tflite"]).is_file()
    assert model["tflite_agreement"] >= 0.99
    png = out / "accuracy.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The model it trained is served by ROMA, and its served answers are the exported model's.
    serving = summary["serving"]
    assert serving["served"] is True, proc.stderr[-3000:]
    assert serving["version"] == summary["model"]["version"]
    assert serving["rows"] > 0
    assert serving["requests"] > 0
    assert abs(serving["accuracy"] - summary["final_accuracy"]) <= 0.02
    assert "served digits-mlp" in proc.stdout
    # The data came through the Spark pipeline under a deadline, and the model was served with
    # its statistics: the client sent raw pixel counts.
    preparation = summary["preparation"]
    assert preparation["engine"] == "spark", preparation
    assert preparation["deadline_s"] == 120
    assert preparation["finish_s"] > 0
    assert preparation["core_seconds"] > 0
    assert "data ready: the job finished in" in proc.stdout
    assert (out / "data" / "normalization.json").is_file()
    assert serving["inputs"] == "raw"
    # A stock client, JSON and binary, against the version the demo installed.
    for binary in (False, True):
        accuracy = _triton_accuracy(out, binary=binary)
        assert abs(accuracy - summary["final_accuracy"]) <= 0.02, (binary, accuracy)


def _triton_accuracy(out: Path, *, binary: bool) -> float:
    """Serve the demo's repository again and send its holdout through ``tritonclient.http``."""
    import numpy as np
    import tritonclient.http as triton

    from link import read_shard

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (out / "logs" / "roma-triton.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "hyperfleet", "serve", "--repository", str(out / "serving"),
         "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    try:
        client = triton.InferenceServerClient(url=f"127.0.0.1:{port}")
        for _ in range(600):
            try:
                if client.is_model_ready("digits-mlp"):
                    break
            except Exception:  # not listening yet
                pass
            assert server.poll() is None, (out / "logs" / "roma-triton.log").read_text()
            time.sleep(0.1)
        holdout = read_shard(out / "data" / "holdout.npz")
        stats = json.loads((out / "data" / "normalization.json").read_text())
        raw = holdout.x / np.asarray(stats["scale"]) + np.asarray(stats["offset"])
        correct = 0
        for i in range(0, len(holdout.x), 16):
            rows = np.ascontiguousarray(raw[i : i + 16], dtype=np.float32)
            inp = triton.InferInput("input", list(rows.shape), "FP32")
            inp.set_data_from_numpy(rows, binary_data=binary)
            result = client.infer(
                "digits-mlp", [inp],
                outputs=[triton.InferRequestedOutput("output", binary_data=binary)],
            )  # fmt: skip
            answers = np.argmax(result.as_numpy("output"), axis=1)
            correct += int(np.sum(answers == holdout.y[i : i + 16]))
        return correct / len(holdout.x)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_demo_says_clearly_when_the_target_is_out_of_reach(
    tmp_path: Path, mosquitto_binary: str
) -> None:
    proc, out = demo(
        tmp_path,
        "--agents",
        "2",
        "--runtime",
        "numpy",
        "--target-accuracy",
        "0.999",
        "--time-budget",
        "15",
        "--data",
        "numpy",
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "not reached" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reached"] is False
    assert summary["job_elapsed_s"] <= 15 + 1.0  # the budget is not overrun
