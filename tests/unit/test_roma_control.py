"""ROMA's pure control core: the PI core controller (step response, saturation, anti-windup,
quantisation, idle decay) against a small queueing model of a served model, contention
normalisation, batch sizing from measured latency, GPU dispatch, shedding and the CPU quota."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.roma.batching import BatchProfile, choose_batch
from cloud.roma.controller import ControllerSettings, CoreController, allocate, quantise
from cloud.roma.dispatch import (
    ModelLoad,
    pick_gpu,
    predicted_response_s,
    retry_after_s,
    should_shed,
)
from cloud.roma.quota import CpuQuota
from cloud.roma.window import LatencyWindow

SLA = 0.020
SERVICE_S = 0.004  # one request's compute on one core


def response_time(load_rps: float, cores: float) -> float:
    """p95-ish response time of an M/M/1-like queue served at ``cores / SERVICE_S`` requests
    per second; a saturated queue answers 1 s (the window is full of late requests)."""
    capacity = cores / SERVICE_S
    if load_rps >= capacity:
        return 1.0
    return min(1.0, 3.0 * SERVICE_S / (1 - load_rps / capacity))


def simulate(load: list[float], *, max_cores: float = 4.0) -> list[tuple[float, float]]:
    controller = CoreController(
        sla_s=SLA, settings=ControllerSettings(max_cores=max_cores), initial_cores=1.0
    )
    trace = []
    cores = controller.cores
    for rps in load:
        rt = response_time(rps, cores)
        trace.append((cores, rt))
        cores = controller.step(rt, 1.0)
    return trace


def cliff_response_time(load_rps: float, cores: float) -> float:
    """A queue of fixed-cost requests (M/D/1-like): flat until the cores are nearly busy, then
    a cliff; saturated: 1 s."""
    rho = load_rps * SERVICE_S / cores
    if rho >= 1:
        return 1.0
    return min(1.0, 2 * SERVICE_S * (1 + rho / (2 * (1 - rho))))


def simulate_cliff(load: list[float], *, feedforward: bool) -> list[tuple[float, float]]:
    controller = CoreController(sla_s=SLA, settings=ControllerSettings(max_cores=4.0),
                                initial_cores=1.0)  # fmt: skip
    trace = []
    cores = controller.cores
    for rps in load:
        rt = cliff_response_time(rps, cores)
        trace.append((cores, rt))
        demand = rps * SERVICE_S if feedforward else 0.0
        cores = controller.step(rt, 1.0, demand=demand)
    return trace


def test_feedforward_keeps_a_step_in_load_inside_the_sla_where_pi_alone_breaks_it() -> None:
    load = [100.0] * 20 + [250.0] * 30 + [100.0] * 30
    pi = simulate_cliff(load, feedforward=False)
    ff = simulate_cliff(load, feedforward=True)
    violations = [sum(rt > SLA for _, rt in trace) for trace in (pi, ff)]
    assert violations[1] < violations[0]
    # Only the window in which the step happens is late: the next has the cores it needs.
    assert [i for i, (_, rt) in enumerate(ff) if rt > SLA] == [20]
    # Cores stay at or above demand / utilisation, and are given back after the step down.
    assert all(cores >= rps * SERVICE_S / 0.7 - 1e-9
               for (cores, _), rps in zip(ff[1:], load, strict=False))  # fmt: skip
    assert ff[-1][0] < ff[49][0]


def test_the_integral_tracks_the_feedforward_floor_so_pi_takes_over_without_a_jump() -> None:
    c = CoreController(sla_s=SLA, settings=ControllerSettings(max_cores=4.0), initial_cores=0.1)
    c.step(0.010, 1.0, demand=1.4)  # fast answers, but a demand of 1.4 cores: the floor binds
    assert c.cores == pytest.approx(2.0)
    assert c.last.feedforward == pytest.approx(2.0)
    # The demand vanishes: the PI part goes on from the floor, one integral step lower.
    after = c.step(0.010, 1.0, demand=0.0)
    assert 1.0 <= after < 2.0


def test_a_bad_demand_is_ignored_and_utilisation_is_checked() -> None:
    c = CoreController(sla_s=SLA, settings=ControllerSettings(), initial_cores=0.5)
    c.step(0.016, 1.0, demand=float("nan"))
    assert c.last.feedforward == 0.0
    c.step(0.016, 1.0, demand=-3.0)
    assert c.last.feedforward == 0.0
    with pytest.raises(ValueError, match="utilisation"):
        ControllerSettings(utilisation=0.0)


def test_step_response_meets_the_sla_after_a_step_up_and_releases_cores_after_a_step_down() -> None:
    trace = simulate([100.0] * 20 + [250.0] * 30 + [100.0] * 30)
    low, high, back = trace[:20], trace[20:50], trace[50:]
    assert all(rt <= SLA for _, rt in low[-5:])
    assert high[0][1] > SLA  # the step hurts at first ...
    assert all(rt <= SLA for _, rt in high[-10:])  # ... and is back inside the SLA
    assert high[-1][0] > low[-1][0]  # with more cores
    assert back[-1][0] < high[-1][0]  # which are given back
    assert all(rt <= SLA for _, rt in back[-10:])


def test_saturation_at_max_cores_does_not_wind_up() -> None:
    """Demand beyond max_cores for a minute: the controller sits at max; when the load drops it
    leaves max within three periods (a wound-up integral would hold it there for a long time)."""
    trace = simulate([2000.0] * 60 + [100.0] * 20, max_cores=3.0)
    assert all(cores == 3.0 for cores, _ in trace[5:60])
    after = [cores for cores, _ in trace[60:]]
    assert min(after[:4]) < 3.0


def test_outputs_are_quantised_and_clamped() -> None:
    settings = ControllerSettings(quantum=0.1, min_cores=0.2, max_cores=1.5)
    controller = CoreController(sla_s=SLA, settings=settings, initial_cores=1.0)
    for rt in [0.001, 0.5, 0.03, None, 0.02, 10.0, 0.0001]:
        cores = controller.step(rt, 1.0)
        assert 0.2 <= cores <= 1.5
        assert math.isclose(cores * 10, round(cores * 10), abs_tol=1e-9)
        assert controller.last.cores == cores


def test_an_idle_model_decays_to_its_minimum() -> None:
    controller = CoreController(
        sla_s=SLA, settings=ControllerSettings(min_cores=0.1, max_cores=2.0), initial_cores=2.0
    )
    cores = [controller.step(None, 1.0) for _ in range(30)]
    assert cores[0] < 2.0
    assert cores[-1] == 0.1
    assert cores == sorted(cores, reverse=True)


def test_the_error_sign_follows_the_set_point() -> None:
    controller = CoreController(sla_s=SLA, settings=ControllerSettings(), initial_cores=1.0)
    controller.step(0.8 * SLA, 1.0)
    assert controller.last.error == pytest.approx(0.0)
    controller.step(2 * SLA, 1.0)
    assert controller.last.error > 0
    controller.step(0.1 * SLA, 1.0)
    assert controller.last.error == -1.0  # clamped


def test_a_cut_allocation_is_back_calculated_into_the_integral() -> None:
    controller = CoreController(
        sla_s=SLA, settings=ControllerSettings(max_cores=8.0), initial_cores=4.0
    )
    controller.step(1.0, 1.0)
    controller.limit(1.0)
    assert controller.cores == 1.0
    assert controller.integral <= 1.0
    assert controller.step(0.8 * SLA, 1.0) <= 1.1


@pytest.mark.parametrize(
    "kwargs",
    [{"kp": -1.0}, {"quantum": 0.0}, {"min_cores": 3.0, "max_cores": 2.0}, {"setpoint_ratio": 1.5},
     {"period_s": float("nan")}],
)  # fmt: skip
def test_settings_out_of_range_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs)).split("_")[0]):
        ControllerSettings(**kwargs)


@given(
    demands=st.dictionaries(
        st.sampled_from("abcdef"), st.floats(0.1, 16.0), min_size=1, max_size=6
    ),
    capacity=st.floats(1.0, 16.0),
)
def test_allocation_never_exceeds_the_node_and_keeps_minima(
    demands: dict[str, float], capacity: float
) -> None:
    given_ = allocate(demands, capacity=capacity, quantum=0.1, minimum=0.1)
    assert set(given_) == set(demands)
    floor = 0.1 * len(demands)
    if floor <= capacity:
        assert sum(given_.values()) <= capacity + 1e-6
    for name, cores in given_.items():
        assert cores >= 0.1 - 1e-9
        assert cores <= demands[name] + 1e-9


def test_allocation_is_proportional_above_the_minima() -> None:
    given_ = allocate({"a": 3.0, "b": 1.0}, capacity=2.0, quantum=0.1, minimum=0.0)
    assert given_ == {"a": 1.5, "b": 0.5}
    assert allocate({"a": 0.5, "b": 0.5}, capacity=2.0, quantum=0.1) == {"a": 0.5, "b": 0.5}
    with pytest.raises(ValueError, match="capacity"):
        allocate({"a": 1.0}, capacity=0.0, quantum=0.1)


def test_quantise_rounds_to_multiples_without_float_dust() -> None:
    assert quantise(0.31, 0.1) == 0.4
    assert quantise(0.30000000004, 0.1) == 0.3
    assert quantise(0.39, 0.1, up=False) == 0.3


# ---------------------------------------------------------------------- batching


def test_batch_profile_predicts_from_a_line_through_what_it_measured() -> None:
    profile = BatchProfile(max_batch=64)
    assert profile.predict(4) is None
    for _ in range(5):
        profile.observe(1, 0.002)
        profile.observe(16, 0.010)
    assert profile.predict(1) == pytest.approx(0.002, rel=0.05)
    assert profile.predict(16) == pytest.approx(0.010, rel=0.05)
    assert 0.002 < (profile.predict(8) or 0) < 0.010
    assert (profile.predict(64) or 0) > 0.010
    with pytest.raises(ValueError, match="finite"):
        profile.observe(2, float("nan"))
    with pytest.raises(ValueError, match="batch_size"):
        profile.observe(0, 0.001)


def test_choose_batch_takes_the_largest_batch_that_meets_the_budget() -> None:
    profile = BatchProfile(max_batch=64)
    for _ in range(3):
        profile.observe(1, 0.001)
        profile.observe(32, 0.017)  # about 1 ms + 0.5 ms per row
    pick = {
        "empty": choose_batch(queued=0, oldest_wait_s=0, budget_s=0.02, max_batch=64, profile=profile),
        "few": choose_batch(queued=3, oldest_wait_s=0, budget_s=0.02, max_batch=64, profile=profile),
        "many": choose_batch(queued=100, oldest_wait_s=0, budget_s=0.02, max_batch=64, profile=profile),
        "late": choose_batch(queued=100, oldest_wait_s=0.019, budget_s=0.02, max_batch=64, profile=profile),
        "capped": choose_batch(queued=100, oldest_wait_s=0, budget_s=1.0, max_batch=8, profile=profile),
    }  # fmt: skip
    assert pick["empty"] == 0
    assert pick["few"] == 3
    assert 30 <= pick["many"] <= 40  # 1 ms + 0.5 ms x b <= 20 ms
    assert pick["late"] == 1
    assert pick["capped"] == 8
    fresh = BatchProfile(max_batch=64)
    assert choose_batch(queued=50, oldest_wait_s=0, budget_s=1, max_batch=64, profile=fresh) == 1


# ---------------------------------------------------------------------- dispatch


def _load(name: str, sla: float, queued: int, wait: float, rate: float = 100.0) -> ModelLoad:
    return ModelLoad(name=name, sla_s=sla, queued=queued, oldest_wait_s=wait, cpu_throughput=rate,
                     predicted_compute_s=0.002)  # fmt: skip


def test_the_gpu_goes_to_the_model_furthest_past_its_threshold_relative_to_its_sla() -> None:
    small = _load("small", 0.020, 2, 0.015)  # 15 + 20 + 2 ms against 18 ms: pressure ~2
    large = _load("large", 0.200, 10, 0.150)  # 150 + 100 + 2 ms against 180 ms: pressure ~1.4
    assert pick_gpu([small, large], alpha=0.1) == "small"
    assert pick_gpu([_load("a", 0.1, 0, 0)], alpha=0.1) is None
    calm = [_load("a", 1.0, 1, 0.0), _load("b", 1.0, 3, 0.0)]
    assert pick_gpu(calm, alpha=0.1) == "b"  # nobody is late: still the GPU works
    with pytest.raises(ValueError, match="alpha"):
        pick_gpu(calm, alpha=1.0)


def test_predicted_response_time_and_shedding() -> None:
    assert predicted_response_s(_load("a", 0.02, 10, 0.005, rate=1000.0)) == pytest.approx(0.017)
    unknown = ModelLoad(name="a", sla_s=0.02, queued=3, oldest_wait_s=0, cpu_throughput=0,
                        predicted_compute_s=None)  # fmt: skip
    assert predicted_response_s(unknown) == math.inf
    assert should_shed(predicted_response_s=0.5, sla_s=0.02, queued=8, max_queue=8)
    assert not should_shed(predicted_response_s=0.5, sla_s=0.02, queued=7, max_queue=8)
    assert not should_shed(predicted_response_s=0.01, sla_s=0.02, queued=8, max_queue=8)
    assert retry_after_s(predicted_response_s=0.5, sla_s=0.02) == 1
    assert retry_after_s(predicted_response_s=12.5, sla_s=0.5) == 12
    assert retry_after_s(predicted_response_s=math.inf, sla_s=0.5) == 1


# ---------------------------------------------------------------------- quota and window


def test_the_quota_lets_a_model_use_its_cores_and_no_more() -> None:
    quota = CpuQuota(0.5, burst_s=0.1)
    now, used = 0.0, 0.0
    while now < 10.0:  # a greedy model: a 10 ms batch whenever allowed
        wait = quota.wait_s(now)
        if wait > 0:
            now += wait
            continue
        quota.charge(0.010, now)
        used += 0.010
        now += 0.010
    assert used / 10.0 == pytest.approx(0.5, rel=0.05)
    assert quota.used_core_seconds == pytest.approx(used)
    quota.set_cores(2.0)
    assert quota.cores == 2.0
    with pytest.raises(ValueError, match="cores"):
        quota.set_cores(0.0)
    with pytest.raises(ValueError, match="core_seconds"):
        quota.charge(-1.0, now)


def test_latency_window_forgets_what_is_older_than_the_window() -> None:
    window = LatencyWindow(5.0)
    assert window.percentile(0.0, 95) is None
    for i in range(100):
        window.add(float(i) / 10, 0.001 * (i + 1))  # t = 0 .. 9.9 s
    assert window.count(9.95) == 50  # t >= 4.95
    assert window.percentile(9.95, 50) == pytest.approx(0.0755, rel=0.02)
    assert window.violation_share(9.95, 0.090) == pytest.approx(10 / 50)
    with pytest.raises(ValueError, match="window_s"):
        LatencyWindow(0.0)


def test_the_controllers_shorter_view_of_the_window_forgets_a_spike_sooner() -> None:
    window = LatencyWindow(5.0)
    window.add(1.0, 0.500)  # one spike
    for i in range(2, 41):  # t = 1.2 .. 5.0 s
        window.add(1.0 + i / 10, 0.005)
    assert window.percentile(5.5, 100) == pytest.approx(0.500)  # the SLA window still holds it
    assert window.percentile(5.5, 100, within_s=2.0) == pytest.approx(0.005)  # the view does not
    assert window.percentile(5.5, 95, within_s=0.01) is None
