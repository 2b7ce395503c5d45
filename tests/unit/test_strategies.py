"""Aggregation strategies on small arrays whose results were worked out by hand.

Each expected number is written literally, with the hand computation beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

import coordinator.strategies as strategies
from coordinator.errors import InsufficientUpdates, StrategyError
from coordinator.strategies import (
    STRATEGY_NAMES,
    ClientUpdate,
    FedAdam,
    FedAvg,
    FedBuff,
    FedMedian,
    FedProx,
    FedYogi,
    Krum,
    Strategy,
    TrimmedMean,
    make_strategy,
)
from protocol import Weights


def w(*arrays: Sequence[float] | Sequence[Sequence[float]]) -> Weights:
    """Model weights (float32) from nested lists, one argument per layer."""
    return tuple(np.asarray(a, dtype=np.float32) for a in arrays)


def upd(
    agent: str, *arrays: Sequence[float] | Sequence[Sequence[float]], n: int = 1, staleness: int = 0
) -> ClientUpdate:
    return ClientUpdate(
        agent_id=agent, weights=w(*arrays), num_examples=n, loss=0.5, staleness=staleness
    )


def approx(values: list[float]) -> object:
    return pytest.approx(values, rel=1e-6, abs=1e-7)


def every_strategy() -> list[Strategy]:
    return [make_strategy(name) for name in STRATEGY_NAMES]


# --- the contract every strategy honours ------------------------------------------------------


@pytest.mark.parametrize("strategy", every_strategy(), ids=lambda s: s.name)
def test_every_strategy_returns_float32_arrays_shaped_like_current(strategy: Strategy) -> None:
    current = w([0.0, 0.0], [[0.0], [0.0]])
    results = [upd(f"a{i}", [i, -i], [[2.0 * i], [1.0]], n=i + 1) for i in range(5)]
    new = strategy.aggregate_train(1, current, results, [])
    assert [a.dtype for a in new] == [np.float32, np.float32]
    assert [a.shape for a in new] == [(2,), (2, 1)]
    assert all(np.all(np.isfinite(a)) for a in new)


@pytest.mark.parametrize("strategy", every_strategy(), ids=lambda s: s.name)
def test_every_strategy_refuses_an_empty_round(strategy: Strategy) -> None:
    with pytest.raises(StrategyError, match="no updates"):
        strategy.aggregate_train(3, w([1.0]), [], ["a1", "a2"])


@pytest.mark.parametrize("strategy", every_strategy(), ids=lambda s: s.name)
def test_every_strategy_refuses_an_update_of_the_wrong_shape(strategy: Strategy) -> None:
    current = w([0.0, 0.0])
    results = [upd(f"a{i}", [1.0, 2.0]) for i in range(4)] + [upd("bad", [1.0, 2.0, 3.0])]
    with pytest.raises(
        StrategyError, match=r"'bad': array 0 has shape \(3,\), the model's is \(2,\)"
    ):
        strategy.aggregate_train(1, current, results, [])


@pytest.mark.parametrize("strategy", every_strategy(), ids=lambda s: s.name)
def test_every_strategy_refuses_an_update_with_a_missing_layer(strategy: Strategy) -> None:
    current = w([0.0], [0.0])
    results = [upd(f"a{i}", [1.0], [2.0]) for i in range(4)] + [upd("short", [1.0])]
    with pytest.raises(StrategyError, match="'short' has 1 arrays, the model has 2"):
        strategy.aggregate_train(1, current, results, [])


# --- FedAvg and FedProx ------------------------------------------------------------------------


def test_fedavg_weighs_each_update_by_its_examples() -> None:
    # layer 0: (1*[1,2] + 3*[3,4]) / 4 = [10/4, 14/4] = [2.5, 3.5]
    # layer 1: (1*10 + 3*30) / 4 = 100/4 = 25
    new = FedAvg().aggregate_train(
        1,
        w([0.0, 0.0], [[0.0]]),
        [upd("a", [1, 2], [[10]], n=1), upd("b", [3, 4], [[30]], n=3)],
        [],
    )
    assert new[0].tolist() == [2.5, 3.5]
    assert new[1].tolist() == [[25.0]]


def test_fedavg_refuses_when_no_update_has_examples() -> None:
    with pytest.raises(StrategyError, match="sum to 0"):
        FedAvg().aggregate_train(1, w([0.0]), [upd("a", [1], n=0), upd("b", [3], n=0)], [])


def test_fedavg_refuses_a_negative_example_count() -> None:
    with pytest.raises(StrategyError, match="'b' reports -2 examples"):
        FedAvg().aggregate_train(1, w([0.0]), [upd("a", [1], n=5), upd("b", [3], n=-2)], [])


def test_fedprox_sends_its_mu_and_averages_like_fedavg() -> None:
    strategy = FedProx(proximal_mu=0.5)
    assert strategy.train_options() == {"proximal_mu": 0.5}
    assert FedProx().train_options() == {"proximal_mu": 0.01}
    assert FedAvg().train_options() == {}
    new = strategy.aggregate_train(
        1, w([0.0, 0.0]), [upd("a", [1, 2], n=1), upd("b", [3, 4], n=3)], []
    )
    assert new[0].tolist() == [2.5, 3.5]


def test_fedprox_accepts_zero_and_refuses_negative_mu() -> None:
    assert FedProx(proximal_mu=0.0).train_options() == {"proximal_mu": 0.0}
    with pytest.raises(StrategyError, match=r"proximal_mu must be a number >= 0, got -0\.1"):
        FedProx(proximal_mu=-0.1)


# --- FedAdam and FedYogi -----------------------------------------------------------------------
# eta=0.5, beta_1=0.9, beta_2=0.99, tau=0.05. Coordinate 0 starts at 0; coordinate 1 at 5 and
# never moves (delta 0 -> m 0 -> step 0).
# Round 1: fedavg([1,5] x2 examples, [3,5] x2 examples) = [2,5], delta = [2,0]
#   m = 0.1*2 = 0.2; Adam v = 0.01*4 = 0.04; Yogi v = 0 - 0.01*4*sign(0-4) = 0.04
#   new = 0 + 0.5 * 0.2 / (sqrt(0.04) + 0.05) = 0.5 * 0.2 / 0.25 = 0.4
# Round 2: the one update is [-0.6, 5], so delta = -0.6 - 0.4 = -1
#   m = 0.9*0.2 + 0.1*(-1) = 0.08
#   Adam v = 0.99*0.04 + 0.01*1 = 0.0496 -> new = 0.4 + 0.5*0.08/(0.2227105745 + 0.05) = 0.5466757
#   Yogi v = 0.04 - 0.01*1*sign(0.04-1) = 0.05 -> new = 0.4 + 0.5*0.08/(0.2236067977 + 0.05)
#        = 0.5461953

OPT = {"eta": 0.5, "beta_1": 0.9, "beta_2": 0.99, "tau": 0.05}
ROUND_1 = [upd("a", [1.0, 5.0], n=2), upd("b", [3.0, 5.0], n=2)]
ROUND_2 = [upd("a", [-0.6, 5.0], n=4)]


@pytest.mark.parametrize(
    ("cls", "v_2", "x_2"), [(FedAdam, 0.0496, 0.5466757), (FedYogi, 0.05, 0.5461953)]
)
def test_fedopt_first_two_steps(cls: type[FedAdam | FedYogi], v_2: float, x_2: float) -> None:
    strategy = cls(**OPT)
    current = w([0.0, 5.0])
    strategy.initialize(current)
    first = strategy.aggregate_train(1, current, ROUND_1, [])
    assert first[0].tolist() == approx([0.4, 5.0])
    assert strategy.state()["m"][0].tolist() == approx([0.2, 0.0])
    assert strategy.state()["v"][0].tolist() == approx([0.04, 0.0])
    second = strategy.aggregate_train(2, first, ROUND_2, [])
    assert second[0].tolist() == approx([x_2, 5.0])
    assert strategy.state()["m"][0].tolist() == approx([0.08, 0.0])
    assert strategy.state()["v"][0].tolist() == approx([v_2, 0.0])
    assert second[0].dtype == np.float32


def test_fedyogi_shrinks_v_additively_where_adam_decays_it() -> None:
    # After round 1 v = 0.04. Next delta = 0.1, delta^2 = 0.01 < v:
    #   Yogi v = 0.04 - 0.01*0.01*sign(0.04-0.01) = 0.0399; Adam v = 0.99*0.04 + 0.01*0.01 = 0.0397
    small = [upd("a", [0.5, 5.0])]  # 0.4 + 0.1
    yogi, adam = FedYogi(**OPT), FedAdam(**OPT)
    for strategy in (yogi, adam):
        strategy.aggregate_train(
            2, strategy.aggregate_train(1, w([0.0, 5.0]), ROUND_1, []), small, []
        )
    assert yogi.state()["v"][0].tolist() == approx([0.0399, 0.0])
    assert adam.state()["v"][0].tolist() == approx([0.0397, 0.0])


@pytest.mark.parametrize("cls", [FedAdam, FedYogi])
def test_fedopt_state_restore_gives_the_same_next_step(cls: type[FedAdam | FedYogi]) -> None:
    original = cls(**OPT)
    first = original.aggregate_train(1, w([0.0, 5.0]), ROUND_1, [])
    saved = original.state()
    assert sorted(saved) == ["m", "v"]
    resumed = cls(**OPT)
    resumed.restore(saved)
    fresh = cls(**OPT)  # same inputs without the moments: a different step
    expected = original.aggregate_train(2, first, ROUND_2, [])
    assert resumed.aggregate_train(2, first, ROUND_2, [])[0].tolist() == expected[0].tolist()
    assert fresh.aggregate_train(2, first, ROUND_2, [])[0].tolist() != expected[0].tolist()


def test_fedopt_state_is_a_copy_and_initialize_resets_it() -> None:
    strategy = FedAdam(**OPT)
    strategy.aggregate_train(1, w([0.0, 5.0]), ROUND_1, [])
    strategy.state()["m"][0][0] = 99.0
    assert strategy.state()["m"][0].tolist() == approx([0.2, 0.0])
    strategy.initialize(w([0.0, 5.0]))
    assert strategy.state()["m"][0].tolist() == [0.0, 0.0]
    assert strategy.state()["v"][0].tolist() == [0.0, 0.0]


def test_fedopt_refuses_a_malformed_state_and_misfitting_moments() -> None:
    strategy = FedYogi(**OPT)
    with pytest.raises(StrategyError, match="needs 'm' and 'v'"):
        strategy.restore({"m": w([0.0])})
    strategy.initialize(w([0.0, 0.0, 0.0]))
    with pytest.raises(StrategyError, match="moments do not fit the model"):
        strategy.aggregate_train(1, w([0.0, 5.0]), ROUND_1, [])


def test_fedopt_refuses_bad_hyperparameters() -> None:
    with pytest.raises(StrategyError, match="fedadam beta_1 must be in"):
        FedAdam(beta_1=1.0)
    with pytest.raises(StrategyError, match="fedyogi tau must be a number > 0"):
        FedYogi(tau=0.0)


@pytest.mark.parametrize("cls", [FedAdam, FedYogi])
def test_fedopt_commits_nothing_that_is_not_finite(cls: type[FedAdam | FedYogi]) -> None:
    """Issue 13: one update of all-1e30 values overflowed v to inf; the model then never moved
    (m / sqrt(inf) = 0) and the inf state was checkpointed. Now the round is refused and the
    previous state stays."""
    strategy = cls(**OPT)
    first = strategy.aggregate_train(1, w([0.0, 5.0]), ROUND_1, [])
    before = strategy.state()
    with pytest.raises(StrategyError, match="not be finite"):
        strategy.aggregate_train(2, first, [upd("evil", [1e30, 1e30], n=4)], [])
    after = strategy.state()
    for key in ("m", "v"):
        assert [a.tolist() for a in after[key]] == [a.tolist() for a in before[key]]
        assert all(np.isfinite(a).all() for a in after[key])
    # ... and the next honest round steps exactly as if the bad one never came.
    control = cls(**OPT)
    control.restore(before)
    assert (
        strategy.aggregate_train(2, first, ROUND_2, [])[0].tolist()
        == control.aggregate_train(2, first, ROUND_2, [])[0].tolist()
    )


# --- robust rules ------------------------------------------------------------------------------


def test_fedmedian_odd_n_ignores_the_outlier_and_the_example_counts() -> None:
    # coordinate 0: median(1, 2, 100) = 2; coordinate 1: median(10, 20, -5) = 10
    results = [upd("a", [1, 10]), upd("b", [2, 20]), upd("evil", [100, -5], n=1000)]
    assert FedMedian().aggregate_train(1, w([0.0, 0.0]), results, [])[0].tolist() == [2.0, 10.0]


def test_fedmedian_even_n_averages_the_two_middle_values() -> None:
    # sorted 1, 2, 3, 100 -> (2 + 3) / 2 = 2.5
    results = [upd("a", [3]), upd("b", [1]), upd("c", [100]), upd("d", [2])]
    assert FedMedian().aggregate_train(1, w([0.0]), results, [])[0].tolist() == [2.5]


def test_trimmed_mean_discards_the_outlier_at_each_end() -> None:
    # beta=0.2, n=5: floor(0.2*5) = 1 value dropped from each end, per coordinate.
    # coordinate 0: 1, 2, 3, 4, 100 -> mean(2, 3, 4) = 3   (plain mean would be 22)
    # coordinate 1: -50, 5, 6, 7, 8 -> mean(5, 6, 7) = 6
    values = [[1, 8], [2, 5], [3, 6], [4, -50], [100, 7]]
    results = [upd(f"a{i}", v, n=10 * i + 1) for i, v in enumerate(values)]
    new = TrimmedMean(beta=0.2).aggregate_train(1, w([0.0, 0.0]), results, [])
    assert new[0].tolist() == [3.0, 6.0]


def test_trimmed_mean_keeps_everything_when_beta_times_n_is_below_one() -> None:
    # beta=0.1, n=5: floor(0.5) = 0 -> plain mean (1+2+3+4+100)/5 = 22
    results = [upd(f"a{i}", [v]) for i, v in enumerate([1, 2, 3, 4, 100])]
    assert TrimmedMean(beta=0.1).aggregate_train(1, w([0.0]), results, [])[0].tolist() == [22.0]


def test_trimmed_mean_counts_trimmed_values_despite_float_rounding() -> None:
    assert 0.29 * 100 < 29  # the binary product falls just short
    assert TrimmedMean(beta=0.29).trimmed_per_end(100) == 29
    assert TrimmedMean(beta=0.49).trimmed_per_end(3) == 1
    with pytest.raises(StrategyError, match=r"beta must be in \[0, 0.5\), got 0.5"):
        TrimmedMean(beta=0.5)


def test_krum_picks_the_honest_update_over_an_outlier() -> None:
    # f=1, n=5: each score sums the n-f-2 = 2 smallest squared distances to the others.
    # a=[1,1] b=[1.2,1] c=[1,1.2] d=[0.9,0.9]:
    #   |a-b|^2=0.04 |a-c|^2=0.04 |a-d|^2=0.02 |b-c|^2=0.08 |b-d|^2=0.10 |c-d|^2=0.10
    #   score a = 0.02+0.04 = 0.06; b = 0.04+0.08 = 0.12; c = 0.12; d = 0.02+0.10 = 0.12
    #   the outlier's two nearest are thousands away.
    results = [
        upd("a", [1.0, 1.0]),
        upd("b", [1.2, 1.0]),
        upd("c", [1.0, 1.2]),
        upd("d", [0.9, 0.9]),
        upd("evil", [50.0, -50.0], n=10_000),
    ]
    krum = Krum(num_malicious=1)
    assert krum.scores(results)[:4] == approx([0.06, 0.12, 0.12, 0.12])
    assert krum.scores(results)[4] > 4000
    assert krum.aggregate_train(1, w([0.0, 0.0]), results, [])[0].tolist() == approx([1.0, 1.0])
    # FedAvg on the same round is dragged to the outlier.
    assert FedAvg().aggregate_train(1, w([0.0, 0.0]), results, [])[0][0] > 49


def test_multi_krum_averages_the_best_m_unweighted_across_layers() -> None:
    # Points 0, 1, 3, 6, 100 in layer 0; layer 1 is 0 for all but the outlier (100).
    # f=1 -> 2 nearest: score(0)=1+9=10, score(1)=1+4=5, score(3)=4+9=13, score(6)=9+25=34,
    # score(100) = 94^2+100^2 + 97^2+100^2 = 8836+9409+20000 = 38245.
    # m=3 keeps 1, 0, 3 -> mean (0+1+3)/3 = 4/3, unweighted although "z" claims 1000 examples.
    points = [("x", 0.0, 1), ("y", 1.0, 1), ("z", 3.0, 1000), ("u", 6.0, 1)]
    results = [upd(a, [p], [[0.0]], n=n) for a, p, n in points]
    results.append(upd("evil", [100.0], [[100.0]]))
    krum = Krum(num_malicious=1, num_to_keep=3)
    assert krum.scores(results) == approx([10.0, 5.0, 13.0, 34.0, 38245.0])
    new = krum.aggregate_train(1, w([0.0], [[0.0]]), results, [])
    assert new[0].tolist() == approx([4 / 3])
    assert new[1].tolist() == [[0.0]]
    single = Krum(num_malicious=1).aggregate_train(1, w([0.0], [[0.0]]), results, [])
    assert single[0].tolist() == [1.0]


def test_krum_refuses_fewer_than_2f_plus_3_updates() -> None:
    results = [upd(f"a{i}", [float(i)]) for i in range(4)]
    krum = Krum(num_malicious=1)
    assert krum.min_updates() == 5
    with pytest.raises(InsufficientUpdates) as caught:
        krum.aggregate_train(1, w([0.0]), results, [])
    assert str(caught.value) == (
        "Krum needs at least 2f+3 = 5 updates to tolerate f=1 faulty agents, got 4"
    )
    assert isinstance(caught.value, StrategyError)
    with pytest.raises(InsufficientUpdates, match="got 4"):
        krum.scores(results)


def test_multi_krum_refuses_keeping_more_than_n_minus_f() -> None:
    krum = Krum(num_malicious=1, num_to_keep=5)
    assert krum.min_updates() == 6  # max(2*1+3, 1+5)
    results = [upd(f"a{i}", [float(i)]) for i in range(5)]
    with pytest.raises(InsufficientUpdates, match="at least f\\+m = 6 updates, got 5"):
        krum.aggregate_train(1, w([0.0]), results, [])
    assert Krum(num_malicious=2).min_updates() == 7


# --- FedBuff -----------------------------------------------------------------------------------


def test_fedbuff_discounts_stale_updates() -> None:
    # fresh:  [4] with 10 examples, staleness 0 -> weight 10 / sqrt(1) = 10
    # stale:  [1] with 20 examples, staleness 3 -> weight 20 / sqrt(4) = 10
    # weighted mean = (10*4 + 10*1) / 20 = 2.5   (FedAvg, ignoring staleness: (40+20)/30 = 2)
    results = [upd("fresh", [4.0], n=10), upd("stale", [1.0], n=20, staleness=3)]
    assert FedBuff().aggregate_train(1, w([0.0]), results, [])[0].tolist() == [2.5]
    assert FedAvg().aggregate_train(1, w([0.0]), results, [])[0].tolist() == [2.0]


def test_fedbuff_steps_from_current_by_eta() -> None:
    # current 2, weighted mean 2.5 as above: new = 2 + 0.5 * (2.5 - 2) = 2.25
    results = [upd("fresh", [4.0], n=10), upd("stale", [1.0], n=20, staleness=3)]
    strategy = FedBuff(buffer_size=2, eta=0.5)
    assert strategy.buffer_size == 2
    assert strategy.aggregate_train(7, w([2.0]), results, [])[0].tolist() == [2.25]


def test_fedbuff_refuses_negative_staleness_and_empty_buffer_size() -> None:
    with pytest.raises(StrategyError, match="'x' reports staleness -1"):
        FedBuff().aggregate_train(1, w([0.0]), [upd("x", [1.0], staleness=-1)], [])
    with pytest.raises(StrategyError, match="buffer_size must be >= 1"):
        FedBuff(buffer_size=0)


# --- make_strategy and the package surface -----------------------------------------------------


def test_make_strategy_builds_each_name_with_its_parameters() -> None:
    assert STRATEGY_NAMES == (
        "fedadam",
        "fedavg",
        "fedbuff",
        "fedmedian",
        "fedprox",
        "fedyogi",
        "krum",
        "trimmed_mean",
    )
    assert [make_strategy(name).name for name in STRATEGY_NAMES] == list(STRATEGY_NAMES)
    krum = make_strategy("krum", num_malicious=2.0, num_to_keep=3)
    assert isinstance(krum, Krum)
    assert (krum.num_malicious, krum.num_to_keep) == (2, 3)
    assert type(krum.num_malicious) is int
    assert make_strategy("fedprox", proximal_mu=0.2).train_options() == {"proximal_mu": 0.2}
    yogi = make_strategy("fedyogi", eta=1)
    assert isinstance(yogi, FedYogi)
    assert (yogi.eta, yogi.tau) == (1.0, 1e-3)


def test_make_strategy_refuses_an_unknown_name_listing_the_valid_ones() -> None:
    with pytest.raises(StrategyError) as caught:
        make_strategy("fedsgd")
    assert str(caught.value) == (
        "unknown strategy 'fedsgd'; valid names: fedadam, fedavg, fedbuff, fedmedian, fedprox, "
        "fedyogi, krum, trimmed_mean"
    )


def test_make_strategy_refuses_bad_parameters() -> None:
    with pytest.raises(StrategyError, match="valid parameters: num_malicious, num_to_keep"):
        make_strategy("krum", f=1)
    with pytest.raises(
        StrategyError, match="'fedavg' has no parameter 'eta'; valid parameters: none"
    ):
        make_strategy("fedavg", eta=0.1)
    with pytest.raises(StrategyError, match=r"'num_malicious' must be a whole number, got 1\.5"):
        make_strategy("krum", num_malicious=1.5)
    with pytest.raises(StrategyError, match="proximal_mu must be a number >= 0"):
        make_strategy("fedprox", proximal_mu=-1.0)
    with pytest.raises(StrategyError, match=r"must be a number, got '0\.1'"):
        make_strategy("fedadam", eta="0.1")  # type: ignore[arg-type]
    with pytest.raises(StrategyError, match="must be a number > 0, got nan"):
        make_strategy("fedbuff", eta=math.nan)


def test_stateless_strategies_have_no_state_to_restore() -> None:
    strategy = FedMedian()
    assert strategy.state() == {}
    strategy.restore({})
    with pytest.raises(StrategyError, match="fedmedian keeps no state"):
        strategy.restore({"m": w([0.0])})


def test_package_exports_are_importable() -> None:
    # (their order is ruff's RUF022, run by `make test`)
    assert all(hasattr(strategies, name) for name in strategies.__all__)
