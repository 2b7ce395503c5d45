"""``hyperfleet spark run``: an unmodified PySpark script under a deadline, with the deadline
controller beside it (Baresi, Quattrocchi et al., TSE 2021: dynaSpark).

:func:`prepare` checks what can be checked before Spark starts: the master (``local[N]`` runs
every task in the driver and ignores executor requests, so deadline control is unavailable
there: the job runs plainly and the report says ``control=false``), the cluster's cores
(:func:`cluster_cores`), the profile (:func:`find_profile`) and the deadline's feasibility
(:func:`.planner.plan`). :func:`run` then starts the session, runs the script in this thread
(its own ``getOrCreate()`` gets the session, its ``stop()`` is held back) and a control thread
beside it: every period it reads the stages from the REST API, keys them as the profiler did
(:class:`.live.StageKeyer`), steps the :class:`.controller.JobController` (one PI controller
per running stage, re-planned whenever a stage completes) and sets the executor total
(:class:`.actuators.ExecutorTotal`), recording a :class:`.report.Sample`. An error in the
control thread stops control and is raised when the script has ended (:class:`ControlError`),
never swallowed.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .actuators import GRACEFUL_CONF, ExecutorTotal
from .controller import ControlSettings, JobController
from .errors import DynaSparkError, InfeasibleDeadline, ProfileError
from .live import LiveStage, StageKeyer, read_stages
from .planner import Plan, StagePlan
from .profile import JobProfile
from .profiler import settle
from .report import RunReport, Sample, StageOutcome, held_integral, held_mean
from .rest import SparkRest, SparkRestError
from .session import (
    DEFAULT_MASTER,
    deadline_control_available,
    deferred_stop,
    run_script,
    start_session,
)

__all__ = [
    "ControlError",
    "Prepared",
    "ProfileNotFound",
    "RunSettings",
    "cluster_cores",
    "find_profile",
    "prepare",
    "profile_candidates",
    "run",
]

_log = logging.getLogger(__name__)

_LOCAL_CLUSTER = re.compile(r"local-cluster\[\s*(\d+)\s*,\s*(\d+)\s*,\s*\d+\s*\]")
_LOCAL = re.compile(r"local(?:\[\s*(\d+|\*)\s*(?:,\s*\d+\s*)?\])?")


class ProfileNotFound(ProfileError):
    """No profile for the job: ``hyperfleet spark profile`` makes one."""


class ControlError(DynaSparkError):
    """The control thread failed while the job ran (the cause is on ``__cause__``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSettings:
    deadline_s: float
    """The job's deadline, seconds from the script's start."""
    master: str = DEFAULT_MASTER
    conf: Mapping[str, str] = field(default_factory=dict)
    period_s: float = 1.0
    """Seconds between control steps."""
    force: bool = False
    """Run an infeasible deadline anyway (with every core), with a warning."""
    lead_s: float = 5.0
    """Seconds an executor takes to start (the controller sizes increases for it)."""
    alpha: float = 0.95
    level: str = "job"
    """``job``: one controller on the job's progress; ``stage``: dynaSpark's controller per
    stage (:attr:`.controller.ControlSettings.level`). Measured in the simulator on the
    benchmark jobs' profiles at 16 and 64 cores (``bench/dynaspark.py``; stages of 0.1 to
    3 s against an executor's 10 s start): per job met 29 of 36 deadlines at 6 % more
    core-seconds than static maximum (medium and loose), per stage 26 at 26 % more."""
    graceful: bool = True
    """With control, release executors by decommissioning them, their shuffle files moved to
    the executors that stay (:data:`.actuators.GRACEFUL_CONF`, unless ``conf`` sets
    ``spark.decommission.enabled``); ``False``: kill idle executors, whose shuffle files are
    then lost and recomputed when read."""
    control: bool = True
    """``False``: no deadline control, the job runs with the executors its master and conf give
    it (static allocation, or Spark's dynamic allocation), measured the same way (a benchmark's
    contenders; ``bench/dynaspark.py``)."""

    def __post_init__(self) -> None:
        for name in ("deadline_s", "period_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {v}")


def cluster_cores(master: str, conf: Mapping[str, str] = {}) -> tuple[int, int]:
    """(most task slots, cores per executor) of ``master``: ``local-cluster[N,c,m]`` → (N·c, c);
    ``local[N]`` → (N, N); otherwise ``spark.cores.max``, or ``spark.dynamicAllocation.
    maxExecutors`` (else ``spark.executor.instances``) × ``spark.executor.cores`` (default 1).
    ``ValueError`` when the settings do not say."""
    per = int(conf.get("spark.executor.cores", "1"))
    if per < 1:
        raise ValueError(f"spark.executor.cores must be >= 1, got {per}")
    if m := _LOCAL_CLUSTER.fullmatch(master.strip()):
        workers, cores = int(m[1]), int(m[2])
        return workers * cores, cores
    if m := _LOCAL.fullmatch(master.strip()):
        if m[1] is None:
            return 1, 1
        n = (os.cpu_count() or 1) if m[1] == "*" else int(m[1])
        return n, n
    if "spark.cores.max" in conf:
        total = int(conf["spark.cores.max"])
    elif "spark.dynamicAllocation.maxExecutors" in conf:
        total = int(conf["spark.dynamicAllocation.maxExecutors"]) * per
    elif "spark.executor.instances" in conf:
        total = int(conf["spark.executor.instances"]) * per
    else:
        raise ValueError(f"the cores of {master} are unknown: set spark.cores.max (or "
                         "spark.dynamicAllocation.maxExecutors and spark.executor.cores)")  # fmt: skip
    if total < per:
        raise ValueError(f"{total} cores is less than one executor of {per}")
    return total // per * per, per


def profile_candidates(target: str) -> list[Path]:
    """Where the profile of ``target`` is looked for: ``STEM.profile.json`` where
    ``hyperfleet spark profile`` writes it (the working directory), then beside the script."""
    if target.endswith(".py"):
        script = Path(target)
        name = script.stem + ".profile.json"
        return list(dict.fromkeys([Path(name), script.parent / name]))
    return [Path(target + ".profile.json")]


def find_profile(target: str, path: Path | None = None) -> JobProfile:
    """The profile at ``path``, or at the first of :func:`profile_candidates` that exists.
    Raises :class:`ProfileNotFound` (which says how to make one) or :class:`ProfileError`."""
    tried = [path] if path is not None else profile_candidates(target)
    for p in tried:
        if p.is_file():
            try:
                return JobProfile.loads(p.read_text())
            except ProfileError as exc:
                raise ProfileError(f"{p}: {exc}") from exc
    raise ProfileNotFound(f"no profile for {target} (looked for {', '.join(map(str, tried))}): "
                          f"run `hyperfleet spark profile {target}` first")  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    """What :func:`prepare` decided: whether control runs, on how many cores, with what plan."""

    target: str
    settings: RunSettings
    profile: JobProfile | None
    control: bool
    note: str
    """Why control is off (empty when it runs); a warning when the deadline is infeasible."""
    max_cores: int
    cores_per_executor: int
    plan: Plan | None

    @property
    def control_settings(self) -> ControlSettings:
        s = self.settings
        q = self.cores_per_executor
        return ControlSettings(max_cores=self.max_cores, min_cores=q, quantum=q, lead_s=s.lead_s,
                               alpha=s.alpha, level=s.level)  # fmt: skip


def prepare(target: str, settings: RunSettings, *, profile_path: Path | None = None) -> Prepared:
    """Check the master, the cores, the profile and the deadline before Spark starts.

    Raises :class:`ProfileNotFound` / :class:`ProfileError` (a cluster master needs a profile;
    ``local[N]`` uses one only when there is one), :class:`InfeasibleDeadline` when the profile
    says the deadline cannot be met on the cluster's cores (unless ``settings.force``), and
    ``ValueError`` when the cluster's cores are unknown (:func:`cluster_cores`)."""
    max_cores, per = cluster_cores(settings.master, settings.conf)
    note = ""
    if not settings.control:
        note = "deadline control off: the executors the master and settings give"
    elif not deadline_control_available(settings.master):
        note = (f"deadline control is unavailable on {settings.master}: local masters run every "
                "task in the driver and ignore executor requests; running the job plainly "
                "(use local-cluster[N,cores,mem], spark:// or k8s:// for control)")  # fmt: skip
        _log.warning("%s", note)
    if note:  # run plainly; a profile, when there is one, only names the stages
        try:
            found: JobProfile | None = find_profile(target, profile_path)
        except ProfileNotFound:
            found = None
        return Prepared(target=target, settings=settings, profile=found, control=False,
                        note=note, max_cores=max_cores, cores_per_executor=per, plan=None)  # fmt: skip
    profile = find_profile(target, profile_path)
    prepared = Prepared(target=target, settings=settings, profile=profile, control=True, note="",
                        max_cores=max_cores, cores_per_executor=per, plan=None)  # fmt: skip
    first = JobController(profile=profile, deadline_s=settings.deadline_s,
                          settings=prepared.control_settings).plan  # fmt: skip
    note = ""
    if not first.feasible:
        if not settings.force:
            raise InfeasibleDeadline(f"refused: {first.reason}", deadline_s=settings.deadline_s,
                                     shortest_s=first.shortest_s)  # fmt: skip
        note = f"running anyway (--force): {first.reason}"
        _log.warning("%s", note)
    return Prepared(target=target, settings=settings, profile=profile, control=True, note=note,
                    max_cores=max_cores, cores_per_executor=per, plan=first)  # fmt: skip


_REST_FAILURES = 5
"""Consecutive REST failures the control thread rides out before it gives up."""


class _Control:
    """The control thread's state; :meth:`tick` is one period (also run once more at the end)."""

    def __init__(self, prepared: Prepared, rest: SparkRest, actuator: ExecutorTotal | None,
                 t0: float, on_sample: Callable[[Sample], None] | None) -> None:  # fmt: skip
        self.prepared = prepared
        self.rest = rest
        self.actuator = actuator
        self.t0 = t0
        self.on_sample = on_sample
        profile = prepared.profile
        self.keyer = StageKeyer(() if profile is None else (st.key for st in profile.stages))
        self.controller = (
            JobController(profile=prepared.profile, deadline_s=prepared.settings.deadline_s,
                          settings=prepared.control_settings)
            if prepared.control and prepared.profile is not None else None
        )  # fmt: skip
        self.samples: list[Sample] = []
        self.planned: dict[int, StagePlan | None] = {}
        self.asked: int | None = None
        self.actuations = 0
        self.error: BaseException | None = None
        self._done: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dynaspark-control", daemon=True)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def observed(self) -> int:
        """Cores of the live executors (REST); on a local master, the driver's."""
        if self.actuator is not None:
            return self.actuator.observed_cores()
        if deadline_control_available(self.prepared.settings.master):
            return sum(int(e.get("totalCores", 0)) for e in self.rest.executors())
        return self.rest.task_slots()

    def actuate(self, cores: int) -> None:
        assert self.actuator is not None
        asked = self.actuator.set_cores(cores)
        if asked != self.asked:
            self.actuations += 1
            _log.info("t=%.1fs: %d cores asked (was %s)", self.now(), asked, self.asked)
        self.asked = asked

    def _job_progress(self, running: Mapping[str, LiveStage]) -> float | None:
        profile = self.prepared.profile
        if profile is None:
            return None
        done = sum(s.work_s for s in profile.stages if s.key in self._done)
        done += sum(s.work_s * running[s.key].progress for s in profile.stages if s.key in running)
        return min(1.0, done / profile.work_s)

    def absorb(self, stages: Sequence[LiveStage], now: float) -> None:
        """Tell the controller the stages that started and completed since the last poll."""
        for event in self.keyer.observe(stages):
            if event.kind == "started":
                if self.controller is not None:
                    self.controller.stage_started(event.key, now, event.stage.tasks)
                    self.planned[event.stage.stage_id] = self.controller.plan.stage(event.key)
            else:
                self._done.add(event.key)
                if self.controller is not None:
                    self.controller.stage_completed(event.key, now)

    def record(self, sample: Sample) -> None:
        self.samples.append(sample)
        if self.on_sample is not None:
            self.on_sample(sample)

    def tick(self, stages: Sequence[LiveStage]) -> None:
        """One period: events, a control step and its actuation, a sample."""
        now = self.now()
        self.absorb(stages, now)
        running = self.keyer.running
        if self.controller is not None:
            progress = {k: (s.progress, s.tasks_left) for k, s in running.items()}
            self.actuate(self.controller.step(now, progress))
        observed = self.observed()
        self.record(Sample(t_s=now, cores_observed=observed, cores_asked=self.asked,
                           job_progress=self._job_progress(running),
                           stages={k: s.progress for k, s in running.items()}))  # fmt: skip

    def _loop(self) -> None:
        failures = 0
        period = self.prepared.settings.period_s
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.tick(read_stages(self.rest))
                failures = 0
            except SparkRestError as exc:
                failures += 1
                _log.warning("control step failed (%d in a row): %s", failures, exc)
                if failures >= _REST_FAILURES:
                    self.error = exc
                    _log.error("control stopped: the REST API failed %d times", failures)
                    return
            except BaseException as exc:  # surfaced by stop(), never swallowed
                self.error = exc
                _log.error("control stopped: %s: %s", type(exc).__name__, exc)
                return
            self._stop.wait(max(0.0, period - (time.monotonic() - started)))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _outcomes(control: _Control, completed: Sequence[LiveStage], t0_epoch: float,
              finish_s: float) -> list[StageOutcome]:  # fmt: skip
    profile = control.prepared.profile
    out = []
    for stage in sorted(completed, key=lambda s: (s.completed_s, s.stage_id)):
        key = control.keyer.keys.get(stage.stage_id)
        if key is None:
            continue
        start = max(0.0, stage.submitted_s - t0_epoch)
        end = min(max(start, stage.completed_s - t0_epoch), finish_s)
        planned = control.planned.get(stage.stage_id)
        observed = held_mean(control.samples, lambda s: s.cores_observed, start, end)
        out.append(StageOutcome(
            key=key, stage_id=stage.stage_id, tasks=stage.tasks, started_s=start, completed_s=end,
            planned_deadline_s=None if planned is None else planned.deadline_s,
            planned_cores=None if planned is None else planned.cores,
            cores_asked=held_mean(control.samples, lambda s: s.cores_asked, start, end)
            if control.prepared.control else None,
            cores_observed=0.0 if observed is None else observed,
            in_profile=profile is not None and profile.stage(key) is not None,
        ))  # fmt: skip
    return out


def _wait_for_executors(control: _Control, cores: int, timeout_s: float) -> None:
    """Until ``cores`` run or ``timeout_s`` passes (the REST API's first answers can be slow on
    a busy machine: its failures are ridden out until then, and the last one raised)."""
    wait_until = time.monotonic() + timeout_s
    while True:
        try:
            if control.observed() >= cores:
                return
        except SparkRestError:
            if time.monotonic() >= wait_until:
                raise
        if time.monotonic() >= wait_until:
            _log.info("%d cores asked at the start, fewer registered in %.0fs", cores, timeout_s)
            return
        time.sleep(0.25)


def run(
    prepared: Prepared,
    args: Sequence[str] = (),
    *,
    on_sample: Callable[[Sample], None] | None = None,
    executor_wait_s: float = 30.0,
    rest_timeout_s: float = 20.0,
    start_cores: int | None = None,
) -> RunReport:
    """Run the job :func:`prepare` checked, under its deadline, and report.

    With control, the executors the session starts with are awaited first (up to
    ``executor_wait_s``), and the control thread's first step, at the script's start, sets the
    first stage's planned cores. ``on_sample`` is called from the control thread every period
    (and once at the end, from this one). Raises :class:`~.session.ScriptError` when the script
    fails (the control thread's error, if any, is logged), :class:`ControlError` when the
    control thread failed while the script succeeded, :class:`~.rest.SparkRestError` when the
    REST API cannot be read after the script (reads time out after ``rest_timeout_s``).
    ``start_cores``: the cores awaited before the script starts (default: every core of the
    cluster with control, none without; a benchmark awaits its static contenders' executors)."""
    s = prepared.settings
    conf = dict(s.conf)
    if prepared.control and s.graceful and "spark.decommission.enabled" not in conf:
        conf = {**GRACEFUL_CONF, **conf}
    spark = start_session(s.master, app_name=f"dynaspark run {prepared.target}", conf=conf)
    try:
        rest = SparkRest(str(spark.sparkContext.uiWebUrl), timeout_s=rest_timeout_s)
        actuator = None
        if prepared.control:
            actuator = ExecutorTotal(spark, rest, cores_per_executor=prepared.cores_per_executor)
        control = _Control(prepared, rest, actuator, time.monotonic(), on_sample)
        if start_cores is None and actuator is not None and control.controller is not None:
            start_cores = prepared.max_cores
        if start_cores:
            # Executors register some seconds after the session starts; a total set before
            # they are all there would not remove the late ones.
            _wait_for_executors(control, start_cores, executor_wait_s)
        t0_epoch, control.t0 = time.time(), time.monotonic()
        control.start()
        try:
            with deferred_stop():
                run_script(prepared.target, args)
        except BaseException:
            control.stop()
            if control.error is not None:
                _log.error("the control thread had failed too: %s", control.error)
            raise
        finish = control.now()
        last_observed = control.observed()
        control.stop()
        if control.error is not None:
            raise ControlError(f"deadline control failed while the job ran: {control.error}") \
                from control.error  # fmt: skip
        settle(spark, rest)
        stages = read_stages(rest)
        control.absorb(stages, finish)  # completions the last period missed
        control.samples = [x for x in control.samples if x.t_s <= finish]
        control.record(Sample(t_s=finish, cores_observed=last_observed, cores_asked=control.asked,
                              job_progress=None if prepared.profile is None else 1.0))  # fmt: skip
        completed = [st for st in stages if st.status == "COMPLETE"]
        rekeyed = control.keyer.rekeyed(completed)
        if rekeyed:
            _log.warning("stages keyed differently from the profiler (same call site, run at "
                         "once, finished out of order): %s", sorted(rekeyed.values()))  # fmt: skip
        core_s, _ = held_integral(control.samples, lambda x: x.cores_observed, 0.0, finish)
        ctl = control.controller
        plan = prepared.plan
        return RunReport(
            script=prepared.target, master=s.master, control=prepared.control,
            deadline_s=s.deadline_s, finish_s=finish, core_seconds=core_s,
            max_cores=prepared.max_cores, period_s=s.period_s, note=prepared.note,
            feasible=None if plan is None else plan.feasible,
            plan_reason="" if plan is None else plan.reason, actuations=control.actuations,
            replans=0 if ctl is None else len(ctl.plans) - 1,
            unknown_stages=tuple(ctl.unknown) if ctl is not None else (),
            rekeyed=tuple(sorted(rekeyed.values())),
            stages=tuple(_outcomes(control, completed, t0_epoch, finish)),
            timeline=tuple(control.samples),
        )  # fmt: skip
    finally:
        spark.stop()
