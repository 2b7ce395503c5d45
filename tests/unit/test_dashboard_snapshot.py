"""The dashboard's snapshot, built from registry records and round history (pure, no server)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from coordinator.dashboard import agent_rows, curve_points, job_snapshot
from coordinator.engine import JobProgress, RoundRecord
from coordinator.job import JobSpec
from coordinator.planners import Prediction
from coordinator.registry import Registry
from protocol import Heartbeat, Hello, JobState, Status

HELLO = Hello(device_class="raspberry-pi-5", arch="aarch64", cores=4, memory_bytes=1 << 30)


def beat(session: str = "s1", *, busy: bool = False, load: float = 0.5) -> Heartbeat:
    return Heartbeat(seq=1, busy=busy, load=load, memory_used_bytes=1, session=session)


def record(rnd: int, participants: tuple[str, ...], failures: dict[str, str], **plan: object) -> RoundRecord:  # fmt: skip
    return RoundRecord(
        round=rnd,
        started_s=10.0 * (rnd - 1),
        duration_s=9.5,
        participants=participants,
        results=len(participants) - len(failures),
        failures=failures,
        accuracy=0.5 + 0.1 * rnd,
        loss=1.0,
        aggregated=True,
        bytes_moved=100,
        agent_seconds=1.0,
        plan=plan,
    )


def registry_of_every_status() -> Registry:
    reg = Registry(stale_after_s=30.0)
    for agent_id in ("a-online", "a-busy", "a-silent", "a-offline", "a-clash"):
        reg.on_hello(agent_id, HELLO, 0.0)
        reg.on_status(agent_id, Status(state="online"), 0.0)
    reg.on_heartbeat("a-online", beat(load=1.25), 95.0)
    reg.on_heartbeat("a-busy", beat(busy=True), 95.0)
    reg.on_heartbeat("a-silent", beat(), 50.0)  # 50 s before `now`: past stale_after_s
    reg.on_status("a-offline", Status(state="offline"), 1.0)
    reg.on_heartbeat("a-clash", beat("s1"), 95.0)
    reg.on_heartbeat("a-clash", beat("s2"), 96.0)
    return reg


def test_each_agent_shows_its_status_class_heartbeat_and_load() -> None:
    rows = {r["id"]: r for r in agent_rows(registry_of_every_status(), (), now=100.0)}
    assert {k: r["status"] for k, r in rows.items()} == {
        "a-online": "online",
        "a-busy": "training",
        "a-silent": "silent",
        "a-offline": "offline",
        "a-clash": "clash",
    }
    online = rows["a-online"]
    assert online["device_class"] == "raspberry-pi-5"
    assert online["heartbeat_age_s"] == 5.0
    assert online["load"] == 1.25
    assert rows["a-offline"]["heartbeat_age_s"] is None  # never sent a heartbeat
    assert list(rows) == sorted(rows)


def test_chosen_and_replies_count_the_rounds_with_the_newest_failure() -> None:
    reg = Registry()
    for agent_id in ("a", "b"):
        reg.on_hello(agent_id, HELLO, 0.0)
    history = (
        record(1, ("a", "b"), {}),
        record(2, ("a", "b"), {"b": "timeout: no reply by the round deadline"}),
        record(3, ("a",), {"a": "rejected update: shape"}),
    )
    rows = {r["id"]: r for r in agent_rows(reg, history, now=0.0)}
    assert (rows["a"]["chosen"], rows["a"]["replies"], rows["a"]["failed"]) == (3, 2, 1)
    assert (rows["b"]["chosen"], rows["b"]["replies"], rows["b"]["failed"]) == (2, 1, 1)
    assert rows["a"]["last_failure"] == "round 3: rejected update: shape"
    assert rows["b"]["last_failure"].startswith("round 2: timeout")


def test_the_curve_starts_at_the_initial_model_and_keeps_what_the_planner_predicted() -> None:
    w = (np.zeros(2, dtype=np.float32),)
    progress = JobProgress(
        job_id="j",
        weights=w,
        best_weights=w,
        round=2,
        history=(
            record(1, ("a",), {}),
            record(2, ("a",), {}, predicted_accuracy_at_budget=0.93),
        ),
    )
    points = curve_points(progress, initial_accuracy=0.1)
    assert [p["round"] for p in points] == [0, 1, 2]
    assert [p["t"] for p in points] == [0.0, 9.5, 19.5]
    assert points[0]["accuracy"] == 0.1
    assert [p["predicted_at_budget"] for p in points] == [None, None, 0.93]
    assert points[2]["planned_at"] == 10.0  # when round 2 was planned: its start
    assert curve_points(None) == []


def test_a_snapshot_is_strict_json_before_and_during_a_job() -> None:
    spec = JobSpec.model_validate(
        {
            "job_id": "j",
            "holdout": str(Path("/nonexistent/holdout.npz")),
            "planner": {"name": "hyperfl"},
            "constraints": {"target_accuracy": 0.9, "time_budget_s": 300},
        }
    )
    reg = registry_of_every_status()
    before = job_snapshot(
        spec=spec,
        agents=reg,
        progress=None,
        state=None,
        prediction=None,
        initial_accuracy=None,
        dropped={},
        now=100.0,
    )
    assert before["job"]["status"] == "starting"
    assert before["curve"] == []
    assert before["fleet"] == {"agents": 5, "online": 2, "training": 1, "silent": 1, "offline": 1}
    w = (np.zeros(2, dtype=np.float32),)
    progress = JobProgress(
        job_id="j", weights=w, best_weights=w, round=1, accuracy=0.6, best_accuracy=0.6,
        history=(record(1, ("a-online",), {}, deadline_s=2.5, budget_left_s=math.inf),),
    )  # fmt: skip
    state = JobState(
        status="running", round=1, accuracy=0.6, best_accuracy=0.6, target_accuracy=0.9,
        elapsed_s=9.5, time_budget_s=300.0, message="hello",
    )  # fmt: skip
    during = job_snapshot(
        spec=spec,
        agents=reg,
        progress=progress,
        state=state,
        prediction=Prediction(feasible=True, time_to_target_s=math.nan, accuracy_at_budget=0.95),
        initial_accuracy=0.1,
        dropped={"malformed": 2},
        now=100.0,
    )
    text = json.dumps(during, allow_nan=False)  # no NaN or infinity reaches the page
    assert json.loads(text)["plan"] == {"deadline_s": 2.5, "budget_left_s": None}
    assert during["job"]["message"] == "hello"
    assert during["job"]["dropped"] == {"malformed": 2}
    assert during["prediction"]["predicted_time_to_target_s"] is None
    assert during["prediction"]["predicted_accuracy_at_budget"] == 0.95
