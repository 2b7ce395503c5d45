"""Emulating a device in absolute terms, so one host can stand in for a fleet.

A device class's ``[emulation]`` table says what the device *is*: how many examples per second it
trains, its links, how often it is online, how often it drops out mid-round. An agent started with
``--emulate`` trains for real, then waits until ``examples / rate`` has passed since training
began, where ``rate`` is this round's rate: drawn log-normal around the nominal ``train_rate`` and
divided by ``load_factor`` during background-load episodes (:mod:`agent.speed`). Each transfer
waits ``bytes * 8 / bandwidth + rtt / 2``, with ``bytes`` the fleet's ``model_wire_bytes`` when set
(a MobileNet-class update is about 14 MB, whatever small model really travels); the work is cut so
that training *and* the upload finish by the instruction's deadline. The device goes offline and
comes back by an alternating-renewal availability model (exponential sessions of mean
``mean_session_s``, offline spells sized so the long-run online share is ``availability``).
``time_scale`` shrinks every emulated duration alike (0.25: four times faster than life) for
benchmarks; the rate process runs on device time, so one seed gives the same rates at every scale.

Scaling the host's own compute does not work: training a small model here takes under a
millisecond, so every "slow" device would be fast. Fidelity is reported instead: the share of
replies whose real compute took longer than the emulated time (:attr:`DeviceEmulator.overruns`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
from collections.abc import Callable

from protocol import TrainConfig

from .daemon import Emulator
from .device_class import Emulation
from .speed import SpeedProcess

__all__ = ["DeviceEmulator"]


class DeviceEmulator(Emulator):
    def __init__(
        self,
        spec: Emulation,
        *,
        seed: int,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        start_online: bool | None = None,
        wire_bytes: int | None = None,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        if wire_bytes is not None and wire_bytes <= 0:
            raise ValueError("wire_bytes must be positive")
        self.spec = spec
        self.scale = time_scale
        self.wire_bytes = wire_bytes
        """Emulated size of every model transfer, bytes; ``None``: the real payload's size."""
        self._rng = random.Random(seed)
        self._clock = clock
        self._t0 = clock()
        self._speed = SpeedProcess(spec.speed(), seed=seed)
        self.rate = spec.train_rate
        """This round's training rate, examples per device-second (drawn by :meth:`plan_work`)."""
        a = spec.availability
        self._mean_on = spec.mean_session_s * time_scale
        self._mean_off = spec.mean_session_s * (1 - a) / a * time_scale if a < 1 else 0.0
        now = clock()
        self._online = (self._rng.random() < a) if start_online is None else start_online
        self._switch_at = now + self._spell(self._online, first=True)
        self.instructions = 0
        self.overruns = 0
        self.dropouts = 0
        self.offline_spells = 0

    # ---------------------------------------------------------------- availability

    def _spell(self, online: bool, *, first: bool = False) -> float:
        if self._mean_off <= 0:  # availability 1: online for good (offline only to come back)
            return math.inf if online else 0.0
        mean = self._mean_on if online else self._mean_off
        # The first spell is a residual life: exponential spells are memoryless, so same law.
        return self._rng.expovariate(1.0 / mean)

    def _advance(self) -> None:
        now = self._clock()
        while now >= self._switch_at:
            self._online = not self._online
            if not self._online:
                self.offline_spells += 1
            self._switch_at += self._spell(self._online)

    def online(self) -> bool:
        self._advance()
        return self._online

    async def wait_online(self) -> None:
        while not self.online():
            await asyncio.sleep(max(0.01, min(1.0, self._switch_at - self._clock())))

    # ---------------------------------------------------------------- links

    def payload_bytes(self, nbytes: int) -> int:
        """The bytes a transfer of a real ``nbytes`` payload counts as: ``wire_bytes`` if set."""
        return self.wire_bytes if self.wire_bytes is not None else nbytes

    def transfer_s(self, nbytes: int, mbps: float) -> float:
        """Real seconds one transfer of ``nbytes`` (as given) takes on a link of ``mbps``."""
        return (nbytes * 8 / (mbps * 1e6) + self.spec.rtt_ms / 2000) * self.scale

    def download_s(self, nbytes: int) -> float:
        """Real seconds the download of a real ``nbytes`` payload takes (emulated size)."""
        return self.transfer_s(self.payload_bytes(nbytes), self.spec.downlink_mbps)

    def upload_s(self, nbytes: int) -> float:
        """Real seconds the upload of a real ``nbytes`` payload takes (emulated size)."""
        return self.transfer_s(self.payload_bytes(nbytes), self.spec.uplink_mbps)

    async def download(self, nbytes: int) -> None:
        await asyncio.sleep(self.download_s(nbytes))

    async def upload(self, nbytes: int) -> None:
        await asyncio.sleep(self.upload_s(nbytes))

    # ---------------------------------------------------------------- compute

    def device_time(self) -> float:
        """Device-seconds since this emulator started (the wall clock over the time scale)."""
        return (self._clock() - self._t0) / self.scale

    def compute_s(self, examples: int) -> float:
        """Real seconds this device takes to train on ``examples`` examples at this round's rate."""
        return examples / self.rate * self.scale

    def draw_rate(self) -> float:
        """Draw the rate of a round starting now (examples per device-second), keep it in
        :attr:`rate` for :meth:`compute_s`, and return it. :meth:`plan_work` does this; a driver
        that sizes work otherwise calls it once per round."""
        self.rate = self._speed.rate_at(self.device_time())
        return self.rate

    def plan_work(
        self, config: TrainConfig, num_examples: int, time_left_s: float, upload_bytes: int
    ) -> TrainConfig:
        """Draw this round's rate and cap the instructed steps to what this device can train
        before the deadline, keeping back the time the upload of ``upload_bytes`` (real size;
        ``wire_bytes`` when set) will take: the reply is in by the deadline, not just the work."""
        self.draw_rate()
        room = time_left_s - self.upload_s(upload_bytes)
        fit_examples = max(0.0, room) / self.scale * self.rate
        batch = max(1, min(config.batch_size, num_examples or 1))
        fit_steps = int(fit_examples // batch)
        steps = config.local_steps
        if steps is None:
            steps = config.epochs * math.ceil(num_examples / batch)
        return dataclasses.replace(config, local_steps=min(steps, fit_steps), epochs=1)

    async def compute(self, examples: int, real_s: float) -> bool:
        self.instructions += 1
        emulated = self.compute_s(examples)
        if real_s > emulated:
            self.overruns += 1
        if self._rng.random() < self.spec.failure_rate:
            self.dropouts += 1
            await asyncio.sleep(max(0.0, emulated - real_s) * self._rng.random())
            return False
        await asyncio.sleep(max(0.0, emulated - real_s))
        return True

    @property
    def load_episodes(self) -> int:
        """Background-load episodes begun so far, up to the last round drawn."""
        return self._speed.episodes

    @property
    def fidelity(self) -> float:
        """Share of instructions whose real compute fitted inside the emulated time."""
        return 1.0 - self.overruns / self.instructions if self.instructions else 1.0
