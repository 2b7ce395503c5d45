"""One conformance suite for every implementation of the Fleet port (Flower's linkstate style):
the MQTT fleet against a real Mosquitto with real agent daemons, and the in-memory fleet."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from support import ScriptedTrainer, make_agent, running

from coordinator.fleet import Fleet, InMemoryFleet, LocalAgent
from coordinator.mqtt_fleet import open_mqtt_fleet
from protocol import Failure, Hello, Topics, TrainConfig, TrainIns, TrainRes, parse_broker_url

REFERENCE = (np.zeros((4, 2), dtype=np.float32), np.zeros(2, dtype=np.float32))


def instructions(ids: list[str], budget_s: float) -> dict[str, TrainIns]:
    return {
        a: TrainIns(
            model="{}", weights=REFERENCE, config=TrainConfig(local_steps=1), budget_s=budget_s
        )
        for a in ids
    }


class FleetContract:
    """Subclasses provide ``fleet(behaviours)``: an async context yielding a Fleet whose agents
    ``a0, a1, ...`` behave as scripted (see :class:`support.ScriptedTrainer`)."""

    def fleet(self, behaviours: dict[str, tuple[str, float]]) -> Any:
        raise NotImplementedError

    def run(
        self, behaviours: dict[str, tuple[str, float]], timeout: float, quorum: int | None = None
    ) -> Any:
        async def go() -> Any:
            async with self.fleet(behaviours) as fleet:
                assert await fleet.wait_for_agents(len(behaviours), timeout=10) == len(behaviours)
                ids = sorted(behaviours)
                t0 = time.monotonic()
                replies = await fleet.train(
                    job_id="job",
                    round=1,
                    instructions=instructions(ids, timeout),
                    reference=REFERENCE,
                    quorum=quorum or len(ids),
                    timeout_s=timeout,
                )
                return replies, time.monotonic() - t0, fleet

        return asyncio.run(go())

    def test_every_agent_answers(self) -> None:
        replies, _, _ = self.run({"a0": ("ok", 0), "a1": ("ok", 0), "a2": ("ok", 0)}, timeout=10)
        assert sorted(replies.results) == ["a0", "a1", "a2"]
        assert replies.failures == {}
        np.testing.assert_array_equal(replies.results["a1"].weights[0], REFERENCE[0] + 1)

    def test_a_silent_agent_fails_by_timeout_and_does_not_block(self) -> None:
        # a1 answers after 3 s; had the round waited past its 1 s deadline, a1 would be a result.
        replies, _, _ = self.run({"a0": ("ok", 0), "a1": ("ok", 3.0)}, timeout=1.0)
        assert sorted(replies.results) == ["a0"]
        assert replies.failures["a1"].startswith("timeout")

    def test_failures_are_reported_apart_from_results(self) -> None:
        replies, _, _ = self.run({"a0": ("ok", 0), "a1": ("fail", 0)}, timeout=10)
        assert list(replies.results) == ["a0"]
        assert "scripted failure" in replies.failures["a1"]

    def test_a_wrong_shape_update_is_a_failure_and_counted(self) -> None:
        replies, _, fleet = self.run({"a0": ("ok", 0), "a1": ("bad_shape", 0)}, timeout=10)
        assert list(replies.results) == ["a0"]
        assert "rejected update" in replies.failures["a1"]
        assert fleet.dropped["shape"] == 1

    def test_an_update_far_from_the_model_is_that_agents_failure_and_counted(self) -> None:
        """Issue 13: one update of all-1e30 values (finite) overflowed FedAdam's state to inf.
        It is now refused at the collector: only that agent's contribution is lost."""
        replies, _, fleet = self.run({"a0": ("ok", 0), "a1": ("huge", 0)}, timeout=10)
        assert list(replies.results) == ["a0"]
        assert "rejected update" in replies.failures["a1"]
        assert "update norm" in replies.failures["a1"]
        assert fleet.dropped["out_of_range"] == 1

    def test_quorum_ends_the_round_early(self) -> None:
        # a2 answers after 4 s, well inside the 8 s deadline: only quorum can leave it out.
        replies, _, _ = self.run(
            {"a0": ("ok", 0), "a1": ("ok", 0), "a2": ("ok", 4.0)}, timeout=8, quorum=2
        )
        assert sorted(replies.results) == ["a0", "a1"]
        assert replies.failures["a2"].startswith("timeout")

    def test_overlapping_rounds_over_disjoint_agents_each_get_their_own_replies(self) -> None:
        """The asynchronous mode keeps one single-agent round open per agent at work, each for
        the model version it trains from; an agent already in an open round is refused."""

        async def go() -> Any:
            behaviours = {"a0": ("ok", 0.5), "a1": ("ok", 0.0)}
            async with self.fleet(behaviours) as fleet:
                assert await fleet.wait_for_agents(2, timeout=10) == 2

                async def one(agent_id: str, version: int) -> Any:
                    return await fleet.train(
                        job_id="job",
                        round=version,
                        instructions=instructions([agent_id], 10),
                        reference=REFERENCE,
                        quorum=1,
                        timeout_s=10,
                    )

                async with asyncio.TaskGroup() as tg:
                    slow = tg.create_task(one("a0", 3))
                    fast = tg.create_task(one("a1", 4))
                    await asyncio.sleep(0.1)
                    with pytest.raises(ValueError, match="already training"):
                        await one("a0", 4)
                return slow.result(), fast.result()

        slow, fast = asyncio.run(go())
        assert list(slow.results) == ["a0"]
        assert slow.failures == {}
        assert list(fast.results) == ["a1"]
        assert fast.failures == {}


class TestInMemoryFleet(FleetContract):
    @contextlib.asynccontextmanager
    async def fleet(self, behaviours: dict[str, tuple[str, float]]) -> AsyncIterator[Fleet]:
        agents: dict[str, tuple[Hello, LocalAgent]] = {}
        for agent_id, (behaviour, delay) in behaviours.items():
            trainer = ScriptedTrainer(behaviour)

            async def call(
                ins: TrainIns, trainer: ScriptedTrainer = trainer, delay: float = delay
            ) -> TrainRes | Failure:
                await asyncio.sleep(delay)
                try:
                    fit = trainer.fit(ins.model, ins.weights, ins.config, stop_at=0)
                except Exception as exc:
                    return Failure(code="agent_error", reason=str(exc))
                return TrainRes(
                    weights=tuple(fit.weights), num_examples=10, steps=1, loss=0.5, train_s=0
                )

            hello = Hello(
                device_class="x86-cpu", arch="x86_64", cores=1, memory_bytes=1, num_examples=10
            )
            agents[agent_id] = (hello, call)
        yield InMemoryFleet(agents)


class TestMqttFleet(FleetContract):
    @pytest.fixture(autouse=True)
    def _broker(self, broker_url: str, unique_topic_prefix: str) -> None:
        self.broker_url = broker_url
        self.prefix = unique_topic_prefix

    @contextlib.asynccontextmanager
    async def fleet(self, behaviours: dict[str, tuple[str, float]]) -> AsyncIterator[Fleet]:
        agents = [
            make_agent(agent_id, self.broker_url, self.prefix, ScriptedTrainer(behaviour, delay))
            for agent_id, (behaviour, delay) in behaviours.items()
        ]
        async with (
            running(agents),
            open_mqtt_fleet(
                broker=parse_broker_url(self.broker_url), topics=Topics(self.prefix)
            ) as fleet,
        ):
            yield fleet
