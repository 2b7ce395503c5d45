"""Asynchronous (buffered) rounds as a pure state machine: FedBuff.

Nguyen, Malik, Zhan, Yousefpour, Rabbat, Malek, Huba, "Federated Learning with Buffered
Asynchronous Aggregation", AISTATS 2022 (arXiv:2106.06639), Algorithm 1. Agents train without
rounds: each idle agent is handed the newest model version (at most ``concurrency`` train at
once); each reply goes into a buffer and its agent is free for new work at once; every
``buffer_size`` (K) buffered updates the server steps to a new version::

    tau_i   = version now - version update i was trained from       (its staleness)
    s(tau)  = 1 / sqrt(1 + tau)                                      (the paper's Sec. 5 choice)
    u_i     = current + s(tau_i) * (w_i - base_i)                    (rebased, discounted)
    agg     = rule(u_1 .. u_K)                                       (FedAvg, median, Krum, ...)
    new     = current + server_lr * (agg - current)                  (the server learning rate)

With FedAvg as the rule this is the paper's ``w <- w + eta_g * sum_i n_i s(tau_i) Delta_i /
sum_i n_i`` (example-weighted in place of the paper's plain 1/K). Rebasing first lets any of
our rules, robust ones included, aggregate a buffer whose updates were trained from different
versions. Updates staler than ``max_staleness`` are not buffered: dropped and counted (a bound
the paper's analysis assumes, ``tau <= tau_max``).

The transitions (``state, output = f(state, inputs)``)::

    state = AsyncState(version=progress.round)
    state, agents = issue(state, idle, concurrency=..., seed=...)    # who gets work now
    state = release(state, agent_id, rest_until_s=...)               # one of them got none
    state, verdict = receive(state, agent_id, update_or_failure, ...)  # one reply in
    if ready(state, buffer_size): state, updates = take(state)      # the K updates to aggregate

Nothing here does I/O or keeps weights of old versions: the service computes ``rebase`` when a
reply arrives (the buffer's version cannot change before it is aggregated).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from protocol import Weights

from .strategies import ClientUpdate

__all__ = [
    "AsyncState",
    "Verdict",
    "issue",
    "ready",
    "rebase",
    "receive",
    "release",
    "server_step",
    "staleness_weight",
    "take",
]

Verdict = Literal["buffered", "stale", "failed", "unknown"]
"""What :func:`receive` did with a reply: buffered it, dropped it as too stale, counted the
agent's failure, or ignored it (no work of that agent's is in flight)."""


def staleness_weight(staleness: int) -> float:
    """FedBuff's staleness discount ``s(tau) = 1 / sqrt(1 + tau)`` (Nguyen et al. 2022, Sec. 5,
    after Xie et al. 2019's polynomial FedAsync weights). ``staleness`` in versions, ``>= 0``;
    raises :class:`ValueError` for a negative one."""
    if staleness < 0:
        raise ValueError(f"staleness must be >= 0, got {staleness}")
    return 1.0 / math.sqrt(1.0 + staleness)


def rebase(current: Weights, base: Weights, trained: Weights, staleness: int) -> Weights:
    """``current + s(staleness) * (trained - base)``: an update trained from ``base`` as a
    discounted step from ``current`` (float32 arrays, the shapes of ``current``)."""
    s = staleness_weight(staleness)
    return tuple(
        (
            np.asarray(c, dtype=np.float64)
            + s * (np.asarray(t, dtype=np.float64) - np.asarray(b, dtype=np.float64))
        ).astype(np.float32)
        for c, b, t in zip(current, base, trained, strict=True)
    )


def server_step(current: Weights, aggregate: Weights, server_lr: float) -> Weights:
    """``current + server_lr * (aggregate - current)`` (FedBuff's server learning rate
    ``eta_g``; ``1.0`` takes the aggregate as it is)."""
    if server_lr == 1.0:
        return aggregate
    return tuple(
        (
            np.asarray(c, dtype=np.float64)
            + server_lr * (np.asarray(a, dtype=np.float64) - np.asarray(c, dtype=np.float64))
        ).astype(np.float32)
        for c, a in zip(current, aggregate, strict=True)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AsyncState:
    """The asynchronous job between two versions."""

    version: int = 0
    """The newest model version (the job's ``progress.round``: each aggregation is one)."""
    in_flight: Mapping[str, int] = field(default_factory=dict)
    """Agent id → the version its current work was trained from."""
    buffer: tuple[ClientUpdate, ...] = ()
    """Updates since the last version, already rebased (``staleness`` says by how much)."""
    failures: Mapping[str, str] = field(default_factory=dict)
    """Agent id → why its latest work since the last version brought nothing."""
    stale_dropped: int = 0
    """Updates dropped for staleness beyond the bound, over the whole job."""
    issued: int = 0
    """Work handed out over this coordinator run (seeds the draw of who gets work)."""
    failed_in_a_row: int = 0
    """Failures since the last update that was buffered (stops a job nobody can serve)."""
    resting: Mapping[str, float] = field(default_factory=dict)
    """Agent id → job time (s) before which a failed agent gets no new work."""


def issue(
    state: AsyncState,
    idle: Sequence[str],
    *,
    concurrency: int,
    seed: int,
    now_s: float = 0.0,
) -> tuple[AsyncState, tuple[str, ...]]:
    """Hand the current version to idle agents, up to ``concurrency`` in flight in all.

    ``idle``: available agents (already in flight or resting ones are skipped). Who gets the
    free slots is a uniform draw (FedBuff samples clients uniformly), reproducible from
    ``seed`` and the work handed out so far. Returns the state with them in flight and their ids
    (sorted)."""
    free = concurrency - len(state.in_flight)
    candidates = sorted(
        a for a in set(idle) if a not in state.in_flight and state.resting.get(a, 0.0) <= now_s
    )
    if free <= 0 or not candidates:
        return state, ()
    rng = random.Random(f"{seed}:{state.version}:{state.issued}")
    chosen = tuple(sorted(rng.sample(candidates, min(free, len(candidates)))))
    in_flight = {**state.in_flight, **dict.fromkeys(chosen, state.version)}
    resting = {a: t for a, t in state.resting.items() if t > now_s}
    return (
        dataclasses.replace(
            state, in_flight=in_flight, issued=state.issued + len(chosen), resting=resting
        ),
        chosen,
    )


def release(state: AsyncState, agent_id: str, *, rest_until_s: float) -> AsyncState:
    """Take back work handed to ``agent_id`` that was never sent (no work fits the agent, or no
    time is left); nothing is counted, and the agent gets no new work before ``rest_until_s``
    (job time)."""
    return dataclasses.replace(
        state,
        in_flight={a: v for a, v in state.in_flight.items() if a != agent_id},
        resting={**state.resting, agent_id: rest_until_s},
    )


def receive(
    state: AsyncState,
    agent_id: str,
    reply: ClientUpdate | str,
    *,
    max_staleness: int,
    now_s: float = 0.0,
    rest_s: float = 0.0,
) -> tuple[AsyncState, Verdict]:
    """Take ``agent_id``'s reply to its work in flight: an update (rebased by the caller, its
    ``staleness`` = version now − the version it was trained from) or the reason it failed.

    An update staler than ``max_staleness`` is dropped and counted in ``stale_dropped``; a
    failure is recorded and the agent rests ``rest_s`` seconds (job time from ``now_s``). A
    reply from an agent with no work in flight (say, for an earlier coordinator run) is
    ``unknown`` and changes nothing."""
    if agent_id not in state.in_flight:
        return state, "unknown"
    in_flight = {a: v for a, v in state.in_flight.items() if a != agent_id}
    if isinstance(reply, str):
        return (
            dataclasses.replace(
                state,
                in_flight=in_flight,
                failures={**state.failures, agent_id: reply},
                failed_in_a_row=state.failed_in_a_row + 1,
                resting={**state.resting, agent_id: now_s + rest_s},
            ),
            "failed",
        )
    if reply.staleness > max_staleness:
        return (
            dataclasses.replace(state, in_flight=in_flight, stale_dropped=state.stale_dropped + 1),
            "stale",
        )
    return (
        dataclasses.replace(
            state, in_flight=in_flight, buffer=(*state.buffer, reply), failed_in_a_row=0
        ),
        "buffered",
    )


def ready(state: AsyncState, buffer_size: int) -> bool:
    """Whether the buffer holds ``buffer_size`` (K) updates: time for a new version."""
    return len(state.buffer) >= buffer_size


def take(state: AsyncState) -> tuple[AsyncState, tuple[ClientUpdate, ...]]:
    """Empty the buffer into the next version: return the state at ``version + 1`` (failures
    since the last version cleared) and the updates to aggregate into it."""
    return (
        dataclasses.replace(state, version=state.version + 1, buffer=(), failures={}),
        state.buffer,
    )
