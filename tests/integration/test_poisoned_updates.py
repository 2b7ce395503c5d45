"""Poisoned updates from one agent, under every strategy (issue 17 §3).

One of six agents sends an update that is NaN, infinite, finite but enormous (1e30, or the honest
update scaled by a million), of the wrong shape, of an integer dtype, or short of a layer. The
round goes through the real round collector (the in-memory fleet shares it with the MQTT fleet)
and the engine's ``close_round`` with each strategy. What is checked, for every pair:

- the round completes and aggregates;
- the poisoned agent is a failure (``rejected update: ...``) and its drop is counted;
- the new global model is *exactly* the one of the same round in which that agent had simply
  failed: its contribution, and only it, is lost. The model is finite.

Over MQTT the codec refuses NaN and Inf before the collector (``non_finite``), which
``tests/faults/test_garbage_over_mqtt.py`` and ``tests/unit/test_codec.py`` check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from coordinator.engine import close_round, start
from coordinator.fleet import InMemoryFleet, LocalAgent, RoundReplies
from coordinator.model import Evaluation
from coordinator.strategies import STRATEGY_NAMES, Strategy, make_strategy
from protocol import Failure, Hello, TrainConfig, TrainIns, TrainRes, Weights

CURRENT: Weights = (
    np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3),
    np.array([0.1, -0.2, 0.3], dtype=np.float32),
)
HONEST = [f"a{i}" for i in range(5)]
POISONED = "evil"


def _honest(i: int) -> Weights:
    rng = np.random.default_rng(i)
    return tuple((w + 0.05 * rng.standard_normal(w.shape)).astype(np.float32) for w in CURRENT)


POISONS: dict[str, tuple[Callable[[Weights], Weights], str]] = {
    "NaN": (lambda w: tuple(np.full_like(a, np.nan) for a in w), "out_of_range"),
    "one Inf": (lambda w: (w[0], np.array([0.0, np.inf, 0.0], np.float32)), "out_of_range"),
    "1e30 everywhere": (lambda w: tuple(np.full_like(a, 1e30) for a in w), "out_of_range"),
    "scaled a million times": (
        lambda w: tuple(
            (c + 1e6 * (a - c)).astype(np.float32) for a, c in zip(w, CURRENT, strict=True)
        ),
        "out_of_range",
    ),
    "wrong shape": (lambda w: (w[0].T.copy(), w[1]), "shape"),
    "integer dtype": (lambda w: (w[0].astype(np.int32), w[1]), "shape"),
    "a layer short": (lambda w: (w[0],), "shape"),
}


def _strategy(name: str) -> Strategy:
    # fedbuff aggregates a full buffer: make it the round's size
    return make_strategy(name, **({"buffer_size": 5} if name == "fedbuff" else {}))


def _round(poison: Callable[[Weights], Weights] | None) -> tuple[RoundReplies, InMemoryFleet]:
    def agent(weights: Weights | None) -> LocalAgent:
        async def call(ins: TrainIns) -> TrainRes | Failure:
            if weights is None:
                return Failure(code="agent_error", reason="it failed instead")
            return TrainRes(weights=weights, num_examples=10, steps=1, loss=0.5, train_s=0.1)

        return call

    hello = Hello(device_class="x86-cpu", arch="x86_64", cores=1, memory_bytes=1, num_examples=10)
    agents = {a: (hello, agent(_honest(i))) for i, a in enumerate(HONEST)}
    agents[POISONED] = (hello, agent(None if poison is None else poison(_honest(99))))
    fleet = InMemoryFleet(agents)
    ins = TrainIns(model="{}", weights=CURRENT, config=TrainConfig(), budget_s=10.0)
    replies = asyncio.run(
        fleet.train(
            job_id="job",
            round=1,
            instructions={a: ins for a in agents},
            reference=CURRENT,
            quorum=len(agents),
            timeout_s=10.0,
        )
    )
    return replies, fleet


def _close(strategy_name: str, replies: RoundReplies) -> Weights:
    strategy = _strategy(strategy_name)
    strategy.initialize(CURRENT)
    progress, record = close_round(
        start("job", CURRENT),
        round_no=1,
        participants=(*HONEST, POISONED),
        min_results=1,
        replies=replies,
        aggregate=lambda u, f: strategy.aggregate_train(1, CURRENT, u, f),
        evaluate=lambda w: Evaluation(loss=1.0, accuracy=0.5, num_examples=1),
        started_s=0.0,
        elapsed=lambda: 1.0,
    )
    assert record.aggregated, record.note
    assert record.results == len(HONEST)
    return progress.weights


@pytest.fixture(scope="module")
def baseline() -> RoundReplies:
    """The round in which the sixth agent simply failed."""
    replies, _ = _round(None)
    assert sorted(replies.results) == HONEST
    return replies


@pytest.mark.parametrize("poison", POISONS)
@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_a_poisoned_update_costs_only_its_agents_contribution(
    strategy: str, poison: str, baseline: RoundReplies
) -> None:
    make, code = POISONS[poison]
    replies, fleet = _round(make)
    assert sorted(replies.results) == HONEST
    assert replies.failures[POISONED].startswith("rejected update:")
    assert fleet.dropped == {code: 1}
    got = _close(strategy, replies)
    want = _close(strategy, baseline)
    for g, w in zip(got, want, strict=True):
        assert np.isfinite(g).all()
        np.testing.assert_array_equal(g, w)
