"""The asynchronous job loop (``mode = "async"``): FedBuff on the Fleet port.

:class:`~coordinator.service.Coordinator` runs this loop instead of rounds when the job file
says ``mode = "async"``. Decisions are the pure transitions of :mod:`coordinator.async_rounds`;
this module only moves work and replies:

* every idle available agent (up to ``concurrency`` at once) gets a ``TrainIns`` with the newest
  model version, in a single-agent round of its own (``Fleet.train`` with ``round`` = the version
  it trains from; the envelope's round number carries the version, so the wire is unchanged);
  its work is sized by the job's planner as for a round of one;
* a reply is rebased onto the current model with its staleness discount (in a worker thread),
  buffered or dropped as too stale, and the agent is free for new work at once;
* every ``buffer_size`` buffered updates: aggregate (the strategy over the buffer, then the server
  learning rate), evaluate, record, checkpoint, publish — a new version, exactly as a round is.

A restarted coordinator resumes at the last version checkpointed. Work that was in flight is
handed out afresh; a late reply to an earlier run's instruction names an instruction id this run
never sent, and the fleet drops it as stale (counted in ``dropped``). Updates buffered after the
last version are lost with the old run (fewer than ``buffer_size``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from protocol import TrainConfig, TrainIns, TrainRes, Weights

from .async_rounds import (
    AsyncState,
    issue,
    ready,
    rebase,
    receive,
    release,
    server_step,
    take,
)
from .engine import JobProgress, RoundRecord, StopReason, close_updates, stop_reason
from .fleet import RoundReplies
from .job import required_runtime
from .model import GlobalModel
from .planners import RoundPlan
from .strategies import ClientUpdate, Strategy

if TYPE_CHECKING:
    from .job import Constraints
    from .service import Coordinator

__all__ = ["async_stop_reason", "run_async"]

_log = logging.getLogger(__name__)

REST_S = 1.0
"""Seconds of job time an agent whose work failed waits before it is given new work."""
TICK_S = 0.25
"""How often the loop looks for idle agents and the clock when no reply comes."""


def async_stop_reason(
    progress: JobProgress, state: AsyncState, constraints: Constraints, buffer_size: int
) -> StopReason | None:
    """:func:`~coordinator.engine.stop_reason`, plus ``no_results`` once
    ``max_empty_rounds * buffer_size`` pieces of work in a row failed (an async "round" is one
    buffer's worth of replies)."""
    reason = stop_reason(progress, constraints)
    if reason is not None:
        return reason
    if state.failed_in_a_row >= constraints.max_empty_rounds * buffer_size:
        return "no_results"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Done:
    agent_id: str
    version: int
    replies: RoundReplies
    took_s: float


@dataclass(slots=True, kw_only=True)
class _Window:
    """What happened since the last version (for its record and the planner)."""

    started_s: float
    bytes_moved: int = 0
    reply_s: dict[str, float] = field(default_factory=dict)
    reply_seconds: float = 0.0
    failure_seconds: float = 0.0
    results: dict[str, TrainRes] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class _Generation:
    """Versions since the planner last learnt: it sees about ``concurrency`` updates at a time,
    as it sees a round of that many participants, so its learning curve and its infeasibility
    verdict get points of the same weight as in rounds (a version of K updates from the fastest
    agents alone is a noisy, biased point)."""

    started_s: float
    updates: int = 0
    examples: int = 0
    results: dict[str, TrainRes] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    reply_s: dict[str, float] = field(default_factory=dict)


def _buffer_step(
    strategy: Strategy,
    server_lr: float,
    version: int,
    current: Weights,
    updates: Sequence[ClientUpdate],
    failed: Sequence[str],
) -> Weights:
    return server_step(
        current, strategy.aggregate_train(version, current, updates, failed), server_lr
    )


def _resumed_stale_dropped(progress: JobProgress) -> int:
    last = progress.history[-1] if progress.history else None
    value = last.plan.get("stale_dropped") if last is not None else None
    return value if isinstance(value, int) and value >= 0 else 0


async def run_async(
    c: Coordinator, model: GlobalModel, progress: JobProgress
) -> tuple[JobProgress, StopReason | None]:
    """Drive ``progress`` version by version until a stop reason holds; return the job and
    that reason."""
    spec = c.spec
    a = spec.asynchronous
    state = AsyncState(version=progress.round, stale_dropped=_resumed_stale_dropped(progress))
    bases: dict[int, Weights] = {progress.round: progress.weights}
    done: asyncio.Queue[_Done] = asyncio.Queue()
    window = _Window(started_s=c._elapsed())
    configs: dict[str, TrainConfig] = {}
    """The work last given to each agent (for the planner's view of failures)."""
    generation = _Generation(started_s=window.started_s)
    if progress.round == 0:
        c.strategy.initialize(progress.weights)

    async def work(agent_id: str, version: int, ins: TrainIns, timeout_s: float) -> None:
        t0 = c._elapsed()
        replies = await c.fleet.train(
            job_id=spec.job_id,
            round=version,
            instructions={agent_id: ins},
            reference=ins.weights,
            quorum=1,
            timeout_s=c.timescale.to_wall(timeout_s),
        )
        replies = c.timescale.device_replies(replies)  # reply and train times in device-seconds
        done.put_nowait(_Done(agent_id=agent_id, version=version, replies=replies,
                              took_s=c._elapsed() - t0))  # fmt: skip

    tasks: dict[str, asyncio.Task[None]] = {}
    reason: StopReason | None = None
    async with asyncio.TaskGroup() as tg:
        try:
            while True:
                progress = dataclasses.replace(progress, elapsed_s=c._elapsed())
                reason = async_stop_reason(progress, state, spec.constraints, a.buffer_size)
                if reason is not None:
                    break
                state = _hand_out(c, model, progress, state, bases, configs, tasks, tg, work)
                try:
                    item = await asyncio.wait_for(done.get(), timeout=TICK_S)
                except TimeoutError:
                    continue
                tasks.pop(item.agent_id, None)
                state = await _take_reply(c, progress, state, bases, window, item)
                if ready(state, a.buffer_size):
                    progress, state, generation = await _new_version(
                        c, model, progress, state, window, configs, generation
                    )
                    bases[state.version] = progress.weights
                    for old in [v for v in bases if v < state.version - a.max_staleness]:
                        del bases[old]
                    window = _Window(started_s=c._elapsed())
        finally:
            for task in tasks.values():
                task.cancel()
    return progress, reason


def _hand_out(
    c: Coordinator,
    model: GlobalModel,
    progress: JobProgress,
    state: AsyncState,
    bases: dict[int, Weights],
    configs: dict[str, TrainConfig],
    tasks: dict[str, asyncio.Task[None]],
    tg: asyncio.TaskGroup,
    work: Callable[[str, int, TrainIns, float], Coroutine[Any, Any, None]],
) -> AsyncState:
    """Give the current version to idle agents, each with work the planner sizes for it."""
    a = c.spec.asynchronous
    now = c._elapsed()
    available = {
        r.agent_id: r for r in c.fleet.registry.available(requires=required_runtime(c.spec.model))
    }
    state, chosen = issue(
        state, sorted(available), concurrency=a.concurrency, seed=c.spec.seed, now_s=now
    )
    budget_left = c.spec.constraints.time_budget_s - now
    for agent_id in chosen:
        plan = c.planner.plan(
            progress,
            [available[agent_id]],
            budget_left_s=budget_left,
            train_options=c.strategy.train_options(),
        )
        if agent_id not in plan.configs or plan.timeout_s <= 0:
            state = release(state, agent_id, rest_until_s=now + REST_S)
            continue
        configs[agent_id] = plan.configs[agent_id]
        ins = TrainIns(
            model=model.config_json,
            weights=bases[state.version],
            config=plan.configs[agent_id],
            budget_s=c.timescale.to_wall(
                plan.timeout_s if plan.work_budget_s is None else plan.work_budget_s
            ),
            epoch=c.epoch,
        )
        tasks[agent_id] = tg.create_task(
            work(agent_id, state.version, ins, plan.timeout_s), name=f"async-{agent_id}"
        )
    return state


async def _take_reply(
    c: Coordinator,
    progress: JobProgress,
    state: AsyncState,
    bases: dict[int, Weights],
    window: _Window,
    item: _Done,
) -> AsyncState:
    a = c.spec.asynchronous
    replies, agent_id = item.replies, item.agent_id
    window.bytes_moved += replies.bytes_sent + replies.bytes_received
    now = c._elapsed()
    res = replies.results.get(agent_id)
    if res is None:
        why = replies.failures.get(agent_id, "no reply")
        window.failure_seconds += item.took_s
        state, _ = receive(state, agent_id, why, max_staleness=a.max_staleness, now_s=now,
                           rest_s=REST_S)  # fmt: skip
        _log.info("job %s: %s's work on version %d failed: %s", c.spec.job_id, agent_id,
                  item.version, why)  # fmt: skip
        return state
    staleness = state.version - item.version
    weights = res.weights
    base = bases.get(item.version)
    if staleness <= a.max_staleness and base is not None:
        weights = await asyncio.to_thread(rebase, progress.weights, base, res.weights, staleness)
    update = ClientUpdate(
        agent_id=agent_id,
        weights=weights,
        num_examples=res.num_examples,
        loss=res.loss,
        staleness=staleness,
    )
    state, what = receive(state, agent_id, update, max_staleness=a.max_staleness, now_s=now)
    window.reply_seconds += replies.reply_s.get(agent_id, item.took_s)
    window.reply_s[agent_id] = replies.reply_s.get(agent_id, item.took_s)
    window.results[agent_id] = res
    if what == "stale":
        _log.info(
            "job %s: dropped %s's update of version %d: %d versions stale (bound %d)",
            c.spec.job_id,
            agent_id,
            item.version,
            staleness,
            a.max_staleness,
        )
    return state


async def _new_version(
    c: Coordinator,
    model: GlobalModel,
    progress: JobProgress,
    state: AsyncState,
    window: _Window,
    configs: dict[str, TrainConfig],
    generation: _Generation,
) -> tuple[JobProgress, AsyncState, _Generation]:
    a = c.spec.asynchronous
    failures = dict(state.failures)
    state, updates = take(state)
    version = state.version
    staleness = [u.staleness for u in updates]
    info: dict[str, Any] = {
        "mode": "async",
        "version": version,
        "buffer_size": a.buffer_size,
        "concurrency": a.concurrency,
        "staleness": staleness,
        "max_staleness": a.max_staleness,
        "stale_dropped": state.stale_dropped,
        "in_flight": len(state.in_flight),
        **c.planner.prediction().to_json(),
    }
    participants = tuple(sorted({u.agent_id for u in updates}))
    progress, record = await asyncio.to_thread(
        close_updates,
        progress,
        round_no=version,
        participants=participants,
        min_results=1,
        updates=updates,
        failures=failures,
        bytes_moved=window.bytes_moved,
        reply_seconds=window.reply_seconds,
        aggregate=functools.partial(
            _buffer_step, c.strategy, a.server_lr, version, progress.weights
        ),
        evaluate=model.evaluate,
        started_s=window.started_s,
        elapsed=c._elapsed,
        plan_info=info,
        failure_seconds=window.failure_seconds,
    )
    g = generation
    g.updates += record.results
    g.examples += record.examples
    g.results.update(window.results)
    g.failures.update(failures)
    g.reply_s.update(window.reply_s)
    if g.updates >= a.concurrency:
        _observe(c, g, configs, record)
        generation = _Generation(started_s=record.started_s + record.duration_s)
    progress, message = c._judge(progress, f"version {version}")
    await c._save(progress)
    _log.info(
        "job %s version %d: accuracy %.4f (best %.4f), %d updates (staleness %s), "
        "%d stale dropped, %d in flight, %.1fs%s",
        c.spec.job_id,
        version,
        record.accuracy,
        progress.best_accuracy,
        record.results,
        staleness,
        state.stale_dropped,
        len(state.in_flight),
        record.duration_s,
        f" ({record.note})" if record.note else "",
    )
    await c._publish(progress, message=message)
    return progress, state, generation


def _observe(
    c: Coordinator, g: _Generation, configs: dict[str, TrainConfig], record: RoundRecord
) -> None:
    """Feed the planner one generation of versions as one round ending with ``record``."""
    seen = {k: v for k, v in configs.items() if k in g.results or k in g.failures}
    plan = RoundPlan(
        participants=tuple(sorted(seen)),
        configs=seen,
        timeout_s=record.started_s + record.duration_s - g.started_s,
        quorum=len(seen),
        min_results=1,
    )
    failures = {k: v for k, v in g.failures.items() if k in seen and k not in g.results}
    as_round = dataclasses.replace(
        record,
        started_s=g.started_s,
        duration_s=record.started_s + record.duration_s - g.started_s,
        examples=g.examples,
        aggregated=g.examples > 0,
    )
    c.planner.observe(
        plan, RoundReplies(results=g.results, failures=failures, reply_s=g.reply_s), as_round
    )
