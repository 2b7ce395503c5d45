"""The coordinator's job loop: plan a round, send it, aggregate, evaluate, checkpoint, report.

``await Coordinator(...).run()`` drives one job to its end (target reached, time budget, round or
byte limit) and returns a :class:`JobOutcome`. CPU work (aggregation, evaluation, export) runs in
worker threads; the event loop only moves messages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from link import LinkError
from protocol import JobState, ModelRef, Shard, TrainIns

from .async_service import run_async
from .checkpoint import CheckpointStore
from .engine import JobProgress, StopReason, close_round, start, stop_reason, verdict
from .export import ExportReport, export_model
from .fleet import Fleet
from .job import JobSpec, load_normalization, required_runtime
from .model import GlobalModel
from .ownership import StateLock, load_epoch, save_epoch
from .planners import Planner, Prediction, RoundPlan, make_planner
from .strategies import Strategy, make_strategy
from .timescale import TimeScale

__all__ = ["Coordinator", "JobOutcome"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobOutcome:
    job_id: str
    reason: StopReason
    progress: JobProgress
    export: ExportReport | None
    model_ref: ModelRef | None
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def reached(self) -> bool:
        return self.reason == "reached"


class Coordinator:
    def __init__(
        self,
        *,
        spec: JobSpec,
        fleet: Fleet,
        holdout: Shard,
        state_dir: Path,
        out_dir: Path,
        planner: Planner | None = None,
        strategy: Strategy | None = None,
        on_round: Callable[[JobState], None] | None = None,
        artifact_base_url: str | None = None,
        sign_ref: Callable[[ModelRef], ModelRef] | None = None,
    ) -> None:
        self.spec = spec
        self.fleet = fleet
        self.holdout = holdout
        self.store = CheckpointStore(state_dir)
        self.out_dir = out_dir
        self._planner = planner
        self.strategy = strategy or make_strategy(spec.strategy.name, **spec.strategy.params)
        self._on_round = on_round
        self.normalization = load_normalization(spec.normalization)
        """How the training data was normalised (the job file's ``normalization``), announced
        with the model."""
        self.artifact_base_url = artifact_base_url
        """Where ``out_dir/model`` is served over HTTP (``http://host:port``); the published
        ``ModelRef`` names its files there. ``None``: ``file://`` URLs (this machine only)."""
        self.sign_ref = sign_ref
        """Signs every artifact of the exported model's ``ModelRef`` before it is published
        (:meth:`link.signing.ArtifactSigner.sign_ref`); ``None``: published unsigned."""
        self.epoch = 0
        """This run's ownership epoch of the job (set when the job starts)."""
        self.progress: JobProgress | None = None
        """The job as of its last checkpoint (``None`` until it starts), for monitors such as
        the dashboard; read it, never change it."""
        self.state: JobState | None = None
        """The last job state published (``None`` before the first round ends)."""
        self.initial_accuracy: float | None = None
        """The initial model's holdout accuracy (``None`` until a fresh job evaluates it; a
        resumed job does not)."""
        self._clock_base = 0.0
        self._clock_start = time.monotonic()
        self.timescale = TimeScale(spec.emulation.time_scale)
        """Device-seconds ↔ wall seconds: the job counts in device-seconds (see
        :mod:`coordinator.timescale`)."""

    def _judge(self, progress: JobProgress, what: str) -> tuple[JobProgress, str]:
        """``progress`` with the planner's verdict on it (feasible or not, and what the job's
        ``on_infeasible`` makes of that), and the verdict's message for monitors (empty when
        none); a warning names ``what`` (a round, a version)."""
        prediction = self.planner.prediction()
        progress, message = verdict(
            progress,
            feasible=prediction.feasible,
            accuracy_at_budget=prediction.accuracy_at_budget,
            constraints=self.spec.constraints,
        )
        if message:
            _log.warning("job %s %s: %s", self.spec.job_id, what, message)
        return progress, message

    def _elapsed(self) -> float:
        """Job time so far, device-seconds."""
        return self._clock_base + self.timescale.to_device(time.monotonic() - self._clock_start)

    @property
    def planner(self) -> Planner:
        if self._planner is None:
            raise RuntimeError("the planner is made when the job starts")
        return self._planner

    def prediction(self) -> Prediction | None:
        """The planner's newest prediction (``None`` before the job starts), for monitors."""
        return None if self._planner is None else self._planner.prediction()

    async def run(self) -> JobOutcome:
        """Own the job (see :mod:`coordinator.ownership`) and drive it to its end. Raises
        :class:`~coordinator.errors.OwnershipError` when another coordinator owns it."""
        with StateLock(self.store.state_dir, self.spec.job_id):
            epoch = load_epoch(self.store.state_dir, self.spec.job_id) + 1
            self.epoch = await self.fleet.claim(self.spec.job_id, epoch)
            save_epoch(self.store.state_dir, self.spec.job_id, self.epoch, owner=self.fleet.session)
            return await self._run()

    async def _run(self) -> JobOutcome:
        spec = self.spec
        model = await asyncio.to_thread(GlobalModel, spec.model, self.holdout)
        progress = self.progress = await self._resume_or_start(model)
        if self._planner is None:
            self._planner = make_planner(spec, model_bytes=model.num_parameters * 4)
            replay = getattr(self._planner, "replay", None)
            if replay is not None:
                replay(progress)
        self._clock_base, self._clock_start = progress.elapsed_s, time.monotonic()
        if progress.status == "running":
            need = min(spec.rounds.min_agents, spec.rounds.participants)
            got = await self.fleet.wait_for_agents(need, timeout=spec.rounds.wait_for_agents_s)
            if got < need:
                _log.warning(
                    "job %s: only %d of %d agents online; starting anyway", spec.job_id, got, need
                )
        ended: StopReason | None = None
        if progress.status == "running":
            if spec.mode == "async":
                progress, ended = await run_async(self, model, progress)
            else:
                progress = await self._rounds(model, progress)
        reason = ended or stop_reason(progress, spec.constraints) or "time_budget"
        progress = dataclasses.replace(progress, status=reason)
        await self._save(progress)
        export, ref = await self._finish(model, progress)
        await self._publish(progress, message=_describe(reason, progress, spec))
        return JobOutcome(
            job_id=spec.job_id,
            reason=reason,
            progress=progress,
            export=export,
            model_ref=ref,
            dropped=dict(self.fleet.dropped),
        )

    async def _resume_or_start(self, model: GlobalModel) -> JobProgress:
        checkpoint = await asyncio.to_thread(
            self.store.load, self.spec.job_id, spec=self.spec.model_dump(mode="json")
        )
        if checkpoint is None:
            initial = await asyncio.to_thread(model.evaluate, model.initial_weights)
            self.initial_accuracy = initial.accuracy
            return start(self.spec.job_id, model.initial_weights, accuracy=initial.accuracy)
        _log.info(
            "job %s: resuming after round %d (best accuracy %.4f, %.1fs spent)",
            self.spec.job_id,
            checkpoint.progress.round,
            checkpoint.progress.best_accuracy,
            checkpoint.progress.elapsed_s,
        )
        self.strategy.restore(checkpoint.strategy_state)
        replay = await asyncio.to_thread(self.store.load_replay_state, self.spec.job_id)
        self.fleet.restore_replay_state(replay)
        progress = dataclasses.replace(checkpoint.progress, resumed_at=checkpoint.progress.round)
        if stop_reason(progress, self.spec.constraints) is None:
            # Ended earlier under other limits (say, a lower max_rounds): the job goes on.
            progress = dataclasses.replace(progress, status="running")
        return progress

    async def _save(self, progress: JobProgress) -> None:
        """Checkpoint, in a worker thread; the fleet's replay state is read here, on the loop."""
        replay = self.fleet.replay_state()
        self.progress = progress

        def save() -> None:
            spec = self.spec.model_dump(mode="json")
            self.store.save(progress, spec=spec, strategy_state=self.strategy.state())
            self.store.save_replay_state(self.spec.job_id, replay)

        await asyncio.to_thread(save)

    async def _rounds(self, model: GlobalModel, progress: JobProgress) -> JobProgress:
        if progress.round == 0:
            self.strategy.initialize(progress.weights)
        while stop_reason(progress, self.spec.constraints) is None:
            budget_left = self.spec.constraints.time_budget_s - self._elapsed()
            plan = self.planner.plan(
                progress,
                self.fleet.registry.available(requires=required_runtime(self.spec.model)),
                budget_left_s=budget_left,
                train_options=self.strategy.train_options(),
            )
            if not plan.participants or plan.timeout_s <= 0:
                # Nobody to ask (or no time left): let time pass so the budget check can end the job.
                await asyncio.sleep(min(0.5, self.timescale.to_wall(max(budget_left, 0.0))))
                progress = dataclasses.replace(progress, elapsed_s=self._elapsed())
                continue
            progress = await self._round(model, progress, plan)
        return progress

    async def _round(
        self, model: GlobalModel, progress: JobProgress, plan: RoundPlan
    ) -> JobProgress:
        rnd = progress.round + 1
        started = self._elapsed()
        instructions = {
            agent_id: TrainIns(
                model=model.config_json,
                weights=progress.weights,
                config=plan.configs[agent_id],
                budget_s=self.timescale.to_wall(
                    plan.timeout_s if plan.work_budget_s is None else plan.work_budget_s
                ),
                epoch=self.epoch,
            )
            for agent_id in plan.participants
        }
        replies = await self.fleet.train(
            job_id=self.spec.job_id,
            round=rnd,
            instructions=instructions,
            reference=progress.weights,
            quorum=plan.quorum,
            timeout_s=self.timescale.to_wall(plan.timeout_s),
        )
        replies = self.timescale.device_replies(replies)
        progress, record = await asyncio.to_thread(
            close_round,
            progress,
            round_no=rnd,
            participants=plan.participants,
            min_results=plan.min_results,
            replies=replies,
            aggregate=functools.partial(self.strategy.aggregate_train, rnd, progress.weights),
            evaluate=model.evaluate,
            started_s=started,
            elapsed=self._elapsed,
            plan_info=plan.info,
        )
        self.planner.observe(plan, replies, record)
        progress, message = self._judge(progress, f"round {rnd}")
        await self._save(progress)
        _log.info(
            "job %s round %d: accuracy %.4f (best %.4f), %d/%d results, %.1fs%s",
            self.spec.job_id,
            rnd,
            record.accuracy,
            progress.best_accuracy,
            record.results,
            len(plan.participants),
            record.duration_s,
            f" ({record.note})" if record.note else "",
        )
        await self._publish(progress, message=message)
        return progress

    async def _publish(self, progress: JobProgress, *, message: str = "") -> None:
        last = progress.history[-1] if progress.history else None
        state = JobState(
            status=progress.status,
            round=progress.round,
            accuracy=progress.accuracy,
            best_accuracy=progress.best_accuracy,
            target_accuracy=self.spec.constraints.target_accuracy,
            elapsed_s=progress.elapsed_s,
            time_budget_s=self.spec.constraints.time_budget_s,
            participants=last.participants if last else (),
            failures=tuple(sorted(last.failures)) if last else (),
            plan=_plain(dict(last.plan)) if last else {},
            message=message,
        )
        self.state = state
        if self._on_round is not None:
            self._on_round(state)
        try:
            await self.fleet.publish_state(self.spec.job_id, state)
        except LinkError as exc:  # monitors are best effort; the job goes on
            _log.warning("job %s: could not publish state: %s", self.spec.job_id, exc)

    async def _finish(
        self, model: GlobalModel, progress: JobProgress
    ) -> tuple[ExportReport | None, ModelRef | None]:
        if progress.best_round == 0:
            _log.warning(
                "job %s: no round improved on the initial model; nothing to export",
                self.spec.job_id,
            )
            return None, None
        export = await asyncio.to_thread(
            export_model, model, progress.best_weights, self.out_dir / "model"
        )
        version = await asyncio.to_thread(
            self.store.next_model_version, model.spec.name, self.spec.job_id
        )
        ref = export.model_ref(
            name=model.spec.name,
            version=version,
            job_id=self.spec.job_id,
            accuracy=progress.best_accuracy,
            base_url=self.artifact_base_url,
            normalization=self.normalization,
        )
        if self.sign_ref is not None:
            ref = self.sign_ref(ref)
        try:
            await self.fleet.publish_model(ref)
        except LinkError as exc:
            _log.warning("job %s: could not publish the model reference: %s", self.spec.job_id, exc)
        return export, ref


def _plain(value: Any) -> Any:
    """Plan info as wire-safe plain values (no NaN, tuples as lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _describe(reason: StopReason, progress: JobProgress, spec: JobSpec) -> str:
    target = spec.constraints.target_accuracy
    if reason == "reached":
        return f"reached {progress.best_accuracy:.4f} >= {target} in round {progress.best_round}"
    if reason == "no_results" and spec.mode == "async":
        return (
            f"stopped: {spec.constraints.max_empty_rounds * spec.asynchronous.buffer_size} "
            "pieces of work in a row brought no result; check the agents' logs, their clocks "
            "and versions, then start the job again to resume it"
        )
    if reason == "no_results":
        last = progress.history[-1] if progress.history else None
        why = sorted({f.split(":")[0] for f in last.failures.values()}) if last else []
        return (
            f"stopped: {spec.constraints.max_empty_rounds} rounds in a row brought no result "
            f"(last round's failures: {', '.join(why) or 'none'}); check the agents' logs, their "
            "clocks and versions, then start the job again to resume it"
        )
    return (
        f"stopped ({reason.replace('_', ' ')}) at best accuracy {progress.best_accuracy:.4f} "
        f"of target {target} after {progress.round} rounds and {progress.elapsed_s:.1f}s"
    )
