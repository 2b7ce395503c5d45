"""ROMA with a verify key installs only models the coordinator's key signed: an unsigned
reference, one signed by another key, and a signed reference whose bytes or digest were
changed are refused with the reason, and the serving version keeps serving. The admin token
comes from a file."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import shutil
from pathlib import Path

import aiohttp
import pytest

from cloud.roma import RepositoryError, RomaRunner, ServeConfig
from hyperfleet.cli import build_parser
from hyperfleet.errors import UsageError
from hyperfleet.serving import serve_settings
from link.artifacts import ArtifactServer
from link.signing import ArtifactSigner, generate_signing_key
from protocol import ModelRef

from .conftest import TrainedModels, make_repository


def _ref(server: ArtifactServer, path: Path, *, version: int) -> ModelRef:
    data = path.read_bytes()
    return ModelRef(name="digits", version=version, job_id="job", format="tflite",
                    url=server.url(path.name), sha256=hashlib.sha256(data).hexdigest(),
                    size_bytes=len(data))  # fmt: skip


def _keypair(directory: Path, name: str) -> tuple[ArtifactSigner, Path]:
    private, public = generate_signing_key()
    (directory / f"{name}.key").write_bytes(private)
    (directory / f"{name}.pub").write_bytes(public)
    return ArtifactSigner.load(directory / f"{name}.key"), directory / f"{name}.pub"


def test_only_models_signed_by_the_verify_key_are_installed(
    tmp_path: Path, digits_models: TrainedModels, digits_models_v2: TrainedModels
) -> None:
    ours, public = _keypair(tmp_path, "ours")
    theirs, _ = _keypair(tmp_path, "theirs")
    repo = make_repository(tmp_path / "repo", digits_models)
    (tmp_path / "artifacts").mkdir()
    config = ServeConfig(repository=repo, port=0, verify_key=public)

    async def go() -> dict[str, str]:
        reasons: dict[str, str] = {}
        async with RomaRunner(config) as runner, ArtifactServer(tmp_path / "artifacts") as a:
            shutil.copy(digits_models_v2.tflite, a.directory / "v2.tflite")
            good = _ref(a, a.directory / "v2.tflite", version=2)
            shutil.copy(digits_models_v2.tflite, a.directory / "evil.tflite")
            with (a.directory / "evil.tflite").open("r+b") as f:  # tampered on the server
                f.seek(100)
                f.write(b"\x00\x01\x02\x03")
            forged_digest = _ref(a, a.directory / "evil.tflite", version=2)
            cases = {
                "unsigned": good,
                "another key": theirs.sign_ref(good),
                "tampered bytes": dataclasses.replace(
                    ours.sign_ref(good), url=a.url("evil.tflite")
                ),
                "tampered digest": dataclasses.replace(
                    forged_digest, signature=ours.sign_ref(good).signature
                ),
            }
            for case, ref in cases.items():
                with pytest.raises(RepositoryError) as err:
                    await runner.server.install(ref)
                reasons[case] = str(err.value)
                entry = runner.server.entry("digits")
                assert entry.served is not None
                assert entry.served.version == "1", case
                assert "version 1 keeps serving" in entry.reason
            assert not (repo / "digits" / "2").exists()
            await runner.server.install(ours.sign_ref(good))
            served = runner.server.entry("digits").served
            assert served is not None
            reasons["signed"] = served.version
        return reasons

    reasons = asyncio.run(go())
    assert "unsigned" in reasons["unsigned"]
    assert "does not verify" in reasons["another key"]
    assert "sha256" in reasons["tampered bytes"]
    assert "does not verify" in reasons["tampered digest"]
    assert reasons["signed"] == "2"


def test_the_admin_token_comes_from_a_file_and_guards_the_repository(
    tmp_path: Path, digits_models: TrainedModels
) -> None:
    repo = make_repository(tmp_path / "repo", digits_models)
    token_file = tmp_path / "admin.token"
    token_file.write_text("t0ken-from-file\n")
    parser = build_parser()

    def settings(*extra: str) -> argparse.Namespace:
        return parser.parse_args(["serve", "--repository", str(repo), "--port", "0", *extra])

    config = serve_settings(settings("--admin-token-file", str(token_file)))
    assert config.token == "t0ken-from-file"
    assert "t0ken" not in repr(config)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(UsageError, match="empty"):
        serve_settings(settings("--admin-token-file", str(tmp_path / "empty")))
    with pytest.raises(UsageError, match="not both"):
        serve_settings(settings("--admin-token-file", str(token_file), "--token", "x"))

    async def go() -> list[int]:
        statuses = []
        async with RomaRunner(config) as runner, aiohttp.ClientSession() as s:
            base = runner.url
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Authorization": "Bearer t0ken-from-file"}):  # fmt: skip
                async with s.post(f"{base}/v2/repository/index", headers=headers) as r:
                    statuses.append(r.status)
                unload = f"{base}/v2/repository/models/digits/unload"
                async with s.post(unload, headers=headers) as r:
                    statuses.append(r.status)
            async with s.get(f"{base}/v2/health/ready") as r:
                statuses.append(r.status)
        return statuses

    assert asyncio.run(go()) == [401, 401, 401, 401, 200, 200, 200]
