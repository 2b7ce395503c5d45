"""The long-running commands: an agent, a coordinator, a broker, a topic watcher.

The ``*_settings`` builders take the parsed flags of :func:`hyperfleet.cli.build_parser`, whose
paths are already absolute (:mod:`.flags`), and return one frozen settings object per process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.app import RuntimeChoice, create_agent, read_shard
from agent.daemon import AgentSettings, Emulator
from agent.device_class import DeviceClass, load_device_class, load_fleet
from agent.emulation import DeviceEmulator
from coordinator.checkpoint import CheckpointStore
from coordinator.dashboard import Dashboard, open_dashboard
from coordinator.job import JobSpec, load_job
from coordinator.mqtt_fleet import open_mqtt_fleet
from coordinator.service import Coordinator, JobOutcome
from link.artifacts import ArtifactServer
from link.mqtt import MqttConnection, MqttSession, TlsFiles
from protocol import (
    BrokerAddress,
    ProtocolError,
    Shard,
    Topics,
    check_agent_id,
    decode,
    parse_broker_url,
)

from .errors import BrokerError, UsageError
from .exits import EXIT_NOT_REACHED, EXIT_OK
from .flags import require_absolute
from .fleetrun import FleetRun, emulated_profile
from .output import dump_json
from .transport import tls_files

__all__ = [
    "AgentRun",
    "CoordinatorRun",
    "agent_settings",
    "coordinator_settings",
    "fleet_settings",
    "outcome_json",
    "run_agent",
    "run_broker",
    "run_coordinator",
    "run_watch",
]

_log = logging.getLogger("hyperfleet")
SOFTWARE = "hyperfleet 0.1.0"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRun:
    settings: AgentSettings
    device: DeviceClass
    shard: Shard
    runtime: RuntimeChoice
    emulator: Emulator | None = None


def agent_settings(args: argparse.Namespace) -> AgentRun:
    """The settings of ``hyperfleet agent``; reads the device class and the shard.

    Raises:
        UsageError: a bad agent id or time scale.
        ConfigError: the device class or the shard cannot be read or is invalid.
    """
    try:
        check_agent_id(args.agent_id)
    except ProtocolError as exc:
        raise UsageError(str(exc)) from exc
    device = load_device_class(args.device_class)
    if args.time_scale <= 0:
        raise UsageError("--time-scale must be positive")
    wire_bytes = _wire_bytes(args)
    emulator = (
        DeviceEmulator(
            device.emulation, seed=args.seed, time_scale=args.time_scale, wire_bytes=wire_bytes
        )
        if args.emulate
        else None
    )
    return AgentRun(
        settings=AgentSettings(
            agent_id=args.agent_id,
            broker=parse_broker_url(args.broker),
            device_class=device.name,
            topics=Topics(args.prefix),
            heartbeat_s=args.heartbeat_s,
            profile=emulated_profile(device.emulation, args.time_scale, wire_bytes)
            if args.emulate
            else device.emulation.announced(),
            tls=tls_files(args, args.broker),
        ),
        device=device,
        shard=read_shard(args.data),
        runtime=args.runtime,
        emulator=emulator,
    )


def _wire_bytes(args: argparse.Namespace) -> int | None:
    wire_bytes: int | None = getattr(args, "model_wire_bytes", None)
    if wire_bytes is not None and wire_bytes <= 0:
        raise UsageError("--model-wire-bytes must be a positive number of bytes")
    return wire_bytes


def fleet_settings(args: argparse.Namespace) -> FleetRun:
    """The settings of ``hyperfleet agents``; reads the fleet file (``ConfigError`` if bad)."""
    if args.time_scale <= 0:
        raise UsageError("--time-scale must be positive")
    return FleetRun(
        model_wire_bytes=_wire_bytes(args),
        fleet=load_fleet(args.fleet),
        shards_dir=args.shards,
        broker=parse_broker_url(args.broker),
        topics=Topics(args.prefix),
        emulate=args.emulate,
        time_scale=args.time_scale,
        runtime=args.runtime,
        seed=args.seed,
        heartbeat_s=args.heartbeat_s,
        report=args.report,
        tls=tls_files(args, args.broker),
    )


async def run_agent(run: AgentRun) -> int:
    agent = create_agent(
        run.settings,
        device=run.device,
        shard=run.shard,
        runtime=run.runtime,
        software=SOFTWARE,
        emulator=run.emulator,
    )
    _log.info(
        "agent %s (%s, %s trainer, %d examples) connecting to %s",
        run.settings.agent_id,
        run.device.name,
        agent.trainer_name,
        len(run.shard),
        run.settings.broker.url,
    )
    await agent.run()
    return 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CoordinatorRun:
    spec: JobSpec
    broker: BrokerAddress
    topics: Topics
    state_dir: Path
    out_dir: Path
    artifacts_host: str = "127.0.0.1"
    artifacts_port: int = 0
    advertise_url: str | None = None
    linger_s: float = 60.0
    tls: TlsFiles | None = None
    signing_key: Path | None = None
    """Ed25519 private key (PEM) that signs the published model's artifacts."""
    dashboard_port: int | None = None
    """Serve the dashboard on this port (0: a free one); ``None``: no dashboard."""
    dashboard_host: str = "127.0.0.1"
    roma_url: str | None = None
    """A ROMA server whose SLA stats the dashboard shows."""

    def __post_init__(self) -> None:
        require_absolute("state_dir", self.state_dir)
        require_absolute("out_dir", self.out_dir)
        if not self.linger_s >= 0:
            raise UsageError(f"--linger-s must be >= 0, got {self.linger_s}")
        if self.roma_url is not None and not self.roma_url.startswith(("http://", "https://")):
            raise UsageError(
                f"--roma-url must be an http:// or https:// URL, got {self.roma_url!r}"
            )


