"""A coordinator and real agent daemons over a real Mosquitto: whole jobs, bad input, restarts."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from support import digits_split, make_agent, numpy_agents, running

from agent.numpy_trainer import NumpyTrainer
from coordinator.errors import JobStateConflict
from coordinator.job import JobSpec
from coordinator.mqtt_fleet import MqttFleet, open_mqtt_fleet
from coordinator.service import Coordinator, JobOutcome
from hyperfleet.broker import start_broker
from hyperfleet.commands import CoordinatorRun, run_coordinator
from hyperfleet.exits import EXIT_USAGE, exit_status
from protocol import (
    Shard,
    Topics,
    TrainConfig,
    TrainIns,
    TrainRes,
    encode,
    new_envelope,
    parse_broker_url,
)


def job_spec(holdout: Path, *, max_rounds: int, target: float = 0.99, agents: int = 3) -> JobSpec:
    return JobSpec.model_validate(
        {
            "job_id": "itest",
            "holdout": str(holdout),
            "rounds": {
                "participants": agents,
                "round_timeout_s": 10,
                "local_epochs": 1,
                "batch_size": 16,
                "min_agents": agents,
                "wait_for_agents_s": 10,
            },
            "constraints": {
                "target_accuracy": target,
                "time_budget_s": 120,
                "max_rounds": max_rounds,
            },
        }
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Shard], Shard, Path]:
    shards, holdout = digits_split(3, seed=1)
    path = tmp_path_factory.mktemp("data") / "holdout.npz"
    from protocol import encode_shard

    path.write_bytes(encode_shard(holdout))
    return shards, holdout, path


async def run_job(
    broker_url: str, prefix: str, spec: JobSpec, holdout: Shard, state: Path, *, during: Any = None
) -> tuple[JobOutcome, MqttFleet]:
    topics = Topics(prefix)
    async with open_mqtt_fleet(
        broker=parse_broker_url(broker_url), topics=topics, job_id=spec.job_id
    ) as fleet:
        coordinator = Coordinator(
            spec=spec,
            fleet=fleet,
            holdout=holdout,
            state_dir=state / "state",
            out_dir=state / "out",
        )
        if during is None:
            return await coordinator.run(), fleet
        async with asyncio.TaskGroup() as tg:
            job = tg.create_task(coordinator.run())
            tg.create_task(during(fleet, job))
        return job.result(), fleet


def test_a_job_trains_to_better_accuracy_and_exports(
    broker_url: str, unique_topic_prefix: str, data: Any, tmp_path: Path
) -> None:
    shards, holdout, holdout_path = data
    spec = job_spec(holdout_path, max_rounds=5)

    async def go() -> tuple[JobOutcome, MqttFleet]:
        async with running(numpy_agents(broker_url, unique_topic_prefix, shards)):
            return await run_job(broker_url, unique_topic_prefix, spec, holdout, tmp_path)

    outcome, fleet = asyncio.run(go())
    p = outcome.progress
    assert outcome.reason == "max_rounds"
    assert p.round == 5
    assert p.best_accuracy > p.history[0].accuracy - 1e-9
    assert p.best_accuracy > 0.5  # from ~0.1 at random initialisation
    assert all(r.results == 3 for r in p.history)
    assert outcome.export is not None
    assert outcome.export.agreement_float == 1.0
    assert outcome.model_ref is not None
    assert outcome.model_ref.version == 1
    assert fleet.registry.get("agent-000").hello.num_examples == len(shards[0])  # type: ignore[union-attr]


def test_an_async_job_over_mqtt_steps_versions_and_resumes(
    broker_url: str, unique_topic_prefix: str, data: Any, tmp_path: Path
) -> None:
    """mode = "async" on real agent daemons: each reply is buffered and its agent given the newest
    version at once; two replies make a version. A second coordinator run resumes the versions;
    replies to the first run's instructions that arrive then are refused as stale, never merged."""
    shards, holdout, holdout_path = data

    def spec(max_rounds: int) -> JobSpec:
        raw = job_spec(holdout_path, max_rounds=max_rounds).model_dump(mode="json")
        raw.pop("async_")
        raw.update(mode="async", **{"async": {"buffer_size": 2, "concurrency": 3}})
        return JobSpec.model_validate(raw)

    async def go() -> tuple[JobOutcome, JobOutcome, MqttFleet]:
        async with running(numpy_agents(broker_url, unique_topic_prefix, shards)):
            first, _ = await run_job(broker_url, unique_topic_prefix, spec(3), holdout, tmp_path)
            second, fleet = await run_job(
                broker_url, unique_topic_prefix, spec(6), holdout, tmp_path
            )
            return first, second, fleet

    first, second, fleet = asyncio.run(go())
    assert first.reason == "max_rounds"
    assert [r.round for r in first.progress.history] == [1, 2, 3]
    p = second.progress
    assert second.reason == "max_rounds"
    assert p.resumed_at == 3
    assert [r.round for r in p.history] == [1, 2, 3, 4, 5, 6]
    assert all(r.results == 2 for r in p.history)
    assert all(r.plan["mode"] == "async" for r in p.history)
    assert p.best_accuracy > 0.5  # from ~0.1 at random initialisation
    assert second.model_ref is not None
    # Whatever came late from the first run was dropped as stale, not merged (it may be none).
    assert set(fleet.dropped) <= {"stale_round", "duplicate"}


