"""dynaSpark's pure core: stage keys and profiles, the feasibility check and the per-stage
deadline heuristic, the stage controller (ramp error, saturation, anti-windup, waves, never
more cores than tasks), the job controller's re-planning, and the cluster simulator."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.dynaspark import (
    ControlSettings,
    DeadlinePolicy,
    DynamicAllocationPolicy,
    InfeasibleDeadline,
    JobController,
    JobProfile,
    ProfileError,
    SimSettings,
    StageController,
    StageProfile,
    StaticPolicy,
    cores_for,
    plan,
    simulate,
    stage_keys,
)


def stage(key: str, tasks: int, work_s: float, cv: float = 0.3) -> StageProfile:
    return StageProfile(key=key, name=key, tasks=tasks, duration_s=0.0, task_s=work_s,
                        task_cv=cv, records_in=tasks * 1000)  # fmt: skip


PROFILE = JobProfile(script="job.py", cores=16, wall_s=60.0, stages=(
    stage("read#0", 64, 64.0), stage("agg#0", 200, 300.0), stage("join#0", 16, 80.0),
    stage("write#0", 32, 20.0),
))  # fmt: skip


def test_stage_keys_follow_call_site_and_position_not_ids() -> None:
    keys = stage_keys(["map at a.py:3", "count at a.py:9", "map at a.py:3"])
    assert keys == ["map at a.py:3#0", "count at a.py:9#0", "map at a.py:3#1"]


def test_profile_round_trips_and_rejects_bad_documents() -> None:
    doc = json.loads(json.dumps(PROFILE.to_json()))
    assert JobProfile.from_json(doc) == PROFILE
    with pytest.raises(ProfileError, match="version"):
        JobProfile.from_json({**doc, "version": 99})
    with pytest.raises(ProfileError, match="tasks"):
        JobProfile.from_json({**doc, "stages": [{**doc["stages"][0], "tasks": 0}]})
    with pytest.raises(ProfileError, match="finite"):
        JobProfile.from_json({**doc, "stages": [{**doc["stages"][0], "task_s": float("nan")}]})
    with pytest.raises(ProfileError, match="unique"):
        JobProfile.from_json({**doc, "stages": [doc["stages"][0], doc["stages"][0]]})
    with pytest.raises(ProfileError, match="JSON"):
        JobProfile.loads("{not json")
    assert PROFILE.matches(["read#0", "new#0"]) == ["new#0"]


def test_nominal_rate_and_waves() -> None:
    s = stage("s", 10, 20.0)  # 2 s a task
    assert s.nominal_rate == pytest.approx(10_000 / 20.0)
    assert s.shortest_s(10) == pytest.approx(2.0)
    assert s.shortest_s(4) == pytest.approx(6.0)  # three waves
    assert s.shortest_s(64) == pytest.approx(2.0)  # cannot use more cores than tasks


def test_an_infeasible_deadline_is_refused_with_the_reason() -> None:
    shortest = PROFILE.shortest_s(16)
    p = plan(PROFILE, deadline_s=shortest * 0.5, max_cores=16)
    assert not p.feasible
    assert "infeasible" in p.reason
    with pytest.raises(InfeasibleDeadline) as info:
        plan(PROFILE, deadline_s=shortest * 0.5, max_cores=16, strict=True)
    assert info.value.shortest_s == pytest.approx(shortest)
    with pytest.raises(ValueError, match="deadline"):
        plan(PROFILE, deadline_s=0, max_cores=16)


def test_stage_deadlines_share_the_time_by_weight_and_add_up_to_alpha_deadline() -> None:
    deadline = PROFILE.shortest_s(16) * 3
    p = plan(PROFILE, deadline_s=deadline, max_cores=16, alpha=0.9)
    assert p.feasible
    assert p.stages[-1].deadline_s == pytest.approx(0.9 * deadline)
    spans = [s.deadline_s - s.start_s for s in p.stages]
    weights = [s.shortest_s(16) for s in PROFILE.stages]
    ratios = [span / w for span, w in zip(spans, weights, strict=True)]
    assert max(ratios) == pytest.approx(min(ratios))  # the same slack factor for every stage
    for planned, profiled, span in zip(p.stages, PROFILE.stages, spans, strict=True):
        assert profiled.shortest_s(planned.cores) <= span + 1e-9  # its cores fit its share
        if planned.cores > 1:  # and one core fewer would not
            assert profiled.shortest_s(planned.cores - 1) > span
    # A looser deadline never asks for more cores.
    looser = plan(PROFILE, deadline_s=deadline * 2, max_cores=16, alpha=0.9)
    assert all(a.cores <= b.cores for a, b in zip(looser.stages, p.stages, strict=True))


def test_replanning_after_a_late_stage_tightens_the_rest() -> None:
    deadline = PROFILE.shortest_s(16) * 3
    first = plan(PROFILE, deadline_s=deadline, max_cores=16)
    late = first.stages[0].deadline_s * 2
    again = plan(PROFILE, deadline_s=deadline, max_cores=16, now_s=late, done={"read#0"})
    assert [s.key for s in again.stages] == ["agg#0", "join#0", "write#0"]
    assert again.stages[0].cores >= first.stages[1].cores


@given(tasks=st.integers(1, 500), work=st.floats(0.1, 1000), span=st.floats(0.1, 500),
       max_cores=st.integers(1, 64))  # fmt: skip
def test_cores_for_is_the_fewest_that_fit(
    tasks: int, work: float, span: float, max_cores: int
) -> None:
    s = stage("s", tasks, work)
    c = cores_for(s, span, max_cores=max_cores)
    assert 1 <= c <= max_cores
    if s.shortest_s(c) <= span and c > 1:
        assert s.shortest_s(c - 1) > span


def controller(max_cores: int = 16) -> StageController:
    return StageController(stage("agg#0", 200, 300.0), start_s=0.0, deadline_s=60.0,
                           planned_cores=5, settings=ControlSettings(max_cores=max_cores))  # fmt: skip


def test_behind_the_ramp_adds_cores_and_ahead_removes_them() -> None:
    on_time = controller()
    on_time.step(0.0, 0.0, 200)
    base = on_time.step(30.0, 0.5, 100).cores
    behind = controller()
    behind.step(0.0, 0.0, 200)
    assert behind.step(30.0, 0.2, 160).cores > base
    ahead = controller()
    ahead.step(0.0, 0.0, 200)
    assert ahead.step(30.0, 0.8, 40).cores < base


def test_saturation_does_not_wind_the_integral_up() -> None:
    c = controller(max_cores=4)
    c.step(0.0, 0.0, 200)
    for t in range(1, 40):  # hopelessly behind: saturated at 4 cores for 40 s
        assert c.step(float(t), 0.01, 198).cores == 4
    assert c.integral <= 1.0
    # Once ahead, it leaves saturation at once (no wound-up integral holding it).
    assert c.step(41.0, 0.99, 2).cores < 4


def test_never_more_cores_than_tasks_left_and_quantised_to_executors() -> None:
    c = StageController(stage("s", 200, 300.0), start_s=0.0, deadline_s=10.0, planned_cores=16,
                        settings=ControlSettings(max_cores=16, quantum=4))  # fmt: skip
    d = c.step(0.0, 0.0, 200)
    assert d.cores % 4 == 0
    assert c.step(9.0, 0.99, 2).cores == 4  # 2 tasks left: one executor of 4 cores at most
    assert c.step(9.5, float("nan"), 2).cores <= 16  # a bad progress reading is clamped


def test_job_controller_replans_when_a_stage_completes_and_reports_unknown_stages() -> None:
    deadline = PROFILE.shortest_s(16) * 3
    jc = JobController(PROFILE, deadline, ControlSettings(max_cores=16))
    jc.stage_started("read#0", 0.0, 64)
    assert 1 <= jc.step(0.0, {"read#0": (0.0, 64)}) <= 16
    jc.stage_completed("read#0", 10.0)
    assert len(jc.plans) == 2
    assert jc.plan.stages[0].key == "agg#0"
    jc.stage_started("surprise#0", 10.0, 8)
    assert jc.unknown == ["surprise#0"]
    assert jc.step(10.0, {}) == 16  # an unknown stage gets every core


SIM = SimSettings(max_cores=16, executor_start_s=5.0)


def test_static_policy_in_the_simulator_costs_cores_times_wall_time() -> None:
    r = simulate(PROFILE, StaticPolicy(16), SIM)
    assert r.finished
    assert [k for k, _, _ in r.stages] == [s.key for s in PROFILE.stages]
    assert r.core_seconds == pytest.approx(16 * r.finish_s)
    assert r.finish_s >= PROFILE.shortest_s(16) * 0.5 + SIM.executor_start_s
    # Fewer cores: slower and never more than the work plus idle time.
    slow = simulate(PROFILE, StaticPolicy(2), SIM)
    assert slow.finish_s > r.finish_s
    assert slow.core_seconds < r.core_seconds
    assert slow.core_seconds >= PROFILE.work_s * 0.5


def test_the_same_seed_draws_the_same_tasks_for_every_policy() -> None:
    a = simulate(PROFILE, StaticPolicy(8), SIM)
    b = simulate(PROFILE, StaticPolicy(8), SIM)
    assert a == b


def test_deadline_policy_meets_a_loose_deadline_with_fewer_core_seconds_than_static_max() -> None:
    deadline = PROFILE.shortest_s(16) * 3 + SIM.executor_start_s
    dyn = simulate(PROFILE, DeadlinePolicy(JobController(PROFILE, deadline,
                                                         ControlSettings(max_cores=16))), SIM)  # fmt: skip
    full = simulate(PROFILE, StaticPolicy(16), SIM)
    assert dyn.finished
    assert dyn.finish_s <= deadline
    assert dyn.core_seconds < full.core_seconds
    assert max(cores for _, cores, _ in dyn.timeline) <= 16


def test_dynamic_allocation_ramps_up_from_its_initial_executors() -> None:
    r = simulate(PROFILE, DynamicAllocationPolicy(min_cores=1, max_cores=16, initial_cores=1), SIM)
    cores = [c for _, c, _ in r.timeline]
    assert r.finished
    assert cores[0] == 1
    assert max(cores) == 16
    assert math.isfinite(r.core_seconds)
