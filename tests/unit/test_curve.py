"""The learning-curve model: fits of ``error = E + B * (x + x0) ** -c`` and what they predict."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from coordinator.planners.curve import CurveFit, LearningCurve

LINEAR = [500.0 * i for i in range(1, 21)]  # 500 ... 10 000 examples


def power_law(
    floor: float, scale: float, exponent: float, offset: float = 0.0
) -> Callable[[float], float]:
    return lambda x: 1.0 - (floor + scale * (x + offset) ** -exponent)


def curve_of(
    accuracy: Callable[[float], float], xs: Sequence[float], *, noise: float = 0.0, seed: int = 0
) -> LearningCurve:
    rng = np.random.default_rng(seed)
    curve = LearningCurve()
    for x in xs:
        curve.add(x, accuracy(x) + float(rng.normal(0.0, noise)))
    return curve


def true_work(floor: float, scale: float, exponent: float, offset: float, target: float) -> float:
    return float((scale / (1.0 - target - floor)) ** (1.0 / exponent) - offset)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_pure_power_law_is_recovered_well_enough_to_extrapolate(seed: int) -> None:
    curve = curve_of(power_law(0.0, 5.0, 0.5), LINEAR, noise=0.002, seed=seed)
    target = 0.96  # reached at 15 625 examples, half again past the data
    found = curve.optimistic(target)
    assert found is not None
    fit, work = found
    assert work is not None
    assert work == pytest.approx(true_work(0.0, 5.0, 0.5, 0.0, target), rel=0.3)
    assert fit.accuracy_at(work) == pytest.approx(target, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_power_law_with_an_offset_and_a_floor_is_recovered(seed: int) -> None:
    curve = curve_of(power_law(0.02, 3.0, 0.6, offset=2000.0), LINEAR, noise=0.002, seed=seed)
    target = 0.97  # reached at about 11 400 examples, past the data
    found = curve.optimistic(target)
    assert found is not None
    _, work = found
    assert work is not None
    assert work == pytest.approx(true_work(0.02, 3.0, 0.6, 2000.0, target), rel=0.3)


def test_the_fit_follows_the_data_it_was_given() -> None:
    accuracy = power_law(0.0, 5.0, 0.5)
    curve = curve_of(accuracy, LINEAR)
    fit = curve.fit()
    assert fit is not None
    assert fit.points == len(LINEAR)
    # The kept fit is the most optimistic plausible one, and recent rounds weigh more: close on
    # the recent half, looser on the oldest points.
    for x in LINEAR[len(LINEAR) // 2 :]:
        assert fit.accuracy_at(x) == pytest.approx(accuracy(x), abs=0.005)
    for x in LINEAR:
        assert fit.accuracy_at(x) == pytest.approx(accuracy(x), abs=0.03)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "xs",
    [[100.0 * i for i in range(1, 41)], [50.0 * 1.2**i for i in range(40)]],
    ids=["linear", "geometric"],
)
def test_a_curve_that_plateaus_below_the_target_is_out_of_reach(xs: list[float], seed: int) -> None:
    curve = curve_of(power_law(0.15, 2.0, 0.7), xs, noise=0.003, seed=seed)
    found = curve.optimistic(0.95)  # the curve levels off at 0.85
    assert found is not None
    _, work = found
    # Out of reach, or so far beyond the data that no budget would cover it.
    assert work is None or work > 100 * max(xs)


def test_no_prediction_from_fewer_than_min_points() -> None:
    curve = LearningCurve(min_points=4)
    for x in (100.0, 200.0, 300.0):
        curve.add(x, power_law(0.0, 5.0, 0.5)(x))
    assert len(curve) == 3
    assert curve.fits() == []
    assert curve.fit() is None
    assert curve.optimistic(0.9) is None
    curve.add(400.0, power_law(0.0, 5.0, 0.5)(400.0))
    assert curve.fit() is not None
    assert curve.optimistic(0.9) is not None


def test_points_without_compute_or_accuracy_are_ignored() -> None:
    curve = LearningCurve()
    curve.add(0.0, 0.5)
    curve.add(-10.0, 0.5)
    curve.add(100.0, float("nan"))
    curve.add(100.0, float("inf"))
    assert len(curve) == 0
    curve.add(100.0, 0.5)
    assert len(curve) == 1


@pytest.mark.parametrize(
    "accuracy",
    [
        power_law(0.0, 5.0, 0.5),
        power_law(0.15, 2.0, 0.7),
        lambda x: 1.0 - 50.0 * x**-1.0,  # steep: error reaches 0 quickly
        lambda x: 0.5,  # flat
        lambda x: 0.3 + 0.000_05 * x,  # a straight line that would pass 1
    ],
    ids=["power", "plateau", "steep", "flat", "line"],
)
def test_no_fit_promises_more_than_perfect_accuracy(accuracy: Callable[[float], float]) -> None:
    curve = curve_of(lambda x: min(1.0, accuracy(x)), LINEAR)
    fits = curve.fits()
    assert fits
    for fit in fits:
        assert fit.floor >= 0.0
        assert fit.asymptote <= 1.0
    kept = curve.fit()
    assert kept is not None
    assert kept.asymptote == max(f.asymptote for f in fits)


def test_a_flat_curve_asymptotes_at_its_level() -> None:
    curve = curve_of(lambda x: 0.5, LINEAR)
    found = curve.optimistic(0.9)
    assert found is not None
    fit, work = found
    assert work is None
    assert fit.asymptote == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize(
    "fit",
    [
        CurveFit(floor=0.0, scale=5.0, exponent=0.5, points=10, rmse=0.0),
        CurveFit(floor=0.02, scale=3.0, exponent=0.6, points=10, rmse=0.0, offset=2000.0),
        CurveFit(floor=0.1, scale=0.8, exponent=1.7, points=10, rmse=0.0, offset=50.0),
    ],
)
def test_work_to_and_accuracy_at_are_inverse(fit: CurveFit) -> None:
    for target in np.linspace(0.5, fit.asymptote - 0.01, 12):
        work = fit.work_to(float(target))
        assert work is not None
        if work + fit.offset > 1.0 and work > 0:  # inside the curve's domain
            assert fit.accuracy_at(work) == pytest.approx(target, abs=1e-9)
        else:  # already there before any compute
            assert fit.accuracy_at(0.0) >= target - 1e-9
    for x in (10.0, 1e3, 1e5):
        assert fit.work_to(fit.accuracy_at(x)) == pytest.approx(x, rel=1e-6)
    assert fit.work_to(fit.asymptote + 1e-9) is None
    assert fit.work_to(fit.asymptote + 0.01) is None


def test_inverse_holds_for_fitted_curves_too() -> None:
    curve = curve_of(power_law(0.02, 3.0, 0.6, offset=2000.0), LINEAR, noise=0.002)
    for fit in curve.fits():
        if fit.scale <= 0:
            continue
        for x in (1e4, 5e4):
            target = fit.accuracy_at(x)
            work = fit.work_to(target)
            assert work is not None
            assert fit.accuracy_at(work) == pytest.approx(target, abs=1e-9)


def test_a_flat_fit_is_there_at_once_or_never() -> None:
    flat = CurveFit(floor=0.2, scale=0.0, exponent=1.0, points=5, rmse=0.0)
    assert flat.work_to(0.7) == 0.0
    assert flat.work_to(0.9) is None
    assert flat.accuracy_at(1e6) == pytest.approx(0.8)
