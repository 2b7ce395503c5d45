"""The asynchronous (FedBuff) state machine: staleness weights, the bound, the buffer, hand-out."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

from coordinator.async_rounds import (
    AsyncState,
    issue,
    ready,
    rebase,
    receive,
    release,
    server_step,
    staleness_weight,
    take,
)
from coordinator.strategies import ClientUpdate
from protocol import Weights


def w(*values: float) -> Weights:
    return (np.asarray(values, dtype=np.float32),)


def update(agent_id: str, staleness: int, value: float = 1.0) -> ClientUpdate:
    return ClientUpdate(
        agent_id=agent_id, weights=w(value), num_examples=10, loss=0.1, staleness=staleness
    )


# --- staleness weights -----------------------------------------------------------------------


def test_the_staleness_weight_is_fedbuffs_inverse_square_root() -> None:
    assert staleness_weight(0) == 1.0
    assert staleness_weight(3) == pytest.approx(0.5)
    assert staleness_weight(8) == pytest.approx(1 / 3)
    weights = [staleness_weight(t) for t in range(20)]
    assert weights == sorted(weights, reverse=True)  # staler never counts more
    with pytest.raises(ValueError, match="staleness"):
        staleness_weight(-1)


def test_rebase_moves_the_current_model_by_the_discounted_delta() -> None:
    # Trained from base 1.0 to 3.0 (delta 2), three versions stale (s = 1/2), onto current 10.
    out = rebase(w(10.0, 0.0), w(1.0, 0.0), w(3.0, -4.0), staleness=3)
    np.testing.assert_allclose(out[0], [11.0, -2.0])
    assert out[0].dtype == np.float32
    # A fresh update trained from the current model is the update itself.
    np.testing.assert_allclose(rebase(w(1.0), w(1.0), w(5.0), 0)[0], [5.0])


def test_the_server_learning_rate_scales_the_step() -> None:
    np.testing.assert_allclose(server_step(w(1.0), w(3.0), 0.5)[0], [2.0])
    np.testing.assert_allclose(server_step(w(1.0), w(3.0), 1.0)[0], [3.0])
    np.testing.assert_allclose(server_step(w(1.0), w(3.0), 2.0)[0], [5.0])


# --- hand-out --------------------------------------------------------------------------------


def test_work_goes_to_idle_agents_up_to_the_concurrency() -> None:
    state = AsyncState(version=4)
    state, chosen = issue(state, ["a", "b", "c", "d"], concurrency=3, seed=0)
    assert len(chosen) == 3
    assert dict(state.in_flight) == dict.fromkeys(chosen, 4)
    # Full: nobody else gets work, however many are idle.
    again, more = issue(state, ["a", "b", "c", "d"], concurrency=3, seed=0)
    assert more == ()
    assert again == state
    # One reply frees one slot, for the agent left out or the one that just replied.
    first = chosen[0]
    state, _ = receive(state, first, update(first, 0), max_staleness=2)
    state, more = issue(state, ["a", "b", "c", "d"], concurrency=3, seed=0)
    assert len(more) == 1
    assert more[0] not in set(chosen) - {first}


def test_the_draw_is_reproducible_and_spreads_over_the_fleet() -> None:
    idle = [f"a{i}" for i in range(10)]
    one = issue(AsyncState(), idle, concurrency=3, seed=5)[1]
    assert one == issue(AsyncState(), idle, concurrency=3, seed=5)[1]
    drawn: set[str] = set()
    state = AsyncState()
    for _ in range(20):
        state, chosen = issue(state, idle, concurrency=3, seed=5)
        drawn |= set(chosen)
        for agent_id in chosen:
            state, _ = receive(state, agent_id, update(agent_id, 0), max_staleness=0)
    assert drawn == set(idle)


def test_a_failed_agent_rests_before_new_work() -> None:
    state, _ = issue(AsyncState(), ["a"], concurrency=1, seed=0)
    state, verdict = receive(state, "a", "timeout: no reply", max_staleness=1, now_s=10.0,
                             rest_s=2.0)  # fmt: skip
    assert verdict == "failed"
    assert state.failures == {"a": "timeout: no reply"}
    assert state.failed_in_a_row == 1
    assert issue(state, ["a"], concurrency=1, seed=0, now_s=11.0)[1] == ()
    assert issue(state, ["a"], concurrency=1, seed=0, now_s=12.0)[1] == ("a",)


def test_work_never_sent_is_taken_back_without_counting() -> None:
    state, chosen = issue(AsyncState(version=2), ["a", "b"], concurrency=2, seed=0)
    assert chosen == ("a", "b")
    state = release(state, "a", rest_until_s=5.0)
    assert dict(state.in_flight) == {"b": 2}
    assert state.failed_in_a_row == 0
    assert state.failures == {}
    assert issue(state, ["a"], concurrency=2, seed=0, now_s=4.0)[1] == ()
    assert issue(state, ["a"], concurrency=2, seed=0, now_s=5.0)[1] == ("a",)


# --- the staleness bound ---------------------------------------------------------------------


def test_updates_beyond_the_staleness_bound_are_dropped_and_counted() -> None:
    state = AsyncState(version=7, in_flight={"a": 2, "b": 5, "c": 7})
    state, verdict = receive(state, "a", update("a", 5), max_staleness=2)
    assert verdict == "stale"
    state, verdict = receive(state, "b", update("b", 2), max_staleness=2)
    assert verdict == "buffered"
    state, verdict = receive(state, "c", update("c", 0), max_staleness=2)
    assert verdict == "buffered"
    assert state.stale_dropped == 1
    assert [u.agent_id for u in state.buffer] == ["b", "c"]
    assert state.in_flight == {}


def test_a_reply_with_no_work_in_flight_changes_nothing() -> None:
    # Say, a late reply to an instruction of the coordinator run before a restart.
    state = AsyncState(version=3, in_flight={"b": 3})
    after, verdict = receive(state, "a", update("a", 0), max_staleness=5)
    assert verdict == "unknown"
    assert after == state


def test_a_buffered_update_resets_the_failure_run() -> None:
    state = AsyncState(in_flight={"a": 0, "b": 0}, failed_in_a_row=4)
    state, _ = receive(state, "a", update("a", 0), max_staleness=0)
    assert state.failed_in_a_row == 0


# --- the buffer ------------------------------------------------------------------------------


def test_a_buffer_of_k_updates_makes_the_next_version() -> None:
    state = AsyncState(version=2, in_flight={"a": 2, "b": 1, "c": 2}, failures={"x": "timeout"})
    state, _ = receive(state, "a", update("a", 0), max_staleness=3)
    state, _ = receive(state, "b", update("b", 1), max_staleness=3)
    assert not ready(state, 3)
    state, _ = receive(state, "c", update("c", 0), max_staleness=3)
    assert ready(state, 3)

    state, updates = take(state)

    assert [u.agent_id for u in updates] == ["a", "b", "c"]
    assert [u.staleness for u in updates] == [0, 1, 0]
    assert state.version == 3
    assert state.buffer == ()
    assert state.failures == {}
    assert not ready(state, 3)


def test_one_agent_may_bring_two_updates_to_a_buffer() -> None:
    # A fast agent is given new work at once and may reply again before the buffer fills.
    state = AsyncState(version=0)
    for _ in range(2):
        state, chosen = issue(state, ["fast"], concurrency=2, seed=0)
        assert chosen == ("fast",)
        state, _ = receive(state, "fast", update("fast", 0), max_staleness=0)
    assert [u.agent_id for u in state.buffer] == ["fast", "fast"]
    assert ready(state, 2)


def test_fedavg_over_a_rebased_buffer_is_fedbuffs_step() -> None:
    """With FedAvg as the rule, the version is w + eta * sum n_i s(tau_i) delta_i / sum n_i."""
    from coordinator.strategies import FedAvg

    current = w(0.0)
    deltas, stale = [2.0, 4.0], [0, 3]
    updates = [
        ClientUpdate(
            agent_id=f"a{i}",
            weights=rebase(current, w(0.0), w(d), t),
            num_examples=10,
            loss=0.0,
            staleness=t,
        )
        for i, (d, t) in enumerate(zip(deltas, stale, strict=True))
    ]
    new = server_step(current, FedAvg().aggregate_train(1, current, updates, []), 0.5)
    expected = 0.5 * sum(d / math.sqrt(1 + t) for d, t in zip(deltas, stale, strict=True)) / 2
    np.testing.assert_allclose(new[0], [expected], rtol=1e-6)


# --- what stops an async job -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("progress", "state", "reason"),
    [
        ({}, {}, None),
        ({"best_accuracy": 0.95}, {}, "reached"),
        ({"elapsed_s": 100.0}, {}, "time_budget"),
        ({"round": 10}, {}, "max_rounds"),
        ({"bytes_moved": 1000}, {}, "max_bytes"),
        ({"infeasible_at_s": 5.0}, {}, "infeasible"),
        ({}, {"failed_in_a_row": 5}, None),
        ({}, {"failed_in_a_row": 6}, "no_results"),  # max_empty_rounds (2) x buffer_size (3)
    ],
)
def test_the_jobs_constraints_stop_an_async_job(
    progress: dict[str, Any], state: dict[str, Any], reason: str | None
) -> None:
    from coordinator.async_service import async_stop_reason
    from coordinator.engine import start
    from coordinator.job import Constraints

    constraints = Constraints(
        target_accuracy=0.9,
        time_budget_s=100.0,
        max_rounds=10,
        max_bytes=1000,
        on_infeasible="stop",
        max_empty_rounds=2,
    )
    job = dataclasses.replace(start("job", w(0.0)), **progress)
    got = async_stop_reason(job, AsyncState(**state), constraints, buffer_size=3)
    assert got == reason
