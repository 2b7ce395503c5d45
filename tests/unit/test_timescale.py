"""The coordinator's clock in device-seconds (:mod:`coordinator.timescale`): conversions at the
edges, announced figures converted between scales, and the same seeded job planning the same
rounds at time scales 0.25 and 1.0.

The invariance test runs the real planner (:func:`~coordinator.planners.make_planner` from a job
file's fields), real device emulators (their transfer, work-cut and rate-process code) on a clock
the test advances, and the coordinator's own conversion of replies; only the MQTT hop and the
model's real training are left out, so nothing waits on a real clock.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from agent.device_class import load_device_class
from agent.emulation import DeviceEmulator
from coordinator.engine import JobProgress, RoundRecord, start
from coordinator.errors import JobConfigError
from coordinator.fleet import RoundReplies
from coordinator.job import JobSpec, load_job
from coordinator.planners import HyperFLPlanner, make_planner
from coordinator.planners.profiles import ProfileBook
from coordinator.registry import AgentRecord
from coordinator.timescale import TimeScale
from protocol import Hello, TrainRes, Weights

WEIGHTS: Weights = (np.zeros(3, dtype=np.float32),)
REAL_BYTES = 5_000
WIRE_BYTES = 14_000_000
SIM_WIRE_BYTES = 2_000_000  # small enough that every class can make some rounds
CLASSES = ("x86-gpu-server", "x86-cpu", "jetson-orin-nano", "raspberry-pi-5")


Trace = tuple[
    tuple[str, ...], tuple[tuple[str, int | None, int], ...], float, tuple[str, ...], float
]
"""One round: participants, (agent, steps, batch) planned, deadline (device s), who replied in
time, the round's duration (device s)."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def hello(profile: dict[str, float], num_examples: int = 40, label: int = 0) -> Hello:
    return Hello(
        device_class="x",
        arch="x86_64",
        cores=1,
        memory_bytes=1,
        num_examples=num_examples,
        profile=profile,
        label_counts=tuple(num_examples if i == label else 0 for i in range(12)),
    )


# ------------------------------------------------------------------------------ conversions


def test_time_scale_converts_both_ways_and_refuses_nonsense() -> None:
    ts = TimeScale(0.25)
    assert ts.to_wall(60.0) == 15.0
    assert ts.to_device(15.0) == 60.0
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="time scale"):
            TimeScale(bad)


def test_replies_come_back_in_device_seconds() -> None:
    replies = RoundReplies(
        results={"a": TrainRes(weights=WEIGHTS, num_examples=8, steps=1, loss=0.5, train_s=0.5)},
        failures={"b": "timeout"},
        reply_s={"a": 1.25},
        bytes_sent=10,
        bytes_received=20,
    )
    device = TimeScale(0.25).device_replies(replies)
    assert device.results["a"].train_s == 2.0
    assert device.reply_s == {"a": 5.0}
    assert device.failures == {"b": "timeout"}
    assert (device.bytes_sent, device.bytes_received) == (10, 20)
    assert replies.reply_s == {"a": 1.25}  # the fleet's own record is left alone
    assert TimeScale(1.0).device_replies(replies) is replies


def test_announced_figures_are_converted_from_the_agents_scale_to_the_jobs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nominal = load_device_class("jetson-orin-nano").emulation
    at_quarter = hello(nominal.announced(time_scale=0.25))
    # A job counting at the fleet's own scale takes the nominal figures as they are.
    same = ProfileBook(model_bytes=REAL_BYTES, time_scale=0.25).ensure("a", at_quarter)
    assert same.train_rate == nominal.train_rate
    assert not caplog.records
    # A job counting wall seconds (scale 1) sees the quarter-scale device four times as fast,
    # and says once that its seconds are not the fleet's device-seconds.
    book = ProfileBook(model_bytes=REAL_BYTES, time_scale=1.0)
    wall = book.ensure("a", at_quarter)
    book.ensure("b", at_quarter)
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "time_scale = 0.25" in caplog.records[0].getMessage()
    assert wall.train_rate == pytest.approx(4 * nominal.train_rate)
    assert wall.comm_s == pytest.approx(same.comm_s / 4)
    # A hello with no time scale counts as scale 1.
    plain = ProfileBook(model_bytes=REAL_BYTES).ensure("a", hello(nominal.announced()))
    assert plain.train_rate == nominal.train_rate


