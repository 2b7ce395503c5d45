"""A whole secure deployment on a real Mosquitto (TLS + password per user + the generated ACL):
agent daemons and a coordinator train a job through it and the coordinator signs what it
exports; an agent fetching the model accepts the signed file and refuses a tampered or
unsigned one, keeping what it had. Then the CLI roles themselves (``hyperfleet agent`` and
``hyperfleet watch``) connect with ``--tls-*`` flags and a password that never reaches a log."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from secure_broker import SecureBroker, secure_broker
from support import CAPS, digits_split

from agent.daemon import Agent, AgentSettings
from agent.models import fetch_model
from agent.numpy_trainer import NumpyTrainer
from cloud.roma import RomaRunner, ServeConfig
from coordinator.job import JobSpec
from coordinator.mqtt_fleet import open_mqtt_fleet
from coordinator.service import Coordinator, JobOutcome
from link import IntegrityError, SignatureError
from link.artifacts import ArtifactServer
from link.mqtt import mqtt_client
from link.signing import ArtifactSigner, ArtifactVerifier
from protocol import ModelRef, Topics, encode, encode_shard, new_envelope, parse_broker_url

AGENTS = ["edge-a", "edge-b"]
PREFIX = "hf/v1"


def _spec(holdout: Path) -> JobSpec:
    return JobSpec.model_validate(
        {
            "job_id": "secure",
            "holdout": str(holdout),
            "rounds": {"participants": 2, "round_timeout_s": 15, "local_epochs": 1,
                       "batch_size": 16, "min_agents": 2, "wait_for_agents_s": 20},
            "constraints": {"target_accuracy": 0.99, "time_budget_s": 120, "max_rounds": 2},
        }
    )  # fmt: skip


def _agent(b: SecureBroker, agent_id: str, trainer: NumpyTrainer, n: int) -> Agent:
    settings = AgentSettings(
        agent_id=agent_id,
        broker=parse_broker_url(b.url(agent_id)),
        device_class="x86-cpu",
        topics=Topics(PREFIX),
        heartbeat_s=0.5,
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
        tls=b.tls(agent_id),
    )
    return Agent(settings=settings, trainer=trainer, capabilities=CAPS, num_examples=n)


def test_a_job_runs_through_the_secure_broker_and_its_model_is_signed(tmp_path: Path) -> None:
    shards, holdout = digits_split(len(AGENTS), seed=3)
    holdout_path = tmp_path / "holdout.npz"
    holdout_path.write_bytes(encode_shard(holdout))
    with secure_broker(tmp_path / "broker", agents=AGENTS, require_certificate=True) as b:
        signer = ArtifactSigner.load(b.certs / "signing.key")
        agents = [
            _agent(b, a, NumpyTrainer(s), len(s)) for a, s in zip(AGENTS, shards, strict=True)
        ]

        async def go() -> tuple[JobOutcome, dict[str, int | str]]:
            async with asyncio.TaskGroup() as tg:
                for agent in agents:
                    tg.create_task(agent.run())
                try:
                    async with (
                        ArtifactServer(tmp_path / "out" / "model") as files,
                        open_mqtt_fleet(
                            broker=parse_broker_url(b.url("coordinator")),
                            topics=Topics(PREFIX),
                            job_id="secure",
                            tls=b.tls("coordinator"),
                        ) as fleet,
                    ):
                        coordinator = Coordinator(
                            spec=_spec(holdout_path), fleet=fleet, holdout=holdout,
                            state_dir=tmp_path / "state", out_dir=tmp_path / "out",
                            artifact_base_url=files.base_url, sign_ref=signer.sign_ref,
                        )  # fmt: skip
                        outcome = await coordinator.run()
                        assert outcome.model_ref is not None
                        roma = await _roma_follows(b, outcome.model_ref, tmp_path)
                        results = await _agent_fetches(b, outcome.model_ref, tmp_path)
                finally:
                    for agent in agents:
                        agent.stop()
            return outcome, {**results, **roma}

        (tmp_path / "out" / "model").mkdir(parents=True)
        outcome, fetched = asyncio.run(go())
    assert outcome.progress.round == 2
    assert all(r.results == 2 for r in outcome.progress.history)
    ref = outcome.model_ref
    assert ref is not None
    assert ref.signature is not None
    assert all(a.signature for a in ref.variants)
    assert fetched == {
        "signed": 1, "tampered": 1, "unsigned": 1, "kept": 1,
        "roma installed": 1, "roma refused": 1, "roma serving": "1",
    }  # fmt: skip


async def _roma_follows(b: SecureBroker, ref: ModelRef, tmp: Path) -> dict[str, int | str]:
    """ROMA follows ``models/+/latest`` as user ``roma`` over TLS with the verify key: it
    installs the signed model; an unsigned newer version (published with the coordinator's
    stolen password) is refused and the signed one keeps serving."""
    tls = b.tls("roma")
    config = ServeConfig(
        repository=tmp / "serving", port=0, broker=b.url("roma"), prefix=PREFIX,
        tls_ca=tls.ca_file, tls_cert=tls.cert_file, tls_key=tls.key_file,
        verify_key=b.certs / "signing.pub",
    )  # fmt: skip
    (tmp / "serving").mkdir()
    async with RomaRunner(config) as runner:
        follower = runner.follower
        assert follower is not None
        for _ in range(600):
            if follower.installed or follower.failed:
                break
            await asyncio.sleep(0.1)
        forged = dataclasses.replace(ref, version=ref.version + 1, signature=None, variants=())
        async with mqtt_client(
            parse_broker_url(b.url("coordinator")), identifier="thief", tls=b.tls("coordinator")
        ) as thief:
            await thief.publish(
                Topics(PREFIX).model_latest(ref.name),
                encode(new_envelope(forged, sender="coordinator")),
                qos=1,
                retain=True,
            )
        for _ in range(300):
            if follower.failed:
                break
            await asyncio.sleep(0.1)
        served = runner.server.entry(ref.name).served
        return {
            "roma installed": follower.installed,
            "roma refused": follower.failed,
            "roma serving": served.version if served is not None else "none",
        }


async def _agent_fetches(b: SecureBroker, ref: ModelRef, tmp: Path) -> dict[str, int]:
    """What an agent does with the announced model: fetch the TFLite file, verified."""
    verifier = ArtifactVerifier.load(b.certs / "signing.pub")
    dest = tmp / "device" / "model.tflite"
    dest.parent.mkdir()
    out = {"signed": 0, "tampered": 0, "unsigned": 0, "kept": 0}
    await fetch_model(ref, format="tflite", dest=dest, verifier=verifier)
    artifact = ref.artifact("tflite")
    assert artifact is not None
    if hashlib.sha256(dest.read_bytes()).hexdigest() == artifact.sha256:
        out["signed"] = 1
    good = dest.read_bytes()
    # Someone rewrites the file on the artifact server: the bytes no longer match the digest.
    served = tmp / "out" / "model" / Path(artifact.url).name
    served.write_bytes(served.read_bytes()[:-16] + b"\x00" * 16)
    with pytest.raises(IntegrityError, match="sha256"):
        await fetch_model(ref, format="tflite", dest=dest, verifier=verifier)
    out["tampered"] = 1
    # Someone publishes a reference without signatures (pointing at the tampered file).
    sha = hashlib.sha256(served.read_bytes()).hexdigest()
    variants = tuple(dataclasses.replace(a, signature=None, sha256=sha) for a in ref.variants)
    unsigned = dataclasses.replace(ref, signature=None, variants=variants)
    with pytest.raises(SignatureError, match="unsigned"):
        await fetch_model(unsigned, format="tflite", dest=dest, verifier=verifier)
    out["unsigned"] = 1
    out["kept"] = int(dest.read_bytes() == good)
    return out


def _cli(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hyperfleet", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        )


def test_the_cli_roles_connect_with_tls_flags_and_keep_the_password_out_of_logs(
    tmp_path: Path,
) -> None:
    shards, _ = digits_split(1, seed=4)
    shard = tmp_path / "shard.npz"
    shard.write_bytes(encode_shard(shards[0]))
    with secure_broker(tmp_path / "broker", agents=["edge-a"]) as b:
        agent_tls = b.tls("edge-a")
        agent = _cli(
            ["agent", "--id", "edge-a", "--data", str(shard), "--device-class", "x86-cpu",
             "--runtime", "numpy", "--heartbeat-s", "0.3", "--log-level", "DEBUG",
             "--tls-ca", str(agent_tls.ca_file), "--tls-cert", str(agent_tls.cert_file),
             "--tls-key", str(agent_tls.key_file)],
            {"HYPERFLEET_BROKER": b.url("edge-a")},
            tmp_path / "agent.log",
        )  # fmt: skip
        try:
            watch = subprocess.run(
                [sys.executable, "-m", "hyperfleet", "watch", "--count", "3",
                 "--broker", b.url("monitor"), "--log-level", "DEBUG"],
                env={**os.environ, "HYPERFLEET_TLS_CA": str(b.certs / "ca.crt")},
                capture_output=True, timeout=120,
            )  # fmt: skip
            plain = subprocess.run(
                [sys.executable, "-m", "hyperfleet", "watch", "--count", "1",
                 "--broker", "mqtt://monitor:pw@localhost:1", "--tls-ca", str(b.certs / "ca.crt")],
                capture_output=True, timeout=60,
            )  # fmt: skip
        finally:
            agent.terminate()
            agent.wait(30)
        time.sleep(0.1)
    out = watch.stdout.decode()
    assert watch.returncode == 0, watch.stderr.decode()[-2000:]
    assert "hf/v1/agents/edge-a/" in out
    assert "Hello" in out or "Heartbeat" in out or "Status" in out
    assert plain.returncode == 64
    assert b"need an mqtts:// broker URL" in plain.stderr
    agent_log = (tmp_path / "agent.log").read_text()
    assert "connected to mqtts://localhost" in agent_log
    for secret in (b.passwords["edge-a"], b.passwords["monitor"]):
        assert secret not in agent_log
        assert secret not in watch.stderr.decode() + out
