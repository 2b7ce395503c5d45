"""The device emulator (links, compute, availability, drop-outs) and the fleet runner's pure parts.

Time is never real here: availability runs on a clock the test advances by hand, and
``asyncio.sleep`` in :mod:`agent.emulation` is replaced by a recorder, so every "wait" is checked
by its length rather than by a stopwatch.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import numpy as np
import pytest

from agent.device_class import Emulation, load_fleet
from agent.emulation import DeviceEmulator
from hyperfleet.errors import UsageError
from hyperfleet.fleetrun import assign_shards, emulated_profile
from protocol import Hello, TrainConfig


def spec(**changes: float) -> Emulation:
    fields: dict[str, float] = {
        "train_rate": 50.0,
        "uplink_mbps": 8.0,
        "downlink_mbps": 16.0,
        "rtt_ms": 100.0,
        "availability": 1.0,
        "mean_session_s": 10.0,
        "failure_rate": 0.0,
        "rate_sigma": 0.0,  # exact rates unless a test asks for variance or load
        "load_factor": 1.0,
    }
    fields.update(changes)
    return Emulation.model_validate(fields)


class FakeClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Replace ``asyncio.sleep`` as the emulator sees it with a no-op recording each wait."""
    waited: list[float] = []

    async def fake_sleep(delay: float) -> None:
        waited.append(delay)

    monkeypatch.setattr("agent.emulation.asyncio.sleep", fake_sleep)
    return waited


# ------------------------------------------------------------------------------------- links


def test_transfer_time_is_bits_over_bandwidth_plus_half_the_rtt() -> None:
    emu = DeviceEmulator(spec(rtt_ms=100.0), seed=0)
    # 1 MB over 8 Mbit/s is 1 s; half of a 100 ms round trip is 0.05 s.
    assert emu.transfer_s(1_000_000, 8.0) == pytest.approx(1.05)
    # 250 kB over 16 Mbit/s is 0.125 s.
    assert emu.transfer_s(250_000, 16.0) == pytest.approx(0.175)
    assert emu.transfer_s(0, 8.0) == pytest.approx(0.05)


def test_transfer_time_shrinks_with_the_time_scale() -> None:
    emu = DeviceEmulator(spec(rtt_ms=100.0), seed=0, time_scale=0.25)
    assert emu.transfer_s(1_000_000, 8.0) == pytest.approx(1.05 * 0.25)


def test_download_and_upload_wait_on_their_own_links(sleeps: list[float]) -> None:
    emu = DeviceEmulator(spec(uplink_mbps=8.0, downlink_mbps=16.0, rtt_ms=0.0), seed=0)

    async def both() -> None:
        await emu.download(2_000_000)
        await emu.upload(2_000_000)

    asyncio.run(both())
    assert sleeps == [pytest.approx(1.0), pytest.approx(2.0)]


def test_an_emulated_model_size_replaces_the_real_payload_on_both_links(
    sleeps: list[float],
) -> None:
    emu = DeviceEmulator(
        spec(uplink_mbps=8.0, downlink_mbps=16.0, rtt_ms=100.0), seed=0, wire_bytes=14_000_000
    )
    # 14 MB is 112 Mbit: 7 s down at 16 Mbit/s, 14 s up at 8 Mbit/s, each plus half the rtt;
    # the real payload (a few kB here) does not matter.
    assert emu.download_s(3_000) == pytest.approx(7.05)
    assert emu.upload_s(3_000) == pytest.approx(14.05)

    async def both() -> None:
        await emu.download(3_000)
        await emu.upload(3_000)

    asyncio.run(both())
    assert sleeps == [pytest.approx(7.05), pytest.approx(14.05)]
    quarter = DeviceEmulator(spec(uplink_mbps=8.0, rtt_ms=100.0), seed=0, time_scale=0.25,
                             wire_bytes=14_000_000)  # fmt: skip
    assert quarter.upload_s(3_000) == pytest.approx(14.05 * 0.25)
    # Without an emulated size the real payload travels.
    assert DeviceEmulator(spec(uplink_mbps=8.0, rtt_ms=0.0), seed=0).upload_s(1_000_000) == (
        pytest.approx(1.0)
    )


def test_the_emulated_model_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="wire_bytes"):
        DeviceEmulator(spec(), seed=0, wire_bytes=0)


