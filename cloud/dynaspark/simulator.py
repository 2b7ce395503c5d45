"""A discrete-event simulator of a Spark application on a cluster that grows and shrinks by
executors, to evaluate allocation policies at sizes this machine does not have. Pure.

The job is the chain of stages of a :class:`~.profile.JobProfile` (one after another, as the
profiled run completed them); each stage's task times are drawn once per seed from a lognormal
with the stage's mean task time and coefficient of variation, so every policy sees the same
tasks. Executors have ``cores_per_executor`` task slots, start ``executor_start_s`` after they
are requested (the 5–6 s measured on ``local-cluster``) and cost core-seconds from request to
removal. Lowering the total removes executors still starting first, then idle ones; a busy
executor is decommissioned: it takes no new task and goes when its tasks end (Spark's graceful
decommissioning; ``killExecutors`` would rerun the tasks). A policy is asked for the total cores
it wants every ``period_s`` and whenever a stage starts or ends.

Policies: :class:`StaticPolicy`, :class:`DeadlinePolicy` (the :class:`~.controller.JobController`)
and :class:`DynamicAllocationPolicy`, a model of Spark's ``ExecutorAllocationManager``
(``schedulerBacklogTimeout``, ``sustainedSchedulerBacklogTimeout`` with doubling requests,
``executorIdleTimeout``; Spark docs, "Dynamic Resource Allocation").
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .controller import JobController
from .profile import JobProfile

__all__ = [
    "DeadlinePolicy",
    "DynamicAllocationPolicy",
    "Policy",
    "SimResult",
    "SimSettings",
    "StaticPolicy",
    "simulate",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SimSettings:
    max_cores: int
    cores_per_executor: int = 1
    executor_start_s: float = 5.0
    period_s: float = 1.0
    work_scale: float = 1.0
    """Tasks per stage are multiplied by this (a larger input than the profiled one)."""
    seed: int = 0
    horizon_s: float = 86_400.0
    """Give up after this long (a policy that never finishes)."""

    def __post_init__(self) -> None:
        if self.max_cores < 1 or self.cores_per_executor < 1:
            raise ValueError("max_cores and cores_per_executor must be >= 1")
        if not (self.executor_start_s >= 0 and self.period_s > 0 and self.work_scale > 0):
            raise ValueError("executor_start_s >= 0, period_s > 0 and work_scale > 0 are needed")


class Policy(Protocol):
    name: str

    def stage_started(self, key: str, now_s: float, tasks: int) -> None: ...

    def stage_completed(self, key: str, now_s: float) -> None: ...

    def decide(
        self, now_s: float, progress: Mapping[str, tuple[float, int]], pending: int, slots: int
    ) -> int:
        """Total cores wanted. ``progress``: running stage → (completed fraction, tasks left);
        ``pending``: tasks waiting for a slot; ``slots``: the task slots of ready executors."""
        ...


class _IgnoresStages:
    """For policies that do not follow stages: their events are no-ops."""

    __slots__ = ()

    def stage_started(self, key: str, now_s: float, tasks: int) -> None:
        pass

    def stage_completed(self, key: str, now_s: float) -> None:
        pass


@dataclass(slots=True)
class StaticPolicy(_IgnoresStages):
    cores: int
    name: str = "static"

    def decide(
        self, now_s: float, progress: Mapping[str, tuple[float, int]], pending: int, slots: int
    ) -> int:
        return self.cores


@dataclass(slots=True)
class DeadlinePolicy:
    controller: JobController
    name: str = "dynaspark"

    def stage_started(self, key: str, now_s: float, tasks: int) -> None:
        self.controller.stage_started(key, now_s, tasks)

    def stage_completed(self, key: str, now_s: float) -> None:
        self.controller.stage_completed(key, now_s)

    def decide(
        self, now_s: float, progress: Mapping[str, tuple[float, int]], pending: int, slots: int
    ) -> int:
        return self.controller.step(now_s, progress)


@dataclass(slots=True)
class DynamicAllocationPolicy(_IgnoresStages):
    """Spark's dynamic allocation, in cores: ``min_cores`` to ``max_cores``, starting at
    ``initial_cores``."""

    min_cores: int
    max_cores: int
    initial_cores: int
    cores_per_executor: int = 1
    backlog_timeout_s: float = 1.0
    sustained_backlog_timeout_s: float = 1.0
    idle_timeout_s: float = 60.0
    name: str = "dynamic-allocation"
    _target: int = field(init=False, default=0)
    _backlog_since: float | None = field(init=False, default=None)
    _next_add: float = field(init=False, default=0.0)
    _add: int = field(init=False, default=1)
    _idle_since: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._target = self.initial_cores

    def decide(
        self, now_s: float, progress: Mapping[str, tuple[float, int]], pending: int, slots: int
    ) -> int:
        running = sum(left for _, left in progress.values())
        needed = min(self.max_cores, max(self.min_cores, running))
        if pending > 0:
            self._idle_since = None
            if self._backlog_since is None:
                self._backlog_since = now_s
                self._next_add = now_s + self.backlog_timeout_s
                self._add = 1
            if now_s >= self._next_add:
                self._target = min(needed, self._target + self._add * self.cores_per_executor)
                self._add *= 2
                self._next_add = now_s + self.sustained_backlog_timeout_s
        else:
            self._backlog_since = None
            busy = running
            if busy < self._target:
                if self._idle_since is None:
                    self._idle_since = now_s
                elif now_s - self._idle_since >= self.idle_timeout_s:
                    self._target = max(self.min_cores, busy)
                    self._idle_since = None
        return self._target


@dataclass(frozen=True, slots=True)
class SimResult:
    policy: str
    finish_s: float
    core_seconds: float
    finished: bool
    stages: tuple[tuple[str, float, float], ...]
    """(key, start, end) per stage."""
    timeline: tuple[tuple[float, int, int], ...]
    """(time, cores requested or alive, busy slots) at every decision."""


@dataclass(slots=True)
class _Executor:
    ident: int
    requested_s: float
    ready: bool = False
    busy: int = 0
    leaving: bool = False
    gone_s: float | None = None


def _task_times(profile: JobProfile, scale: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for stage in profile.stages:
        n = max(1, round(stage.tasks * scale))
        sigma2 = math.log(1 + stage.task_cv**2)
        mu = math.log(stage.task_mean_s) - sigma2 / 2
        out.append(rng.lognormal(mu, math.sqrt(sigma2), size=n))
    return out


def simulate(profile: JobProfile, policy: Policy, settings: SimSettings) -> SimResult:
    """Run the profile's stages under ``policy``; returns when the last task ends (or at
    ``settings.horizon_s``)."""
    s = settings
    times = _task_times(profile, s.work_scale, s.seed)
    keys = [st.key for st in profile.stages]
    events: list[tuple[float, int, str, int]] = []
    seq = 0

    def push(t: float, kind: str, arg: int) -> None:
        nonlocal seq
        heapq.heappush(events, (t, seq, kind, arg))
        seq += 1

    executors: list[_Executor] = []
    stage_i = 0
    next_task = 0
    done_tasks = 0
    stage_start = 0.0
    spans: list[tuple[str, float, float]] = []
    timeline: list[tuple[float, int, int]] = []
    now = 0.0

    def alive() -> list[_Executor]:
        return [e for e in executors if e.gone_s is None]

    def remove(e: _Executor) -> None:
        e.gone_s = now

    def actuate(cores: int) -> None:
        cores = min(max(cores, 1), s.max_cores)
        want = math.ceil(cores / s.cores_per_executor)
        staying = [e for e in alive() if not e.leaving]
        if len(staying) < want:
            for e in [e for e in alive() if e.leaving][: want - len(staying)]:
                e.leaving = False  # take back a decommission before starting a new one
                staying.append(e)
            for _ in range(want - len(staying)):
                e = _Executor(ident=len(executors), requested_s=now)
                executors.append(e)
                push(now + s.executor_start_s, "ready", e.ident)
        elif len(staying) > want:
            excess = len(staying) - want
            order = sorted(staying, key=lambda e: (e.ready and e.busy > 0, e.ready))
            for e in order[:excess]:
                if e.busy == 0:
                    remove(e)
                else:
                    e.leaving = True

    def schedule() -> None:
        nonlocal next_task
        if stage_i >= len(times):
            return
        tasks = times[stage_i]
        for e in alive():
            while (
                e.ready
                and not e.leaving
                and e.busy < s.cores_per_executor
                and next_task < len(tasks)
            ):
                e.busy += 1
                push(now + float(tasks[next_task]), "task", e.ident)
                next_task += 1

    def progress() -> dict[str, tuple[float, int]]:
        if stage_i >= len(times):
            return {}
        n = len(times[stage_i])
        return {keys[stage_i]: (done_tasks / n, n - done_tasks)}

    def decide() -> None:
        slots = sum(s.cores_per_executor for e in alive() if e.ready and not e.leaving)
        pending = len(times[stage_i]) - next_task if stage_i < len(times) else 0
        cores = policy.decide(now, progress(), pending, slots)
        actuate(cores)
        busy = sum(e.busy for e in alive())
        timeline.append(
            (now, len([e for e in alive() if not e.leaving]) * s.cores_per_executor, busy)
        )
        schedule()

    policy.stage_started(keys[0], 0.0, len(times[0]))
    decide()
    push(s.period_s, "tick", 0)
    while events and stage_i < len(times):
        now, _, kind, arg = heapq.heappop(events)
        if now > s.horizon_s:
            break
        if kind == "tick":
            decide()
            push(now + s.period_s, "tick", 0)
            continue
        e = executors[arg]
        if kind == "ready":
            if e.gone_s is None:
                e.ready = True
                schedule()
            continue
        # a task ended
        e.busy -= 1
        done_tasks += 1
        if e.leaving and e.busy == 0:
            remove(e)
        if done_tasks == len(times[stage_i]):
            spans.append((keys[stage_i], stage_start, now))
            policy.stage_completed(keys[stage_i], now)
            stage_i += 1
            next_task = done_tasks = 0
            stage_start = now
            if stage_i < len(times):
                policy.stage_started(keys[stage_i], now, len(times[stage_i]))
                decide()
        else:
            schedule()
    finished = stage_i >= len(times)
    end = now
    core_seconds = sum(
        s.cores_per_executor * ((e.gone_s if e.gone_s is not None else end) - e.requested_s)
        for e in executors
    )
    return SimResult(policy=policy.name, finish_s=end, core_seconds=core_seconds,
                     finished=finished, stages=tuple(spans), timeline=tuple(timeline))  # fmt: skip