def coordinator_settings(args: argparse.Namespace) -> CoordinatorRun:
    """The settings of ``hyperfleet coordinator``; reads the job file (``JobConfigError`` if bad)."""
    return CoordinatorRun(
        spec=load_job(args.job),
        broker=parse_broker_url(args.broker),
        topics=Topics(args.prefix),
        state_dir=args.state_dir,
        out_dir=args.out,
        artifacts_host=args.artifacts_host,
        artifacts_port=args.artifacts_port,
        advertise_url=args.advertise_url,
        linger_s=args.linger_s,
        tls=tls_files(args, args.broker),
        signing_key=args.signing_key,
        dashboard_port=args.dashboard,
        dashboard_host=args.dashboard_host,
        roma_url=args.roma_url,
    )


def outcome_json(outcome: JobOutcome) -> dict[str, Any]:
    p = outcome.progress
    export = outcome.export
    return {
        "job_id": outcome.job_id,
        "reason": outcome.reason,
        "reached": outcome.reached,
        "rounds": p.round,
        "final_accuracy": p.accuracy,
        "best_accuracy": p.best_accuracy,
        "best_round": p.best_round,
        "elapsed_s": p.elapsed_s,
        "bytes_moved": p.bytes_moved,
        "agent_seconds": p.agent_seconds,
        "dropped": outcome.dropped,
        "model": None
        if export is None
        else {
            "keras": str(export.keras),
            "tflite": str(export.tflite_float),
            "tflite_dynamic": str(export.tflite_dynamic),
            "tflite_agreement": export.agreement_float,
            "tflite_dynamic_agreement": export.agreement_dynamic,
            "sha256": export.sha256,
            "version": outcome.model_ref.version if outcome.model_ref else None,
        },
        "history": [r.to_json() for r in p.history],
    }


