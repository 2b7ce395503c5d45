"""The per-round rate process of an emulated device (:mod:`agent.speed`): log-normal variance
around the nominal rate and Markov on/off background-load episodes. Pure and seeded: statistics
over many draws, no clock."""

from __future__ import annotations

import math
import statistics

import pytest

from agent.speed import SpeedProcess, SpeedSpec


def test_the_log_rate_is_normal_around_the_nominal_rate_with_the_given_sigma() -> None:
    process = SpeedProcess(SpeedSpec(rate=25.0, sigma=0.3), seed=7)
    logs = [math.log(process.rate_at(float(t))) for t in range(20_000)]
    # Standard errors: 0.3 / sqrt(20000) = 0.002 for the mean, about 0.0015 for sigma.
    assert statistics.fmean(logs) == pytest.approx(math.log(25.0), abs=0.01)
    assert statistics.stdev(logs) == pytest.approx(0.3, abs=0.01)
    # Log-normal: the median round runs at the nominal rate, the mean round faster.
    rates = sorted(math.exp(v) for v in logs)
    assert rates[len(rates) // 2] == pytest.approx(25.0, rel=0.02)
    assert statistics.fmean(rates) == pytest.approx(25.0 * math.exp(0.3**2 / 2), rel=0.02)


def test_sigma_zero_and_no_load_give_the_nominal_rate_every_round() -> None:
    process = SpeedProcess(SpeedSpec(rate=3.0), seed=1)
    assert {process.rate_at(float(t)) for t in range(100)} == {3.0}
    assert process.episodes == 0


def test_the_same_seed_gives_the_same_rates_and_another_seed_others() -> None:
    spec = SpeedSpec(
        rate=40.0, sigma=0.2, load_factor=3.0, load_on_mean_s=5.0, load_off_mean_s=20.0
    )
    times = [0.5 * t for t in range(200)]
    first = SpeedProcess(spec, seed=3)
    second = SpeedProcess(spec, seed=3)
    other = SpeedProcess(spec, seed=4)
    run1 = [first.rate_at(t) for t in times]
    assert run1 == [second.rate_at(t) for t in times]
    assert run1 != [other.rate_at(t) for t in times]
    assert len(set(run1)) > 100  # the rates really vary


def test_load_episodes_follow_the_on_off_means_and_divide_the_rate() -> None:
    spec = SpeedSpec(rate=10.0, load_factor=4.0, load_on_mean_s=10.0, load_off_mean_s=40.0)
    assert spec.loaded_share == pytest.approx(0.2)
    process = SpeedProcess(spec, seed=11)
    step = 0.5
    rates = [process.rate_at(i * step) for i in range(200_000)]  # 100,000 device-seconds
    loaded = [r == pytest.approx(2.5) for r in rates]
    assert all(r in (10.0, 2.5) for r in rates)  # no variance asked: nominal, or nominal / 4
    # Long-run share loaded: on / (on + off) = 0.2 (about 2,000 episodes: error ~ 0.007).
    assert sum(loaded) / len(loaded) == pytest.approx(0.2, abs=0.02)
    # Mean episode length from the sampled runs (sampling every 0.5 s shortens each by ~0.25 s).
    runs, current = [], 0
    for flag in loaded:
        if flag:
            current += 1
        elif current:
            runs.append(current * step)
            current = 0
    assert statistics.fmean(runs) == pytest.approx(10.0, rel=0.1)
    # One episode begins per on + off cycle of 50 s on average (a few too short to sample).
    assert process.episodes == pytest.approx(100_000 / 50, rel=0.1)
    assert len(runs) <= process.episodes


def test_load_and_variance_combine() -> None:
    spec = SpeedSpec(
        rate=10.0, sigma=0.25, load_factor=2.0, load_on_mean_s=10.0, load_off_mean_s=10.0
    )
    process = SpeedProcess(spec, seed=5)
    logs = [math.log(process.rate_at(float(t))) for t in range(40_000)]
    # Half the time at rate / 2: the mean log-rate drops by ln(2) / 2.
    assert statistics.fmean(logs) == pytest.approx(math.log(10.0) - math.log(2.0) / 2, abs=0.03)


def test_a_load_factor_of_one_means_no_episodes() -> None:
    spec = SpeedSpec(rate=10.0, load_factor=1.0, load_on_mean_s=1.0, load_off_mean_s=1.0)
    process = SpeedProcess(spec, seed=0)
    assert not any(process.loaded_at(float(t)) for t in range(1000))
    assert spec.loaded_share == 0.0


def test_device_time_may_not_go_backwards() -> None:
    process = SpeedProcess(SpeedSpec(rate=1.0), seed=0)
    process.rate_at(5.0)
    with pytest.raises(ValueError, match="backwards"):
        process.rate_at(4.0)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"rate": 0.0}, "rate"),
        ({"rate": math.inf}, "rate"),
        ({"rate": 1.0, "sigma": -0.1}, "sigma"),
        ({"rate": 1.0, "load_factor": 0.5}, "load_factor"),
        ({"rate": 1.0, "load_on_mean_s": 0.0}, "load_on_mean_s"),
        ({"rate": 1.0, "load_off_mean_s": -1.0}, "load_off_mean_s"),
    ],
)
def test_bad_parameters_are_refused(bad: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SpeedSpec(**bad)
