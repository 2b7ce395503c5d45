"""Hot reload, failed loads and rollback against a real in-process server and real HTTP: a new
version arrives as a ModelRef whose artifacts are fetched over HTTP and verified; a bad download
or a model that will not load keeps the old version serving and says why; the repository
endpoints need the token and roll back."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from cloud.roma import RepositoryError, RomaRunner, ServeConfig
from link.artifacts import ArtifactServer
from protocol import ModelRef, Normalization

from .conftest import TrainedModels, make_repository

TOKEN = "reload-token"


def _ref(
    server: ArtifactServer, path: Path, *, version: int, sha256: str | None = None
) -> ModelRef:
    data = path.read_bytes()
    return ModelRef(
        name="digits",
        version=version,
        job_id="job",
        format="tflite",
        url=server.url(path.name),
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
    )


async def _infer(session: aiohttp.ClientSession, url: str, x: np.ndarray) -> tuple[str, np.ndarray]:
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.reshape(-1).tolist()}]}  # fmt: skip
    async with session.post(f"{url}/v2/models/digits/infer", json=body) as response:
        doc = await response.json()
        assert response.status == 200, doc
    out = np.asarray(doc["outputs"][0]["data"], dtype=np.float32).reshape(len(x), -1)
    return str(doc["model_version"]), out


def _run(
    tmp_path: Path,
    v1: TrainedModels,
    scenario: Callable[[RomaRunner, aiohttp.ClientSession, ArtifactServer], Awaitable[Any]],
) -> Any:
    repo = make_repository(tmp_path / "repo", v1)
    (tmp_path / "artifacts").mkdir()
    config = ServeConfig(repository=repo, port=0, token=TOKEN)

    async def go() -> Any:
        async with (
            RomaRunner(config) as runner,
            ArtifactServer(tmp_path / "artifacts") as artifacts,
            aiohttp.ClientSession() as session,
        ):
            return await scenario(runner, session, artifacts)

    return asyncio.run(go())


def test_a_published_version_is_fetched_verified_and_swapped_in(
    tmp_path: Path, digits_models: TrainedModels, digits_models_v2: TrainedModels
) -> None:
    x = digits_models.x[:5]

    async def scenario(runner: RomaRunner, s: aiohttp.ClientSession, a: ArtifactServer) -> None:
        assert (await _infer(s, runner.url, x))[0] == "1"
        shutil.copy(digits_models_v2.tflite, a.directory / "v2.tflite")
        await runner.server.install(_ref(a, a.directory / "v2.tflite", version=2))
        version, out = await _infer(s, runner.url, x)
        assert version == "2"
        np.testing.assert_allclose(out, digits_models_v2.expected[:5], atol=1e-6)
        assert (runner.config.repository / "digits" / "2" / "ref.json").is_file()
        assert runner.server.entry("digits").previous == "1"

    _run(tmp_path, digits_models, scenario)


def test_a_version_serves_with_the_normalization_shipped_in_its_model_ref(
    tmp_path: Path, digits_models: TrainedModels, digits_models_v2: TrainedModels
) -> None:
    """The models were trained on pixels / 16: a v2 whose ModelRef says so takes raw pixels;
    rolling back to v1 (no statistics) serves v1 as it was; statistics that do not fit the
    input are refused at load and v1 keeps serving."""
    normalised = digits_models.x[:5]
    raw = normalised * 16.0

    async def scenario(runner: RomaRunner, s: aiohttp.ClientSession, a: ArtifactServer) -> str:
        shutil.copy(digits_models_v2.tflite, a.directory / "v2.tflite")
        ref = _ref(a, a.directory / "v2.tflite", version=2)
        bad = dataclasses.replace(
            ref, version=3, normalization=Normalization(offset=(0.0,) * 63, scale=(0.0625,) * 63)
        )
        with pytest.raises(RepositoryError, match="63 values"):
            await runner.server.install(bad)
        assert (await _infer(s, runner.url, normalised))[0] == "1"
        good = dataclasses.replace(
            ref, normalization=Normalization(offset=(0.0,) * 64, scale=(0.0625,) * 64)
        )
        await runner.server.install(good)
        version, out = await _infer(s, runner.url, raw)
        assert version == "2"
        np.testing.assert_allclose(out, digits_models_v2.expected[:5], atol=1e-5)
        await runner.server.load("digits", 1)
        version, out = await _infer(s, runner.url, normalised)
        assert version == "1"
        np.testing.assert_allclose(out, digits_models.expected[:5], atol=1e-6)
        return (runner.config.repository / "digits" / "2" / "normalization.json").read_text()

    saved = _run(tmp_path, digits_models, scenario)
    assert "0.0625" in saved


@pytest.mark.parametrize("fault", ["wrong sha256", "missing file", "not a model"])
def test_a_failed_download_or_load_keeps_the_old_version_serving(
    tmp_path: Path, digits_models: TrainedModels, fault: str
) -> None:
    x = digits_models.x[:3]

    async def scenario(runner: RomaRunner, s: aiohttp.ClientSession, a: ArtifactServer) -> str:
        path = a.directory / "v2.tflite"
        if fault == "not a model":
            path.write_bytes(b"this is not a flatbuffer" * 10)
        elif fault == "wrong sha256":
            shutil.copy(digits_models.tflite, path)
        ref = _ref(a, path if path.exists() else digits_models.tflite, version=2,
                   sha256="0" * 64 if fault == "wrong sha256" else None)  # fmt: skip
        if fault == "missing file":
            ref = dataclasses.replace(ref, url=a.url("gone.tflite"))
        with pytest.raises(RepositoryError):
            await runner.server.install(ref)
        version, out = await _infer(s, runner.url, x)
        assert version == "1"
        np.testing.assert_allclose(out, digits_models.expected[:3], atol=1e-6)
        async with s.get(f"{runner.url}/v2/models/digits/stats") as response:
            stats = await response.json()
        assert stats["state"] == "READY"
        return str(stats["reason"])

    reason = _run(tmp_path, digits_models, scenario)
    assert "version 1 keeps serving" in reason
    assert not (tmp_path / "repo" / "digits" / "2").exists() or fault == "not a model"


def test_repository_control_needs_the_token_and_rolls_back(
    tmp_path: Path, digits_models: TrainedModels, digits_models_v2: TrainedModels
) -> None:
    x = digits_models.x[:4]

    async def scenario(runner: RomaRunner, s: aiohttp.ClientSession, a: ArtifactServer) -> None:
        shutil.copy(digits_models_v2.tflite, a.directory / "v2.tflite")
        await runner.server.install(_ref(a, a.directory / "v2.tflite", version=2))
        load = f"{runner.url}/v2/repository/models/digits/load"
        body = {"parameters": {"version": "1"}}
        async with s.post(load, json=body) as response:
            assert response.status == 401
            assert "token" in (await response.json())["error"]
        wrong = {"Authorization": "Bearer nope"}
        async with s.post(load, json=body, headers=wrong) as response:
            assert response.status == 401
        assert (await _infer(s, runner.url, x))[0] == "2"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with s.post(load, json=body, headers=auth) as response:
            assert response.status == 200, await response.text()
        version, out = await _infer(s, runner.url, x)
        assert version == "1"
        np.testing.assert_allclose(out, digits_models.expected[:4], atol=1e-6)
        async with s.post(load, json={"parameters": {"version": "7"}}, headers=auth) as response:
            assert response.status == 404
        assert (await _infer(s, runner.url, x))[0] == "1"
        unload = f"{runner.url}/v2/repository/models/digits/unload"
        async with s.post(unload, headers=auth) as response:
            assert response.status == 200
        async with s.get(f"{runner.url}/v2/models/digits/ready") as response:
            assert response.status == 400
        async with s.post(f"{runner.url}/v2/repository/index") as response:
            assert response.status == 401  # with a token configured, the index needs it too
        async with s.post(f"{runner.url}/v2/repository/index", headers=auth) as response:
            index = await response.json()
        assert index == [
            {"name": "digits", "version": None, "state": "UNAVAILABLE", "reason": "unloaded"}
        ]

    _run(tmp_path, digits_models, scenario)


def test_a_model_that_fails_at_start_is_unavailable_and_the_others_serve(
    tmp_path: Path, digits_models: TrainedModels
) -> None:
    repo = make_repository(tmp_path / "repo", digits_models)
    broken = repo / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "model.tflite").write_bytes(b"garbage")
    (repo / "badconfig" / "1").mkdir(parents=True)
    (repo / "badconfig" / "config.toml").write_text("sla_ms = -3\nbatch = 4\n")
    config = ServeConfig(repository=repo, port=0)

    async def go() -> dict[str, Any]:
        async with RomaRunner(config) as runner, aiohttp.ClientSession() as s:
            assert (await _infer(s, runner.url, digits_models.x[:1]))[0] == "1"
            async with s.get(f"{runner.url}/v2/models/broken/ready") as response:
                assert response.status == 400
            async with s.post(f"{runner.url}/v2/repository/index") as response:
                return {row["name"]: row for row in await response.json()}

    index = asyncio.run(go())
    assert index["digits"]["state"] == "READY"
    assert index["broken"]["state"] == "UNAVAILABLE"
    assert "cannot load" in index["broken"]["reason"]
    assert "sla_ms" in index["badconfig"]["reason"]
    assert "batch" in index["badconfig"]["reason"]