async def run_coordinator(run: CoordinatorRun) -> int:
    # Before anything connects: a job file edited since its state was saved fails here, by key.
    CheckpointStore(run.state_dir).check_spec(run.spec.job_id, run.spec.model_dump(mode="json"))
    holdout = read_shard(run.spec.holdout)
    sign_ref = None
    if run.signing_key is not None:
        from link.signing import ArtifactSigner

        sign_ref = ArtifactSigner.load(run.signing_key).sign_ref  # a bad key fails here, early
    model_dir = run.out_dir / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    # The exported model (and the dashboard, when asked for) is served over HTTP from before the
    # job starts (a bind failure stops it here, not after an hour of training) until linger_s
    # after it ends.
    async with contextlib.AsyncExitStack() as stack:
        files = await stack.enter_async_context(
            ArtifactServer(model_dir, host=run.artifacts_host, port=run.artifacts_port)
        )
        base_url = run.advertise_url or files.base_url
        _log.info("serving exported models from %s at %s", model_dir, base_url)
        dashboard: Dashboard | None = None
        if run.dashboard_port is not None:
            dashboard, url = await stack.enter_async_context(
                open_dashboard(
                    host=run.dashboard_host, port=run.dashboard_port, roma_url=run.roma_url
                )
            )
            _log.info("dashboard at %s", url)
        try:
            async with open_mqtt_fleet(
                broker=run.broker, topics=run.topics, job_id=run.spec.job_id, tls=run.tls
            ) as fleet:
                coordinator = Coordinator(
                    spec=run.spec,
                    fleet=fleet,
                    holdout=holdout,
                    state_dir=run.state_dir,
                    out_dir=run.out_dir,
                    artifact_base_url=base_url,
                    sign_ref=sign_ref,
                )
                if dashboard is not None:
                    dashboard.watch(coordinator)
                outcome = await coordinator.run()
        except TimeoutError as exc:
            raise BrokerError(f"cannot reach the broker at {run.broker.url}") from exc
        dump_json(run.out_dir / "outcome.json", outcome_json(outcome))
        _log.info("job %s finished: %s", run.spec.job_id, outcome.reason)
        if outcome.model_ref is not None and run.linger_s > 0:
            _log.info("serving the model at %s for %.0fs more", base_url, run.linger_s)
            await asyncio.sleep(run.linger_s)
    return EXIT_OK if outcome.reached else EXIT_NOT_REACHED


def run_broker(*, port: int, bind: str, embedded: bool, persist: Path | None = None) -> int:
    from .broker import start_broker

    if persist is not None:
        persist.mkdir(parents=True, exist_ok=True)
    with start_broker(
        port=port,
        bind=bind,
        prefer="embedded" if embedded else "auto",
        persistence_dir=persist,
    ) as broker:
        print(f"{broker.kind} broker listening on {broker.url} (Ctrl-C to stop)", flush=True)
        stop = False

        def on_signal(signum: int, frame: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        while not stop and broker.process.poll() is None:
            time.sleep(0.2)
        if broker.process.poll() not in (None, 0):
            return 1
    return 0


async def run_watch(
    broker: BrokerAddress, topics: Topics, count: int, *, tls: TlsFiles | None = None
) -> int:
    """Print every message under the prefix (``count`` of them, 0: until stopped); rides out
    broker outages. ``tls``: CA bundle and client certificate for an ``mqtts://`` broker."""
    seen = 0
    enough = asyncio.Event()

    def on_message(topic: str, payload: object) -> None:
        nonlocal seen
        if enough.is_set():
            return
        try:
            if not isinstance(payload, (bytes, bytearray)):
                raise ProtocolError("not binary")
            env = decode(payload)
            fields = dataclasses.fields(env.body)  # type: ignore[arg-type]
            body = _short({f.name: getattr(env.body, f.name) for f in fields})
            print(
                f"{topic} {env.type} from={env.sender} job={env.job_id} round={env.round} {body}",
                flush=True,
            )
        except ProtocolError as exc:
            print(f"{topic} <undecodable: {exc}>", flush=True)
        seen += 1
        if count and seen >= count:
            enough.set()

    async def subscribe(conn: MqttConnection) -> None:
        await conn.subscribe(f"{topics.prefix}/#", qos=1)

    session = MqttSession(
        broker=broker,
        identifier=f"hf-watch-{time.time_ns() % 10**8}",
        on_message=on_message,
        on_connect=subscribe,
        tls=tls,
        name="watch",
    )
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(session.run())
        await enough.wait()
        task.cancel()
    return 0


def _short(body: dict[str, Any]) -> str:
    parts = []
    for key, value in body.items():
        if isinstance(value, (list, tuple)) and value and hasattr(value[0], "shape"):
            value = f"<{len(value)} arrays>"
        text = repr(value)
        parts.append(f"{key}={text if len(text) < 80 else text[:77] + '...'}")
    return " ".join(parts)
