"""``hyperfleet loadgen`` against a real ``hyperfleet serve`` process: what it reports is what
the server saw; a model that is not served and a server that is not there fail before any load."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cloud.roma.loadgen import (
    LoadgenError,
    Record,
    Step,
    parse_steps,
    run_load,
    schedule,
    summarise,
)

from .conftest import ServerProcess, TrainedModels, free_port, get_json


def test_the_report_counts_what_the_server_answered(
    roma_server: ServerProcess, digits_models: TrainedModels
) -> None:
    _, before = get_json(f"{roma_server.url}/v2/models/digits/stats")
    report = asyncio.run(
        run_load(
            roma_server.url,
            model="digits",
            steps=(Step(rate=40, duration_s=2),),
            samples=digits_models.x,
            binary=True,
            sla_ms=50,
            progress=False,
        )
    )
    _, after = get_json(f"{roma_server.url}/v2/models/digits/stats")
    doc = report.to_json()
    assert isinstance(before, dict)
    assert isinstance(after, dict)
    assert doc["sent"] == len(report.records) > 0
    assert doc["ok"] == doc["sent"]
    ok_before, ok_after = before["ok"], after["ok"]
    assert isinstance(ok_before, int)
    assert isinstance(ok_after, int)
    assert ok_after - ok_before == doc["ok"]
    assert doc["p50_ms"] <= doc["p95_ms"] <= doc["p99_ms"] <= doc["max_ms"]
    assert len(doc["steps"]) == 1
    assert doc["steps"][0]["sent"] == doc["sent"]
    assert 0 <= doc["sla_violation_share"] <= 1


def test_an_unknown_model_or_server_fails_before_the_load() -> None:
    port = free_port()
    with pytest.raises(LoadgenError, match="cannot reach"):
        asyncio.run(run_load(f"http://127.0.0.1:{port}", model="m",
                             steps=(Step(rate=1, duration_s=1),), progress=False))  # fmt: skip


def test_an_unknown_model_is_named(roma_server: ServerProcess) -> None:
    with pytest.raises(LoadgenError, match="404"):
        asyncio.run(run_load(roma_server.url, model="nope", steps=(Step(rate=1, duration_s=1),),
                             progress=False))  # fmt: skip


def test_the_cli_prints_and_writes_its_report(
    roma_server: ServerProcess, digits_models: TrainedModels, tmp_path: Path
) -> None:
    samples = tmp_path / "x.npy"
    np.save(samples, digits_models.x[:50])
    out = tmp_path / "load.json"
    done = subprocess.run(
        [sys.executable, "-m", "hyperfleet", "loadgen", roma_server.url, "--model", "digits",
         "--steps", "20:1,60:1", "--samples", str(samples), "--sla-ms", "50", "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    written = json.loads(out.read_text())
    assert printed["sent"] == written["sent"] > 0
    assert [s["rate"] for s in written["steps"]] == [20.0, 60.0]
    bad = subprocess.run(
        [sys.executable, "-m", "hyperfleet", "loadgen", roma_server.url, "--model", "digits",
         "--steps", "fast:1"], capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 64
    assert "RATE:SECONDS" in bad.stderr


def test_steps_parse_and_arrivals_are_poisson_at_their_rate() -> None:
    steps = parse_steps("100:20, 400:5")
    assert steps == (Step(rate=100, duration_s=20), Step(rate=400, duration_s=5))
    times = schedule(steps, seed=3)
    first, second = np.sum(times < 20), np.sum(times >= 20)
    for count, expected in ((first, 2000), (second, 2000)):  # mean 2000, sd ~45
        assert abs(count - expected) < 5 * np.sqrt(expected)
    assert np.all(np.diff(times) > 0)
    for bad in ("", "10", "0:5", "5:-1", "a:b"):
        with pytest.raises(ValueError, match=r"step|no steps"):
            parse_steps(bad)


def test_summary_of_hand_made_records() -> None:
    records = [Record(sent_s=0.1 * i, latency_s=0.001 * (i + 1), status=200) for i in range(10)]
    records += [Record(sent_s=1.5, latency_s=0.0, status=429),
                Record(sent_s=1.6, latency_s=10.0, status=0, error="timeout")]  # fmt: skip
    doc = summarise(records, sla_ms=5.0, window_s=1.0, duration_s=2.0)
    assert (doc["sent"], doc["ok"], doc["shed"]) == (12, 10, 1)
    assert doc["errors"] == {"timeout": 1}
    assert doc["sla_violation_share"] == pytest.approx(0.5)  # 6..10 ms of the ten
    assert doc["windows_violating_share"] == 1.0  # the one judged window's p95 is 9.55 ms
    assert [w["shed"] for w in doc["windows"]] == [0, 1]