def test_bad_input_never_stops_a_round(
    broker_url: str, unique_topic_prefix: str, data: Any, tmp_path: Path
) -> None:
    """Garbage, an unknown agent, a wrong-shape update and an old round's reply, published through
    a raw paho client while the job runs, are dropped and counted; every round completes."""
    shards, holdout, holdout_path = data
    spec = job_spec(holdout_path, max_rounds=4)
    topics = Topics(unique_topic_prefix)
    address = parse_broker_url(broker_url)
    sent: dict[str, int] = {"garbage": 0, "ghost": 0, "shape": 0, "old": 0}

    def vandal(fleet: MqttFleet, stop: threading.Event) -> None:
        raw = paho.Client(CallbackAPIVersion.VERSION2, client_id="vandal")
        raw.connect(address.host, address.port)
        raw.loop_start()
        bad_weights = (np.ones((5, 5), dtype=np.float32),)
        try:
            while not stop.is_set():
                raw.publish(topics.results("agent-001"), b"\x00garbage\xff" * 10, qos=1)
                sent["garbage"] += 1
                ghost = TrainRes(
                    weights=bad_weights, num_examples=1, steps=1, loss=0.1, train_s=0.1
                )
                raw.publish(
                    topics.results("ghost"),
                    encode(new_envelope(ghost, sender="ghost", job_id="itest", round=1)),
                    qos=1,
                )
                sent["ghost"] += 1
                current = fleet._rounds.get("agent-002")
                if current is not None:
                    wrong = new_envelope(
                        ghost,
                        sender="agent-002",
                        job_id="itest",
                        round=current.round,
                        reply_to=current.instruction_ids.get("agent-002", ""),
                    )
                    raw.publish(topics.results("agent-002"), encode(wrong), qos=1)
                    sent["shape"] += 1
                old = new_envelope(ghost, sender="agent-000", job_id="itest", round=0)
                raw.publish(topics.results("agent-000"), encode(old), qos=1)
                sent["old"] += 1
                # and garbage into an agent's inbox: the agent must survive it too
                raw.publish(topics.inbox("agent-000"), b"not a frame", qos=1)
                time.sleep(0.05)
        finally:
            raw.loop_stop()
            raw.disconnect()

    async def during(fleet: MqttFleet, job: asyncio.Task[JobOutcome]) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=vandal, args=(fleet, stop), daemon=True)
        thread.start()
        try:
            while not job.done():
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, 5)

    agents = numpy_agents(broker_url, unique_topic_prefix, shards)

    async def go() -> tuple[JobOutcome, MqttFleet]:
        async with running(agents):
            return await run_job(
                broker_url, unique_topic_prefix, spec, holdout, tmp_path, during=during
            )

    outcome, fleet = asyncio.run(go())
    assert outcome.progress.round == 4, "every round completed despite the noise"
    assert all(r.aggregated for r in outcome.progress.history)
    assert sent["garbage"] > 0
    assert fleet.dropped["malformed"] >= 1
    assert fleet.dropped["unknown_agent"] >= 1
    assert fleet.dropped["stale_round"] >= 1
    if sent["shape"]:
        assert fleet.dropped["shape"] + fleet.dropped["duplicate"] >= 1
    assert agents[0].dropped["malformed"] >= 1, "the agent counted the garbage in its inbox"
    assert agents[0].handled["TrainRes"] >= 1, "and went on training"


