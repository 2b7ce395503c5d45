"""The controller's quantiser with hysteresis; the runner with control off (a benchmark's
contenders)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.dynaspark import (
    ControlSettings,
    JobController,
    JobProfile,
    StageController,
    StageProfile,
)
from cloud.dynaspark.controller import quantise
from cloud.dynaspark.runner import RunSettings, prepare


def test_quantise_steps_up_only_past_the_deadband_and_down_only_below_the_level() -> None:
    # From 1 executor of 1 core: 1.4 holds, 1.6 asks for a second.
    assert quantise(1.4, 1, 1, 0.5) == 1
    assert quantise(1.6, 1, 1, 0.5) == 2
    # From 2: anything above 1 holds 2; at or below 1, back to 1.
    assert quantise(1.2, 2, 1, 0.5) == 2
    assert quantise(1.0, 2, 1, 0.5) == 1
    # Executors of 4 cores: 5 (one core past 4) holds 4; 6.5 asks for 8.
    assert quantise(5.0, 4, 4, 0.5) == 4
    assert quantise(6.5, 4, 4, 0.5) == 8
    # No deadband: plain rounding up.
    assert quantise(1.01, 1, 1, 0.0) == 2


@given(st.floats(0.0, 64.0), st.integers(1, 16), st.sampled_from([1, 2, 4]),
       st.floats(0.0, 0.99))  # fmt: skip
def test_quantise_is_whole_quanta_within_one_level_of_plain_rounding(
    value: float, current_q: int, quantum: int, deadband: float
) -> None:
    current = current_q * quantum
    q = quantise(value, current, quantum, deadband)
    assert q % quantum == 0
    plain = quantise(value, current, quantum, 0.0)
    assert plain >= q  # hysteresis never asks for more than rounding up does
    assert plain - q <= quantum  # and never a whole level less


def test_a_small_positive_error_at_a_ramps_start_does_not_add_an_executor() -> None:
    stage = StageProfile(key="s#0", name="s", tasks=16, duration_s=0.0, task_s=64.0, task_cv=0.3)

    def first_steps(deadband: float) -> list[int]:
        settings = ControlSettings(max_cores=2, deadband=deadband, lead_s=0.0)
        c = StageController(stage, start_s=0.0, deadline_s=80.0, planned_cores=1,
                            settings=settings)  # fmt: skip
        # Progress counts completed tasks: none before a task's 4 s, while the ramp rises.
        return [c.step(float(t), 0.0, 16).cores for t in range(0, 4)]

    assert max(first_steps(0.0)) == 2  # the old quantiser's churn
    assert first_steps(0.5) == [1, 1, 1, 1]


def test_deadband_must_be_a_fraction_of_a_quantum() -> None:
    with pytest.raises(ValueError, match="deadband"):
        ControlSettings(deadband=1.0)


def test_control_off_runs_a_contender_on_a_cluster_master_with_its_profile(
    tmp_path: Path,
) -> None:
    profile = JobProfile(script="job.py", cores=2, wall_s=10.0, stages=(
        StageProfile(key="s#0", name="s", tasks=4, duration_s=5.0, task_s=10.0, task_cv=0.3),
    ))  # fmt: skip
    path = tmp_path / "job.profile.json"
    path.write_text(json.dumps(profile.to_json()))
    # Even a deadline the profile calls infeasible: a contender without control is not refused.
    off = prepare("job.py", RunSettings(deadline_s=1.0, master="local-cluster[2,1,1024]",
                                        control=False), profile_path=path)  # fmt: skip
    assert not off.control
    assert off.plan is None
    assert off.profile == profile
    assert "control off" in off.note
    # Without a profile it still runs (the progress is then unknown).
    bare = prepare("other.py", RunSettings(deadline_s=1.0, master="local-cluster[2,1,1024]",
                                           control=False))  # fmt: skip
    assert bare.profile is None
    assert not bare.control


def two_stages() -> JobProfile:
    return JobProfile(script="job.py", cores=8, wall_s=0.0, stages=(
        StageProfile(key="a#0", name="a", tasks=64, duration_s=0.0, task_s=64.0, task_cv=0.3),
        StageProfile(key="b#0", name="b", tasks=64, duration_s=0.0, task_s=64.0, task_cv=0.3),
    ))  # fmt: skip


def test_job_level_control_follows_the_jobs_progress_against_its_ramp() -> None:
    settings = ControlSettings(max_cores=8, lead_s=0.0, hold_s=0.0, level="job")

    def after(progress: float) -> int:
        c = JobController(two_stages(), 100.0, settings)
        c.stage_started("a#0", 0.0, 64)
        c.step(0.0, {"a#0": (0.0, 64)})
        return c.step(40.0, {"a#0": (progress, round(64 * (1 - progress)))})

    # 128 core-seconds over 95 s: 2 cores on the ramp; behind it more, ahead of it fewer.
    assert after(0.0) > after(0.7) > after(1.0)
    assert after(1.0) == 1
    assert after(0.0) == 8


def test_a_raise_is_not_taken_back_while_its_executors_start() -> None:
    settings = ControlSettings(max_cores=8, lead_s=10.0, level="job")
    c = JobController(two_stages(), 100.0, settings)
    c.stage_started("a#0", 0.0, 64)
    assert c.step(0.0, {"a#0": (0.0, 64)}) == 2
    raised = c.step(30.0, {"a#0": (0.0, 64)})  # far behind: more cores
    assert raised > 2
    # Far ahead 5 s later: the new executors are still starting, the total holds.
    assert c.step(35.0, {"a#0": (1.0, 0)}) == raised
    # Wanted lower from 41 s (the integral wound up behind), made hold_s (= lead_s) later.
    assert c.step(41.0, {"a#0": (1.0, 0)}) == raised
    assert c.step(46.0, {"a#0": (1.0, 0)}) == raised
    assert c.step(51.0, {"a#0": (1.0, 0)}) < raised


def test_a_decrease_is_made_only_once_wanted_for_hold_s() -> None:
    settings = ControlSettings(max_cores=8, lead_s=0.0, hold_s=6.0, ki=0.0, level="job")

    def raised() -> tuple[JobController, int]:
        c = JobController(two_stages(), 100.0, settings)
        c.stage_started("a#0", 0.0, 64)
        first = c.step(0.0, {"a#0": (0.0, 64)})
        up = c.step(20.0, {"a#0": (0.0, 64)})  # behind: more cores
        assert up > first
        return c, up

    c, up = raised()
    assert c.step(25.0, {"a#0": (1.0, 0)}) == up  # ahead: a decrease is wanted from 25 s
    assert c.step(28.0, {"a#0": (1.0, 0)}) == up  # 3 s < hold_s
    assert c.step(31.0, {"a#0": (1.0, 0)}) < up  # 6 s: made
    c, up = raised()
    assert c.step(25.0, {"a#0": (1.0, 0)}) == up
    assert c.step(27.0, {"a#0": (0.0, 64)}) >= up  # behind again: the wish is forgotten
    up = c.step(28.0, {"a#0": (0.0, 64)})
    assert c.step(29.0, {"a#0": (1.0, 0)}) == up  # wanted again from 29 s
    assert c.step(33.0, {"a#0": (1.0, 0)}) == up  # 8 s since 25, 4 s since 29
    assert c.step(35.0, {"a#0": (1.0, 0)}) < up


def test_hold_must_be_finite_and_not_negative() -> None:
    with pytest.raises(ValueError, match="hold_s"):
        ControlSettings(hold_s=-1.0)


def test_level_is_stage_or_job() -> None:
    with pytest.raises(ValueError, match="level"):
        ControlSettings(level="wave")
