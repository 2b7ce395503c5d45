"""The stage controller and the job controller around it. Pure.

Per stage, as dynaSpark (Baresi, Quattrocchi et al., TSE 2021, §4.3): a PI controller on the
progress error against a linear ramp from the stage's start to its deadline::

    r(t) = clamp((t - start) / (deadline - start), 0, 1)     the set point
    e    = r(t) - progress                                   > 0: behind
    need = fewest cores whose waves of the tasks left fit the time left (less ``lead_s``,
           the executors' start, when that means more cores than now)
    I   <- clamp(I + ki·e·dt, -1, 1)     not integrated while saturated in e's direction
    u    = need + max_cores · (kp·e + I)                     quantised with hysteresis, clamped

Quantisation (:func:`quantise`) has a deadband: ``u`` must pass the next executor's cores by
``deadband`` of an executor before one more is asked for, and fall to the level below before
one is released. Without it any positive error (there is one at every ramp's start: progress
counts completed tasks, which come a task's time after the ramp has begun) asks for one more
executor, which on a real cluster starts, costs its start and is released again.

``need`` is a model-based feed-forward from the profile's work (the part xSpark computes once,
at stage start, from the nominal rate); the PI part corrects for the model's error (tasks slower
than profiled, executors that start late). Cores never exceed the tasks still to run.

:class:`JobController` keeps one :class:`StageController` per running stage, re-plans the
deadlines of the stages left whenever one completes (:func:`.planner.plan` with ``done``), and
answers the job's total: the sum over running stages, not lowered within ``lead_s`` of a
raise (the cores asked for are still starting), never below the next stage's planned
cores (so they are there when it starts; holding them only near a stage's end measured worse in
the simulator: more misses and more core-seconds). A stage the profile does not know gets
``max_cores`` (the deadline is what matters) and is reported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from .planner import Plan, plan
from .profile import JobProfile, StageProfile

__all__ = ["ControlSettings", "JobController", "StageController", "StageDecision", "quantise"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlSettings:
    kp: float = 0.5
    ki: float = 0.2
    """Per second."""
    min_cores: int = 1
    max_cores: int = 2
    quantum: int = 1
    """Cores come in multiples of this (an executor's cores, for executor actuation)."""
    alpha: float = 0.95
    """Stage deadlines add up to ``alpha`` × the job's deadline."""
    lead_s: float = 5.0
    """Seconds new cores take to arrive (an executor's start): an increase is sized to finish
    in the time left minus this."""
    hold_s: float | None = None
    """Seconds a decrease must be wanted, at every step, before it is made (``None``:
    ``lead_s``). A decrease taken back soon after pays an executor's start: on a loaded
    machine the job went 2 → 1 → 2 executors within 3 s and waited 20 s for the second."""
    deadband: float = 0.5
    """Fraction of a quantum the control output must pass the next level by before it steps
    up (:func:`quantise`); 0 is plain rounding up."""
    level: str = "stage"
    """``stage``: one PI controller per running stage, their cores summed (dynaSpark).
    ``job``: one PI controller on the job's progress (its profiled work done) against a ramp
    to ``alpha`` × the deadline, with the feed-forward the fewest cores whose waves fit the
    stages left into the time left: for
    jobs whose stages are short against an executor's start, where per-stage decisions churn
    executors that arrive after the stage has ended."""

    def __post_init__(self) -> None:
        if not (
            math.isfinite(self.kp) and self.kp >= 0 and math.isfinite(self.ki) and self.ki >= 0
        ):
            raise ValueError("kp and ki must be finite and >= 0")
        if not 1 <= self.min_cores <= self.max_cores:
            raise ValueError(
                f"need 1 <= min_cores <= max_cores, got {self.min_cores}, {self.max_cores}"
            )
        if not (math.isfinite(self.lead_s) and self.lead_s >= 0):
            raise ValueError(f"lead_s must be finite and >= 0, got {self.lead_s}")
        if self.hold_s is not None and not (math.isfinite(self.hold_s) and self.hold_s >= 0):
            raise ValueError(f"hold_s must be finite and >= 0, got {self.hold_s}")
        if self.quantum < 1:
            raise ValueError(f"quantum must be >= 1, got {self.quantum}")
        if not 0 <= self.deadband < 1:
            raise ValueError(f"deadband must be in [0, 1), got {self.deadband}")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        if self.level not in ("stage", "job"):
            raise ValueError(f"level must be 'stage' or 'job', got {self.level!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class StageDecision:
    """One control step of one stage (for the report)."""

    t_s: float
    key: str
    progress: float
    setpoint: float
    error: float
    need: float
    cores: int


def _quantise_up(value: float, quantum: int) -> int:
    return int(math.ceil(value / quantum - 1e-9) * quantum)


def quantise(value: float, current: int, quantum: int, deadband: float) -> int:
    """``value`` cores in whole quanta, with hysteresis around ``current``: up to
    ``ceil(value/quantum − deadband)`` quanta when that is more than now (``value`` passed a
    level by ``deadband`` of a quantum), down to ``ceil(value/quantum)`` quanta when that is
    less (``value`` fell to the level below), else ``current``. ``deadband = 0`` is plain
    rounding up. A Schmitt trigger on the quantiser (Åström & Murray, *Feedback Systems*,
    2008, §3.4: hysteresis against chattering between levels)."""
    up = _quantise_up(value - deadband * quantum, quantum)
    if up > current:
        return up
    down = _quantise_up(value, quantum)
    return down if down < current else current


class StageController:
    """PI control of one stage's cores toward its deadline; :meth:`step` every period."""

    def __init__(
        self,
        stage: StageProfile,
        *,
        start_s: float,
        deadline_s: float,
        planned_cores: int,
        settings: ControlSettings,
    ) -> None:
        self.stage = stage
        self.start_s = start_s
        self.deadline_s = max(deadline_s, start_s + 1e-3)
        self.settings = settings
        self.integral = 0.0
        self.cores = self._clamp(planned_cores, stage.tasks)
        self._last_t: float | None = None

    def _clamp(self, cores: float, tasks_left: int, current: int | None = None) -> int:
        """Quantised (up, or with hysteresis around ``current``: :func:`quantise`), within
        ``[min_cores, max_cores]``, never above the tasks left."""
        s = self.settings
        lo = _quantise_up(s.min_cores, s.quantum)
        hi = max(lo, min(s.max_cores, _quantise_up(max(tasks_left, 1), s.quantum)))
        q = (_quantise_up(cores, s.quantum) if current is None
             else quantise(cores, current, s.quantum, s.deadband))  # fmt: skip
        return min(max(q, lo), hi)

    def _waves_need(self, tasks_left: int, time_left: float) -> int:
        """The fewest cores whose waves of mean-length tasks finish ``tasks_left`` tasks in
        ``time_left`` seconds (``max_cores`` when none does)."""
        mean = self.stage.task_mean_s
        if tasks_left <= 0:
            return 0
        waves = max(1, math.floor(time_left / mean))
        return min(self.settings.max_cores, math.ceil(tasks_left / waves))

    def step(self, now_s: float, progress: float, tasks_left: int) -> StageDecision:
        """``progress``: completed fraction of the stage's tasks (0..1); ``tasks_left``: tasks
        not finished. Returns the decision; :attr:`cores` holds the new allocation."""
        s = self.settings
        progress = min(max(progress if math.isfinite(progress) else 0.0, 0.0), 1.0)
        dt = 0.0 if self._last_t is None else max(0.0, now_s - self._last_t)
        self._last_t = now_s
        span = self.deadline_s - self.start_s
        setpoint = min(max((now_s - self.start_s) / span, 0.0), 1.0)
        error = setpoint - progress
        time_left = max(self.deadline_s - now_s, 1e-3)
        need = float(self._waves_need(tasks_left, time_left))
        if need > self.cores:  # more cores arrive only after lead_s
            need = float(self._waves_need(tasks_left, max(time_left - s.lead_s, 1e-3)))
        raw_before = need + s.max_cores * (s.kp * error + self.integral)
        pushing_up = error > 0 and raw_before >= s.max_cores
        pushing_down = error < 0 and raw_before <= s.min_cores
        if not (pushing_up or pushing_down):
            self.integral = min(max(self.integral + s.ki * error * dt, -1.0), 1.0)
        raw = need + s.max_cores * (s.kp * error + self.integral)
        self.cores = self._clamp(raw, tasks_left, self.cores)
        return StageDecision(t_s=now_s, key=self.stage.key, progress=progress, setpoint=setpoint,
                             error=error, need=need, cores=self.cores)  # fmt: skip


@dataclass(slots=True)
class _Running:
    controller: StageController | None
    progress: float = 0.0
    tasks_left: int = 0


@dataclass(slots=True)
class JobController:
    """Deadline control of a whole job from its profile. Times are seconds since the job
    started. Call :meth:`stage_started` / :meth:`stage_completed` as Spark reports them and
    :meth:`step` every control period; :attr:`plan` is the current plan, :attr:`history` the
    decisions, :attr:`unknown` the stages the profile did not know."""

    profile: JobProfile
    deadline_s: float
    settings: ControlSettings
    plan: Plan = field(init=False)
    history: list[StageDecision] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    plans: list[tuple[float, Plan]] = field(default_factory=list)
    _done: set[str] = field(default_factory=set)
    _running: dict[str, _Running] = field(default_factory=dict)
    _total: int = 0
    _raised_at: float | None = None
    _lower_since: float | None = None
    _integral: float = 0.0
    _last_t: float | None = None

    def __post_init__(self) -> None:
        self.plan = self._plan(0.0)

    def _plan(self, now_s: float) -> Plan:
        s = self.settings
        p = plan(self.profile, deadline_s=self.deadline_s, max_cores=s.max_cores,
                 min_cores=s.min_cores, alpha=s.alpha, now_s=now_s, done=self._done,
                 lead_s=s.lead_s if now_s == 0 else 0.0)  # fmt: skip
        self.plans.append((now_s, p))
        return p

    def stage_started(self, key: str, now_s: float, tasks: int) -> None:
        stage = self.profile.stage(key)
        if stage is None:
            self.unknown.append(key)
            self._running[key] = _Running(controller=None, tasks_left=tasks)
            return
        planned = self.plan.stage(key)
        if planned is None:  # ran before, or out of order: plan from now
            self.plan = self._plan(now_s)
            planned = self.plan.stage(key)
        deadline = planned.deadline_s if planned is not None else self.deadline_s
        cores = planned.cores if planned is not None else self.settings.max_cores
        # A stage that starts late keeps its deadline: the controller makes up the delay. One
        # that starts before its planned start (the first, while executors start) ramps from
        # the planned start: no progress is expected before there are cores to make it.
        start = now_s if planned is None else max(now_s, min(planned.start_s, deadline - 1e-3))
        controller = StageController(stage, start_s=start, deadline_s=max(deadline, now_s + 1e-3),
                                     planned_cores=cores, settings=self.settings)  # fmt: skip
        self._running[key] = _Running(controller=controller, tasks_left=tasks)

    def stage_completed(self, key: str, now_s: float) -> None:
        self._running.pop(key, None)
        self._done.add(key)
        if self.profile.stage(key) is not None:
            self.plan = self._plan(now_s)

    def step(self, now_s: float, progress: Mapping[str, tuple[float, int]]) -> int:
        """Total cores for the running stages; ``progress`` maps a running stage's key to
        (completed fraction, tasks left). With no stage running: the next stage's plan."""
        total = 0
        for key, running in self._running.items():
            if key in progress:
                running.progress, running.tasks_left = progress[key]
            if running.controller is None:
                total += self.settings.max_cores
                continue
            decision = running.controller.step(now_s, running.progress, running.tasks_left)
            self.history.append(decision)
            total += decision.cores
        # Keep the next stage's planned cores in place: releasing them in this stage's tail
        # would cost their start again when it begins.
        s = self.settings
        if s.level == "job":
            total = self._job_step(now_s)
        else:
            upcoming = next((p.cores for p in self.plan.stages if p.key not in self._running), 0)
            total = max(total, upcoming)
        total = int(min(max(total, s.min_cores), s.max_cores))
        # Dwell: no decrease within lead_s of an increase. The cores asked for are still
        # starting then, and lowering the total cancels them; the next increase would pay
        # their start again (measured in the simulator: asking 8, 16, 8, 16 ... every period
        # while the first executors started kept the first stage waiting 19 s, not 10).
        # Hold: a decrease is made only once it has been wanted at every step for hold_s.
        if total < self._total:
            if self._lower_since is None:
                self._lower_since = now_s
            hold = s.lead_s if s.hold_s is None else s.hold_s
            dwelling = self._raised_at is not None and now_s - self._raised_at < s.lead_s
            if dwelling or now_s - self._lower_since < hold:
                total = self._total
            else:
                self._lower_since = None
        else:
            self._lower_since = None
        if total > self._total:
            self._raised_at = now_s
        self._total = total
        return total

    def job_progress(self) -> float:
        """Completed fraction of the profile's work (stages done, running ones by progress)."""
        work = self.profile.work_s
        if work <= 0:
            return 0.0
        done = sum(st.work_s for st in self.profile.stages if st.key in self._done)
        for key, running in self._running.items():
            stage = self.profile.stage(key)
            if stage is not None:
                done += stage.work_s * running.progress
        return min(1.0, done / work)

    def _waves_need(self, left_s: float) -> int:
        """The fewest cores (whole quanta) on which the stages left, in whole waves of their
        tasks left (:meth:`.profile.StageProfile.shortest_s`), fit ``left_s`` one after
        another; ``max_cores`` when none does. Stages of few tasks and the last wave's idle
        cores count, which the work left over the time left would not."""
        s = self.settings
        left = []
        for st in self.profile.stages:
            if st.key in self._done:
                continue
            running = self._running.get(st.key)
            tasks = st.tasks if running is None else max(0, running.tasks_left)
            if tasks > 0:
                left.append((tasks, st.task_mean_s))
        if not left:
            return 0
        for cores in range(_quantise_up(s.min_cores, s.quantum), s.max_cores + 1, s.quantum):
            if sum(math.ceil(n / min(cores, n)) * m for n, m in left) <= left_s:
                return cores
        return s.max_cores

    def _job_step(self, now_s: float) -> int:
        """``level="job"``: PI on the job's progress against a ramp from ``lead_s`` (the first
        executors' start) to ``alpha`` × the deadline, on top of the fewest cores whose waves
        fit the stages left into the time left (:meth:`_waves_need`), quantised with
        hysteresis around the current total."""
        s = self.settings
        dt = 0.0 if self._last_t is None else max(0.0, now_s - self._last_t)
        self._last_t = now_s
        target = s.alpha * self.deadline_s
        start = min(s.lead_s, target / 2)
        setpoint = min(max((now_s - start) / (target - start), 0.0), 1.0)
        progress = self.job_progress()
        error = setpoint - progress
        left_s = max(target - now_s, 1e-3)
        need = float(self._waves_need(left_s))
        if need > self._total:  # more cores arrive only after lead_s
            need = float(self._waves_need(max(left_s - s.lead_s, 1e-3)))
        raw_before = need + s.max_cores * (s.kp * error + self._integral)
        pushing_up = error > 0 and raw_before >= s.max_cores
        pushing_down = error < 0 and raw_before <= s.min_cores
        if not (pushing_up or pushing_down):
            self._integral = min(max(self._integral + s.ki * error * dt, -1.0), 1.0)
        raw = min(need + s.max_cores * (s.kp * error + self._integral), float(s.max_cores))
        current = max(self._total, _quantise_up(s.min_cores, s.quantum))
        return quantise(raw, current, s.quantum, s.deadband)
