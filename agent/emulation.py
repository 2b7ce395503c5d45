"""Emulating a device in absolute terms, so one host can stand in for a fleet.

A device class's ``[emulation]`` table says what the device *is*: how many examples per second it
trains, its links, how often it is online, how often it drops out mid-round. An agent started with
``--emulate`` trains for real, then waits until ``examples / train_rate`` has passed since training
began; each transfer waits ``bytes * 8 / bandwidth + rtt / 2``; it goes offline and comes back by an
alternating-renewal availability model (exponential sessions of mean ``mean_session_s``, offline
spells sized so the long-run online share is ``availability``). ``time_scale`` shrinks every
emulated duration alike (0.25: four times faster than life) for benchmarks.

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
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.spec = spec
        self.scale = time_scale
        self._rng = random.Random(seed)
        self._clock = clock
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

    def transfer_s(self, nbytes: int, mbps: float) -> float:
        """Real seconds one transfer of ``nbytes`` takes on a link of ``mbps``."""
        return (nbytes * 8 / (mbps * 1e6) + self.spec.rtt_ms / 2000) * self.scale

    async def download(self, nbytes: int) -> None:
        await asyncio.sleep(self.transfer_s(nbytes, self.spec.downlink_mbps))

    async def upload(self, nbytes: int) -> None:
        await asyncio.sleep(self.transfer_s(nbytes, self.spec.uplink_mbps))

    # ---------------------------------------------------------------- compute

    def compute_s(self, examples: int) -> float:
        """Real seconds this device takes to train on ``examples`` examples."""
        return examples / self.spec.train_rate * self.scale

    def plan_work(
        self, config: TrainConfig, num_examples: int, time_left_s: float, upload_bytes: int
    ) -> TrainConfig:
        """Cap the instructed steps to what this device can train before the deadline."""
        room = time_left_s - self.transfer_s(upload_bytes, self.spec.uplink_mbps)
        fit_examples = max(0.0, room) / self.scale * self.spec.train_rate
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
    def fidelity(self) -> float:
        """Share of instructions whose real compute fitted inside the emulated time."""
        return 1.0 - self.overruns / self.instructions if self.instructions else 1.0