def test_time_scale_must_be_positive() -> None:
    with pytest.raises(ValueError, match="time_scale"):
        DeviceEmulator(spec(), seed=0, time_scale=0.0)


# ------------------------------------------------------------------------------------- compute


def test_compute_time_is_examples_over_rate_times_the_scale() -> None:
    assert DeviceEmulator(spec(train_rate=60.0), seed=0).compute_s(300) == pytest.approx(5.0)
    half = DeviceEmulator(spec(train_rate=60.0), seed=0, time_scale=0.5)
    assert half.compute_s(300) == pytest.approx(2.5)


def test_plan_work_caps_the_steps_to_what_fits_before_the_deadline() -> None:
    # 10 examples/s; the 1 MB upload takes 1 s on 8 Mbit/s (no rtt): 5 s left -> 4 s of training
    # -> 40 examples -> 5 batches of 8.
    emu = DeviceEmulator(spec(train_rate=10.0, uplink_mbps=8.0, rtt_ms=0.0), seed=0)
    asked = TrainConfig(epochs=3, local_steps=20, batch_size=8, learning_rate=0.05, seed=7)
    planned = emu.plan_work(asked, 100, 5.0, 1_000_000)
    assert planned.local_steps == 5
    assert planned.epochs == 1
    # Everything else is the coordinator's instruction, untouched.
    assert (planned.batch_size, planned.learning_rate, planned.seed) == (8, 0.05, 7)


def test_plan_work_keeps_an_instruction_that_fits() -> None:
    emu = DeviceEmulator(spec(train_rate=10.0, uplink_mbps=8.0, rtt_ms=0.0), seed=0)
    asked = TrainConfig(local_steps=3, batch_size=8)
    assert emu.plan_work(asked, 100, 5.0, 1_000_000).local_steps == 3


def test_plan_work_turns_epochs_into_steps_over_the_agents_data() -> None:
    emu = DeviceEmulator(spec(train_rate=10.0, uplink_mbps=8.0, rtt_ms=0.0), seed=0)
    asked = TrainConfig(epochs=2, local_steps=None, batch_size=8)
    # 20 examples in batches of 8 is 3 steps an epoch; two epochs are 6 steps.
    assert emu.plan_work(asked, 20, 1000.0, 1_000_000).local_steps == 6
    # ... capped at 5 when only 40 examples fit.
    assert emu.plan_work(asked, 20, 5.0, 1_000_000).local_steps == 5


def test_plan_work_uses_the_scaled_clock_and_the_agents_own_batch() -> None:
    emu = DeviceEmulator(spec(train_rate=10.0, uplink_mbps=8.0, rtt_ms=0.0), seed=0, time_scale=0.5)
    # Upload 0.5 real s; 4.5 real s left are 9 device seconds -> 90 examples -> 11 batches of 8.
    assert (
        emu.plan_work(TrainConfig(local_steps=50, batch_size=8), 100, 5.0, 1_000_000).local_steps
        == 11
    )
    # An agent with 5 examples trains batches of 5: 90 // 5 = 18.
    assert (
        emu.plan_work(TrainConfig(local_steps=50, batch_size=8), 5, 5.0, 1_000_000).local_steps
        == 18
    )


def test_plan_work_gives_no_steps_when_the_upload_alone_misses_the_deadline() -> None:
    emu = DeviceEmulator(spec(train_rate=10.0, uplink_mbps=8.0, rtt_ms=0.0), seed=0)
    assert (
        emu.plan_work(TrainConfig(local_steps=4, batch_size=8), 100, 0.5, 1_000_000).local_steps
        == 0
    )


def test_the_deadline_cut_keeps_back_the_upload_of_the_emulated_model_size() -> None:
    # 10 examples/s, 8 Mbit/s up: a 2 MB emulated update takes 2 s to upload, so of 5 s left
    # 3 s train -> 30 examples -> 3 batches of 8 (the real 1 kB payload would leave 6 batches).
    emu = DeviceEmulator(
        spec(train_rate=10.0, uplink_mbps=8.0, rtt_ms=0.0), seed=0, wire_bytes=2_000_000
    )
    asked = TrainConfig(local_steps=50, batch_size=8)
    assert emu.plan_work(asked, 100, 5.0, 1_000).local_steps == 3
    real = DeviceEmulator(spec(train_rate=10.0, uplink_mbps=8.0, rtt_ms=0.0), seed=0)
    assert real.plan_work(asked, 100, 5.0, 1_000).local_steps == 6
    # An upload longer than the time left leaves no step at all.
    assert emu.plan_work(asked, 100, 1.9, 1_000).local_steps == 0