def test_the_link_is_seeded_with_the_announced_emulated_model_size() -> None:
    nominal = load_device_class("raspberry-pi-5").emulation  # 5 Mbit/s up, 20 down, 80 ms
    book = ProfileBook(model_bytes=REAL_BYTES)
    big = book.ensure("big", hello(nominal.announced(wire_bytes=WIRE_BYTES)))
    small = book.ensure("small", hello(nominal.announced()))
    bits = WIRE_BYTES * 8
    assert big.comm_s == pytest.approx(bits / 20e6 + bits / 5e6 + 0.080)
    assert small.comm_s == pytest.approx(REAL_BYTES * 8 / 20e6 + REAL_BYTES * 8 / 5e6 + 0.080)


def job_spec(scale: float, **emulation: float) -> JobSpec:
    return JobSpec.model_validate(
        {
            "job_id": "scaled",
            "holdout": "unused.npz",
            "seed": 3,
            "planner": {"name": "hyperfl", "fairness_rounds": 4, "label_rounds": 3},
            "rounds": {"participants": 4, "round_timeout_s": 60, "batch_size": 8},
            "constraints": {"target_accuracy": 0.95, "time_budget_s": 5000},
            "emulation": {"time_scale": scale, **emulation},
        }
    )


def test_the_job_file_names_its_time_scale_and_the_planner_counts_in_its_device_seconds(
    tmp_path: Path,
) -> None:
    planner = make_planner(job_spec(0.25), model_bytes=REAL_BYTES)
    assert isinstance(planner, HyperFLPlanner)
    assert planner.s.time_scale == 0.25
    assert planner.profiles.time_scale == 0.25
    # Deadline bounds stay in device-seconds: the wall ones are these times the scale.
    assert planner.s.max_deadline_s == 60.0
    path = tmp_path / "job.toml"
    path.write_text(
        'job_id = "j"\nholdout = "h.npz"\n[constraints]\ntarget_accuracy = 0.9\n'
        "time_budget_s = 10\n[emulation]\ntime_scale = 0\n"
    )
    with pytest.raises(JobConfigError, match=r"emulation\.time_scale"):
        load_job(path)
    path.write_text(path.read_text().replace("time_scale = 0", "speed = 2"))
    with pytest.raises(JobConfigError, match=r"emulation\.speed"):
        load_job(path)


# ------------------------------------------------------------------------------ invariance


