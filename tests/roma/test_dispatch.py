"""Dispatch, batching, shedding, the GPU arbiter and the controller in a real in-process server
with real worker processes (the GPU is the fake one: a CPU worker that plays the node's GPU
through the same code path)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from cloud.roma import RomaRunner, ServeConfig

from .conftest import TrainedModels, make_repository


def _body(x: np.ndarray) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.reshape(-1).tolist()}]}  # fmt: skip


async def _burst(
    session: aiohttp.ClientSession, url: str, x: np.ndarray, model: str = "digits"
) -> list[tuple[int, Any, dict[str, str]]]:
    async def one(i: int) -> tuple[int, Any, dict[str, str]]:
        async with session.post(f"{url}/v2/models/{model}/infer", json=_body(x[i : i + 1])) as r:
            return r.status, await r.json(), dict(r.headers)

    return await asyncio.gather(*(one(i) for i in range(len(x))))


def test_a_burst_is_batched_and_every_answer_is_right(
    tmp_path: Path, digits_models: TrainedModels
) -> None:
    repo = make_repository(
        tmp_path, digits_models,
        config="sla_ms = 200.0\nmax_batch = 16\ninitial_cores = 1.0\nmax_cores = 1.0\n",
    )  # fmt: skip
    x = digits_models.x[:96]

    async def go() -> tuple[list[Any], int]:
        async with RomaRunner(ServeConfig(repository=repo, port=0)) as runner:
            async with aiohttp.ClientSession() as s:
                replies = await _burst(s, runner.url, x)
            return replies, runner.server.served("digits").counters.batches

    replies, batches = asyncio.run(go())
    assert [status for status, _, _ in replies] == [200] * 96
    answers = np.asarray([doc["outputs"][0]["data"] for _, doc, _ in replies], dtype=np.float32)
    np.testing.assert_allclose(answers, digits_models.expected[:96], atol=1e-6)
    assert batches < 96  # requests shared batches


def test_requests_that_cannot_make_it_into_a_full_queue_are_shed_with_retry_after(
    tmp_path: Path, digits_models: TrainedModels
) -> None:
    repo = make_repository(
        tmp_path, digits_models,
        config="sla_ms = 0.01\nmax_batch = 1\nmax_queue = 4\ninitial_cores = 0.1\n"
               "min_cores = 0.1\nmax_cores = 0.1\n",
    )  # fmt: skip
    x = np.tile(digits_models.x[:50], (4, 1))

    async def go() -> tuple[list[Any], dict[str, int]]:
        async with RomaRunner(ServeConfig(repository=repo, port=0)) as runner:
            async with aiohttp.ClientSession() as s:
                replies = await _burst(s, runner.url, x)
                async with s.get(f"{runner.url}/v2/models/digits/stats") as r:
                    stats = await r.json()
            return replies, stats

    replies, stats = asyncio.run(go())
    statuses = [status for status, _, _ in replies]
    shed = [(doc, headers) for status, doc, headers in replies if status == 429]
    assert set(statuses) <= {200, 429}
    assert shed, statuses
    assert statuses.count(200) >= 4
    for doc, headers in shed:
        assert "SLA" in doc["error"]
        assert int(headers["Retry-After"]) >= 1
    assert stats["shed"] == len(shed)
    assert stats["ok"] == statuses.count(200)
    assert stats["sla_violations"] > 0


def test_the_gpu_serves_the_most_pressing_model_and_cpus_absorb_the_rest(
    tmp_path: Path, digits_models: TrainedModels
) -> None:
    config = "sla_ms = 100.0\nmax_batch = 8\ninitial_cores = 0.5\nmax_cores = 1.0\n"
    repo = make_repository(tmp_path, digits_models, name="digits", config=config)
    make_repository(tmp_path, digits_models, name="tight", config=config.replace("100.0", "5.0"))
    x = digits_models.x[:64]

    async def go() -> tuple[list[Any], list[Any], dict[str, int], int, int]:
        async with RomaRunner(ServeConfig(repository=repo, port=0, fake_gpu=True)) as runner:
            server = runner.server
            assert server.arbiter is not None
            async with aiohttp.ClientSession() as s:
                a, b = await asyncio.gather(
                    _burst(s, runner.url, x, "digits"), _burst(s, runner.url, x, "tight")
                )
            grants = dict(server.arbiter.grants)
            cpu = sum(server.served(m).counters.batches for m in ("digits", "tight"))
            gpu = sum(server.served(m).counters.gpu_batches for m in ("digits", "tight"))
            return a, b, grants, cpu, gpu

    a, b, grants, cpu, gpu = asyncio.run(go())
    for replies in (a, b):
        answers = np.asarray([doc["outputs"][0]["data"] for _, doc, _ in replies], np.float32)
        np.testing.assert_allclose(answers, digits_models.expected[:64], atol=1e-6)
    assert gpu == sum(grants.values())
    assert gpu > 0
    assert cpu > 0
    assert set(grants) <= {"digits", "tight"}


def test_the_controller_adds_cores_when_late_removes_them_when_idle_and_shares_the_node(
    tmp_path: Path, digits_models: TrainedModels
) -> None:
    config = "sla_ms = 20.0\ninitial_cores = 0.5\nmin_cores = 0.1\nmax_cores = 2.0\n"
    repo = make_repository(tmp_path, digits_models, name="a", config=config)
    make_repository(tmp_path, digits_models, name="b", config=config)

    async def go() -> dict[str, list[dict[str, float]]]:
        async with RomaRunner(ServeConfig(repository=repo, port=0, cores=2.0)) as runner:
            server = runner.server
            trace: dict[str, list[dict[str, float]]] = {"late": [], "idle": []}
            for _ in range(8):  # both models answer at 5 x their SLA: both want more
                now = time.monotonic()
                for name in ("a", "b"):
                    server.served(name).window.add(now, 0.1)
                trace["late"].append(server.control_step(1.0))
            for name in ("a", "b"):
                server.served(name).window = type(server.served(name).window)(0.5)
            for _ in range(30):
                trace["idle"].append(server.control_step(1.0))
            return trace

    trace = asyncio.run(go())
    late, idle = trace["late"], trace["idle"]
    assert late[0]["a"] > 0.5  # late: more cores at once
    for step in late:
        assert step["a"] + step["b"] <= 2.0 + 1e-9  # never more than the node has
    assert late[-1]["a"] == late[-1]["b"] == 1.0  # equal need, equal share
    assert idle[-1]["a"] < late[-1]["a"]
    assert idle[-1]["a"] == 0.1