def test_download_training_and_upload_finish_by_the_deadline_at_any_drawn_rate() -> None:
    """With variance and load on, every round's planned work plus the upload fits the time left
    after the download, at the rate drawn for that round, and the rates really vary."""
    clock = FakeClock()
    emu = DeviceEmulator(
        spec(train_rate=25.0, uplink_mbps=20.0, downlink_mbps=50.0, rtt_ms=40.0, rate_sigma=0.5,
             load_factor=3.0, load_on_mean_s=30.0, load_off_mean_s=60.0),
        seed=3, time_scale=0.5, clock=clock, wire_bytes=14_000_000,
    )  # fmt: skip
    budget = 30.0  # real seconds per instruction
    steps_seen, rates = set(), set()
    for _ in range(200):
        left = budget - emu.download_s(1_000)
        cfg = emu.plan_work(TrainConfig(local_steps=1000, batch_size=8), 500, left, 1_000)
        steps = cfg.local_steps or 0
        used = emu.download_s(1_000) + emu.compute_s(steps * 8) + emu.upload_s(1_000)
        assert used <= budget + 1e-9
        # ... and one more batch would not have fitted: the cut is tight.
        assert used + emu.compute_s(8) > budget
        steps_seen.add(steps)
        rates.add(emu.rate)
        clock.now += budget
    assert len(steps_seen) > 20
    assert len(rates) == 200
    assert emu.load_episodes > 5


def test_the_drawn_rates_are_the_same_at_every_time_scale() -> None:
    """The rate process runs on device time: the same seed, stepped through the same device
    times at two scales, draws the same rates."""

    def rates(scale: float) -> list[float]:
        clock = FakeClock()
        emu = DeviceEmulator(spec(rate_sigma=0.3, load_factor=2.0, load_on_mean_s=20.0,
                                  load_off_mean_s=40.0), seed=9, time_scale=scale, clock=clock)  # fmt: skip
        out = []
        for _ in range(100):
            emu.plan_work(TrainConfig(local_steps=1), 10, 10.0 * scale, 1)
            out.append(emu.rate)
            clock.now += 7.0 * scale  # 7 device-seconds a round
        return out

    assert rates(0.25) == rates(1.0)


def test_compute_waits_out_the_emulated_time(sleeps: list[float]) -> None:
    emu = DeviceEmulator(spec(train_rate=50.0, failure_rate=0.0), seed=0)
    # 100 examples at 50/s are 2 s; real training took 0.5 s, so 1.5 s remain to wait.
    assert asyncio.run(emu.compute(100, 0.5)) is True
    assert sleeps == [pytest.approx(1.5)]
    assert (emu.instructions, emu.overruns, emu.dropouts) == (1, 0, 0)
    assert emu.fidelity == 1.0


def test_compute_counts_an_overrun_only_when_real_time_exceeds_the_emulated(
    sleeps: list[float],
) -> None:
    emu = DeviceEmulator(spec(train_rate=50.0, failure_rate=0.0), seed=0)
    assert emu.fidelity == 1.0  # nothing to judge yet
    assert asyncio.run(emu.compute(100, 2.0)) is True  # exactly on time: not an overrun
    assert emu.overruns == 0
    assert asyncio.run(emu.compute(100, 3.0)) is True  # a second late: overrun, no extra wait
    assert emu.overruns == 1
    assert sleeps == [pytest.approx(0.0), pytest.approx(0.0)]
    assert emu.instructions == 2
    assert emu.fidelity == pytest.approx(0.5)


def test_a_device_that_almost_always_fails_drops_out(sleeps: list[float]) -> None:
    emu = DeviceEmulator(spec(train_rate=50.0, failure_rate=0.99999), seed=0)
    outcomes = [asyncio.run(emu.compute(100, 0.5)) for _ in range(20)]
    assert outcomes == [False] * 20
    assert emu.dropouts == 20
    assert emu.instructions == 20
    # A drop-out happens somewhere inside the emulated compute, never after it.
    assert len(sleeps) == 20
    assert all(0.0 <= s <= 1.5 for s in sleeps)