def simulate(scale: float, *, job_scale: float | None = None, rounds: int = 25) -> list[Trace]:
    """One seeded job on 12 emulated devices (three of each shipped class, 2 MB transfers,
    default variance and load), stepped the way the coordinator and the agents do
    it: plan in device-seconds, send ``timeout x scale`` wall seconds of budget, let each
    emulator download, cut its work to the deadline at its drawn rate, train and upload on the
    wall clock, and hand the replies back through :class:`TimeScale`."""
    spec = job_spec(scale if job_scale is None else job_scale)
    planner = make_planner(spec, model_bytes=REAL_BYTES)
    ts = TimeScale(spec.emulation.time_scale)
    clock = FakeClock()
    emus: dict[str, DeviceEmulator] = {}
    records: list[AgentRecord] = []
    for cls in CLASSES:
        nominal = load_device_class(cls).emulation
        for i in range(3):
            agent_id = f"{cls}-{i}"
            emus[agent_id] = DeviceEmulator(
                nominal,
                seed=17 * i + len(cls),
                time_scale=scale,
                clock=clock,
                wire_bytes=SIM_WIRE_BYTES,
            )
            profile = nominal.announced(time_scale=scale, wire_bytes=SIM_WIRE_BYTES)
            records.append(
                AgentRecord(agent_id, hello=hello(profile, 30 + 5 * i, len(records)), online=True)
            )
    progress: JobProgress = start("scaled", WEIGHTS)
    compute = 0.0
    trace: list[Trace] = []
    for rnd in range(1, rounds + 1):
        t = progress.elapsed_s
        plan = planner.plan(progress, records, budget_left_s=5000 - t, train_options={})
        wall_timeout = ts.to_wall(plan.timeout_s)
        replies = RoundReplies()
        examples = 0
        for agent_id in plan.participants:
            emu = emus[agent_id]
            n = next(r.num_examples for r in records if r.agent_id == agent_id)
            down = emu.download_s(REAL_BYTES)
            cfg = emu.plan_work(plan.configs[agent_id], n, wall_timeout - down, REAL_BYTES)
            steps = cfg.local_steps or 0
            if steps == 0:
                replies.failures[agent_id] = "no_time: the deadline left no time for one step"
                continue
            train = emu.compute_s(steps * cfg.batch_size)
            replies.results[agent_id] = TrainRes(
                weights=WEIGHTS,
                num_examples=steps * cfg.batch_size,
                steps=steps,
                loss=1.0 / rnd,
                train_s=train,
            )
            replies.reply_s[agent_id] = down + train + emu.upload_s(REAL_BYTES)
            examples += steps * cfg.batch_size
        wall = wall_timeout if replies.failures else max(replies.reply_s.values(), default=0.0)
        clock.now += wall
        duration = ts.to_device(wall)
        compute += examples
        record = RoundRecord(
            round=rnd,
            started_s=t,
            duration_s=duration,
            participants=plan.participants,
            results=len(replies.results),
            failures=dict(replies.failures),
            accuracy=0.95 * (1 - math.exp(-compute / 4000)),
            loss=1.0 / rnd,
            aggregated=bool(replies.results),
            bytes_moved=0,
            agent_seconds=0.0,
            examples=examples,
        )
        planner.observe(plan, ts.device_replies(replies), record)
        progress = JobProgress(
            job_id="scaled",
            weights=WEIGHTS,
            best_weights=WEIGHTS,
            round=rnd,
            elapsed_s=t + duration,
        )
        trace.append(
            (
                plan.participants,
                tuple((a, c.local_steps, c.batch_size) for a, c in sorted(plan.configs.items())),
                round(plan.timeout_s, 9),
                tuple(sorted(replies.results)),
                round(duration, 9),
            )
        )
    return trace


def test_the_same_seeded_job_plans_the_same_rounds_at_time_scales_quarter_and_one() -> None:
    quarter, life = simulate(0.25), simulate(1.0)
    assert quarter == life
    # ... and the job is not trivial: two classes take part, deadlines vary (some at the
    # planner's minimum, 0.2 device-seconds: 0.05 s of wall time at 0.25), some replies miss.
    classes = {a.rsplit("-", 1)[0] for participants, *_ in life for a in participants}
    assert {"x86-gpu-server", "x86-cpu"} <= classes
    timeouts = [timeout for _, _, timeout, *_ in life]
    assert len(set(timeouts)) > 3
    assert min(timeouts) == pytest.approx(0.2)
    assert any(set(participants) != set(ok) for participants, _, _, ok, _ in life)


def test_a_job_that_ignores_its_fleets_scale_plans_other_rounds() -> None:
    """The check above can fail: a job left at scale 1 on a fleet at 0.25 counts wall seconds,
    sees four-times-faster devices and a four-times-longer budget, and plans other rounds."""
    assert simulate(0.25, job_scale=1.0) != simulate(1.0)