def test_a_restarted_coordinator_resumes_at_the_last_round(
    broker_url: str, unique_topic_prefix: str, data: Any, tmp_path: Path
) -> None:
    shards, holdout, holdout_path = data

    async def go() -> tuple[JobOutcome, JobOutcome]:
        async with running(numpy_agents(broker_url, unique_topic_prefix, shards)):
            first, _ = await run_job(
                broker_url,
                unique_topic_prefix,
                job_spec(holdout_path, max_rounds=2),
                holdout,
                tmp_path,
            )
            second, _ = await run_job(
                broker_url,
                unique_topic_prefix,
                job_spec(holdout_path, max_rounds=4),
                holdout,
                tmp_path,
            )
            return first, second

    first, second = asyncio.run(go())
    assert first.progress.round == 2
    assert second.progress.round == 4
    assert [r.round for r in second.progress.history] == [1, 2, 3, 4]
    assert second.progress.history[:2] == first.progress.history
    assert second.progress.elapsed_s >= first.progress.elapsed_s
    assert second.model_ref is not None
    assert second.model_ref.version == 2


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        ({"model": {"hidden": [16]}}, "model.hidden"),
        ({"strategy": {"name": "fedadam"}}, "strategy.name"),
    ],
    ids=["hidden", "strategy"],
)
def test_a_job_file_edited_between_runs_fails_at_load_naming_the_keys(
    broker_url: str,
    unique_topic_prefix: str,
    data: Any,
    tmp_path: Path,
    edit: dict[str, Any],
    key: str,
) -> None:
    """Issue 13: the same job_id and state directory with other hidden layers (or another
    strategy) failed with a Keras ``set_weights`` length error or a strategy-state error. Now
    ``hyperfleet coordinator`` refuses it before connecting, naming the key and the fix."""
    shards, holdout, holdout_path = data
    spec = job_spec(holdout_path, max_rounds=1)

    dumped = spec.model_dump(mode="json")
    edited = JobSpec.model_validate(
        {
            **dumped,
            **{section: {**dumped[section], **values} for section, values in edit.items()},
            "constraints": {**dumped["constraints"], "max_rounds": 2},
        }
    )
    run = CoordinatorRun(
        spec=edited,
        broker=parse_broker_url(broker_url),
        topics=Topics(unique_topic_prefix),
        state_dir=tmp_path / "state",
        out_dir=tmp_path / "out-2",
    )

    async def go() -> tuple[JobOutcome, BaseException | None]:
        async with running(numpy_agents(broker_url, unique_topic_prefix, shards)):
            first, _ = await run_job(broker_url, unique_topic_prefix, spec, holdout, tmp_path)
            try:  # the agents stay up: the second run meets the fleet the first one did
                await asyncio.wait_for(run_coordinator(run), timeout=60)
            except Exception as exc:
                return first, exc
            return first, None

    first, error = asyncio.run(go())
    assert first.progress.round == 1
    assert isinstance(error, JobStateConflict), repr(error)
    message = str(error)
    assert key in message
    assert "new job_id" in message
    assert "fresh state directory" in message
    assert exit_status(error) == EXIT_USAGE


def test_an_agent_reconnects_after_the_broker_restarts(
    unique_topic_prefix: str, tmp_path: Path, mosquitto_binary: str
) -> None:
    shards, _ = digits_split(1)
    broker = start_broker(prefer="mosquitto", workdir=tmp_path)
    port = broker.port
    agent = make_agent(
        "agent-r", broker.url, unique_topic_prefix, NumpyTrainer(shards[0]), heartbeat_s=0.2
    )
    weights = (
        np.zeros((64, 10), dtype=np.float32),
        np.zeros(10, dtype=np.float32),
    )
    from coordinator.job import ModelSpec
    from coordinator.model import GlobalModel

    model_json = GlobalModel(ModelSpec(hidden=[]), shards[0]).config_json

    async def go() -> int:
        nonlocal broker
        async with running([agent]):
            broker.stop()
            await asyncio.sleep(0.5)
            assert not agent.connected.is_set()
            broker = start_broker(prefer="mosquitto", port=port, workdir=tmp_path)
            async with asyncio.timeout(15):
                await agent.connected.wait()
            async with open_mqtt_fleet(
                broker=parse_broker_url(broker.url), topics=Topics(unique_topic_prefix)
            ) as fleet:
                await fleet.wait_for_agents(1, timeout=5)
                replies = await fleet.train(
                    job_id="j",
                    round=1,
                    instructions={
                        "agent-r": TrainIns(
                            model=model_json,
                            weights=weights,
                            config=TrainConfig(local_steps=3),
                            budget_s=10,
                        )
                    },
                    reference=weights,
                    quorum=1,
                    timeout_s=10,
                )
                assert replies.results["agent-r"].steps == 3
        return agent.connections

    try:
        assert asyncio.run(go()) >= 2
    finally:
        broker.stop()