def test_drop_outs_follow_the_failure_rate(sleeps: list[float]) -> None:
    emu = DeviceEmulator(spec(failure_rate=0.3), seed=1)

    async def many() -> list[bool]:
        return [await emu.compute(10, 0.0) for _ in range(2000)]

    outcomes = asyncio.run(many())
    assert emu.dropouts == outcomes.count(False)
    assert emu.dropouts / 2000 == pytest.approx(0.3, abs=0.05)


# ------------------------------------------------------------------------------------- availability


def test_full_availability_stays_online_forever() -> None:
    clock = FakeClock()
    emu = DeviceEmulator(spec(availability=1.0), seed=0, clock=clock)
    for t in (0.0, 1.0, 3600.0, 1e6, 1e9):
        clock.now = t
        assert emu.online()
        assert emu.offline_spells == 0  # not even spells of zero length


def test_start_online_false_starts_offline() -> None:
    clock = FakeClock(100.0)
    emu = DeviceEmulator(spec(availability=0.5), seed=0, clock=clock, start_online=False)
    assert not emu.online()
    on = DeviceEmulator(spec(availability=0.5), seed=0, clock=clock, start_online=True)
    assert on.online()


def test_long_run_online_share_and_session_length_match_the_spec() -> None:
    clock = FakeClock()
    emu = DeviceEmulator(
        spec(availability=0.8, mean_session_s=10.0), seed=3, clock=clock, start_online=True
    )
    step, steps = 0.05, 200_000  # 10 000 simulated seconds, some 800 sessions
    online_steps = 0
    spells: list[float] = []
    spell_start = 0.0
    was_online = True
    for i in range(1, steps + 1):
        clock.now = i * step
        now_online = emu.online()
        online_steps += now_online
        if was_online and not now_online:
            spells.append(clock.now - spell_start)
        elif now_online and not was_online:
            spell_start = clock.now
        was_online = now_online
    assert online_steps / steps == pytest.approx(0.8, abs=0.05)
    assert len(spells) > 200
    assert sum(spells) / len(spells) == pytest.approx(10.0, rel=0.25)
    # Every offline spell was counted as one.
    assert emu.offline_spells >= len(spells)


def test_time_scale_shortens_sessions() -> None:
    clock = FakeClock()
    emu = DeviceEmulator(
        spec(availability=0.8, mean_session_s=10.0),
        seed=3,
        clock=clock,
        start_online=True,
        time_scale=0.1,
    )
    for i in range(1, 20_001):  # 1 000 simulated seconds at one session per ~1.25 s
        clock.now = i * 0.05
        emu.online()
    # Unscaled, 1 000 s hold about 80 sessions; scaled by 0.1, about 800.
    assert emu.offline_spells > 400


def test_wait_online_returns_once_the_clock_passes_the_switch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A twin with the same seed, stepped by hand, says when the device comes online.
    probe_clock = FakeClock()
    twin = DeviceEmulator(
        spec(availability=0.5, mean_session_s=10.0), seed=5, clock=probe_clock, start_online=False
    )
    while not twin.online():
        probe_clock.now += 0.001
    switch = probe_clock.now
    assert switch > 1.0  # long enough that waiting takes several polls

    clock = FakeClock()
    emu = DeviceEmulator(
        spec(availability=0.5, mean_session_s=10.0), seed=5, clock=clock, start_online=False
    )
    waited: list[float] = []

    async def advancing_sleep(delay: float) -> None:
        waited.append(delay)
        clock.now += delay

    monkeypatch.setattr("agent.emulation.asyncio.sleep", advancing_sleep)
    assert not emu.online()
    asyncio.run(emu.wait_online())
    assert emu.online()
    assert switch - 0.001 <= clock.now <= switch + 0.011
    # It polls at least once a second and never spins without waiting.
    assert len(waited) >= math.floor(switch)
    assert all(0.01 <= w <= 1.0 for w in waited)


def test_wait_online_returns_at_once_when_online(sleeps: list[float]) -> None:
    emu = DeviceEmulator(spec(availability=1.0), seed=0, clock=FakeClock())
    asyncio.run(emu.wait_online())
    assert sleeps == []


# ------------------------------------------------------------------------------------- fleet runner


NOMINAL_KEYS = {
    "train_rate",
    "uplink_mbps",
    "downlink_mbps",
    "rtt_ms",
    "availability",
    "mean_session_s",
    "failure_rate",
    "time_scale",
}


