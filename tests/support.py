"""Test support: in-process agents on a real broker, scripted trainers, digits shards."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from agent.daemon import Agent, AgentSettings
from agent.errors import TrainingError
from agent.numpy_trainer import NumpyTrainer
from agent.probe import Capabilities
from agent.trainer import EvalResult, FitResult, Trainer
from cloud.pipelines import load_digits, partition_dirichlet, split_holdout
from protocol import Shard, Topics, TrainConfig, Weights, parse_broker_url

CAPS = Capabilities(arch="x86_64", cores=2, memory_bytes=1 << 30, gpus=(), runtimes=("numpy",))


def digits_split(agents: int, *, seed: int = 0, alpha: float = 0.5) -> tuple[list[Shard], Shard]:
    train, holdout = split_holdout(load_digits(), 0.2, seed)
    return partition_dirichlet(train, agents, alpha, seed), holdout


@dataclass
class ScriptedTrainer:
    """A trainer whose behaviour a test chooses: ``ok``, ``fail``, ``slow``, ``bad_shape`` or
    ``huge`` (every value 1e30: finite, so the codec passes it, but no honest update)."""

    behaviour: str = "ok"
    delay_s: float = 0.0
    name: str = "scripted"
    calls: list[TrainConfig] = field(default_factory=list)

    def fit(
        self, model: str, weights: Weights, config: TrainConfig, *, stop_at: float
    ) -> FitResult:
        self.calls.append(config)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.behaviour == "fail":
            raise TrainingError("scripted failure")
        out: Weights = tuple(np.asarray(w, dtype=np.float32) + 1.0 for w in weights)
        if self.behaviour == "bad_shape":
            out = (np.zeros((3, 3), dtype=np.float32),)
        if self.behaviour == "huge":
            out = tuple(np.full_like(w, 1e30) for w in out)
        return FitResult(weights=out, steps=1, num_examples=10, loss=0.5, train_s=self.delay_s)

    def evaluate(self, model: str, weights: Weights) -> EvalResult:
        return EvalResult(loss=0.5, accuracy=0.5, num_examples=10)


def make_agent(
    agent_id: str,
    broker_url: str,
    prefix: str,
    trainer: Trainer,
    *,
    num_examples: int = 10,
    heartbeat_s: float = 0.5,
) -> Agent:
    settings = AgentSettings(
        agent_id=agent_id,
        broker=parse_broker_url(broker_url),
        device_class="x86-cpu",
        topics=Topics(prefix),
        heartbeat_s=heartbeat_s,
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
    )
    return Agent(settings=settings, trainer=trainer, capabilities=CAPS, num_examples=num_examples)


def numpy_agents(broker_url: str, prefix: str, shards: Sequence[Shard]) -> list[Agent]:
    return [
        make_agent(f"agent-{i:03d}", broker_url, prefix, NumpyTrainer(s), num_examples=len(s))
        for i, s in enumerate(shards)
    ]


@contextlib.asynccontextmanager
async def running(agents: Sequence[Agent], *, timeout: float = 10.0) -> AsyncIterator[None]:
    """Run ``agents`` in a task group for the block; wait until all are connected."""
    async with asyncio.TaskGroup() as tg:
        for agent in agents:
            tg.create_task(agent.run())
        try:
            async with asyncio.timeout(timeout):
                for agent in agents:
                    await agent.connected.wait()
            yield
        finally:
            for agent in agents:
                agent.stop()