def test_emulated_profile_announces_the_nominal_figures_only() -> None:
    device = spec(
        train_rate=40.0,
        uplink_mbps=20.0,
        downlink_mbps=50.0,
        rtt_ms=40.0,
        availability=0.9,
        mean_session_s=600.0,
        failure_rate=0.05,
        rate_sigma=0.4,
        load_factor=3.0,
    )
    profile = emulated_profile(device, 0.25, 14_000_000)
    # Device units, whatever the time scale: the coordinator converts by the announced scale.
    assert profile == {
        "train_rate": 40.0,
        "uplink_mbps": 20.0,
        "downlink_mbps": 50.0,
        "rtt_ms": 40.0,
        "availability": 0.9,
        "mean_session_s": 600.0,
        "failure_rate": 0.05,
        "time_scale": 0.25,
        "model_wire_bytes": 14_000_000.0,
    }
    # No emulated model size, no key; the variance and load knobs never travel.
    assert set(emulated_profile(device, 1.0)) == NOMINAL_KEYS


def test_the_hello_carries_the_nominal_figures_not_the_realised_rate(tmp_path: Path) -> None:
    """A real agent of the fleet runner: after rounds at drawn rates its hello still says the
    class's nominal train rate, so the coordinator must learn the real one from replies."""
    from hyperfleet.fleetrun import FleetRun, build_agents
    from link import write_shard
    from protocol import BrokerAddress, Shard, Topics, decode

    rng = np.random.default_rng(0)
    for i in range(4):
        shard = Shard(
            x=rng.normal(size=(10, 4)).astype(np.float32), y=np.arange(10, dtype=np.int64) % 3
        )
        write_shard(tmp_path / f"agent-{i:03d}.npz", shard)
    run = FleetRun(
        fleet=load_fleet("small-4"),
        shards_dir=tmp_path,
        broker=BrokerAddress(host="127.0.0.1", port=1883),
        topics=Topics(),
        time_scale=0.5,
        model_wire_bytes=2_000_000,
    )
    for agent, emu in build_agents(run):
        assert emu is not None
        nominal = emu.spec.train_rate
        drawn = {
            emu.plan_work(TrainConfig(local_steps=1), 10, 100.0, 1).local_steps for _ in range(3)
        }
        assert drawn  # rounds were planned at drawn rates
        assert emu.rate != nominal  # the default variance moved this round's rate
        hello = decode(agent._hello()).body
        assert isinstance(hello, Hello)
        assert set(hello.profile) == NOMINAL_KEYS | {"model_wire_bytes"}
        assert hello.profile["train_rate"] == nominal
        assert hello.profile["time_scale"] == 0.5
        assert hello.profile["model_wire_bytes"] == 2_000_000
        assert emu.wire_bytes == 2_000_000


def _shards(directory: Path, count: int) -> list[Path]:
    paths = [directory / f"agent-{i:03d}.npz" for i in range(count)]
    for path in paths:
        path.write_bytes(b"")
    (directory / "holdout.npz").write_bytes(b"")  # not a shard: never handed out
    return paths


def test_assign_shards_is_a_seeded_permutation(tmp_path: Path) -> None:
    fleet = load_fleet("small-4")
    shards = _shards(tmp_path, 4)
    first = assign_shards(fleet, tmp_path, seed=0)
    assert first == assign_shards(fleet, tmp_path, seed=0)
    assert [(aid, cls) for aid, cls, _ in first] == fleet.expand()
    assert sorted(path for _, _, path in first) == shards
    by_seed = {
        tuple(path.name for _, _, path in assign_shards(fleet, tmp_path, seed))
        for seed in range(10)
    }
    assert len(by_seed) > 1  # different seeds put the data on different devices
    for assignment in by_seed:
        assert sorted(assignment) == [p.name for p in shards]


def test_assign_shards_rejects_a_shard_count_that_does_not_match(tmp_path: Path) -> None:
    fleet = load_fleet("small-4")
    _shards(tmp_path, 3)
    with pytest.raises(UsageError, match="4 agents"):
        assign_shards(fleet, tmp_path, seed=0)
    (tmp_path / "agent-003.npz").write_bytes(b"")
    (tmp_path / "agent-004.npz").write_bytes(b"")
    with pytest.raises(UsageError, match="5 shards"):
        assign_shards(fleet, tmp_path, seed=0)
