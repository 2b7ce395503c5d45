"""Protocol benchmarks: each runs its contenders side by side, interleaved, and reports ratios.

1. **codec**: ``encode`` + ``decode`` of an envelope holding a 10 MiB ``TrainRes`` against one plain
   copy of the same 10 MiB (``bytearray(raw)``). ``ratio = copy / codec`` (target >= 0.5).
2. **noop_round**: 50 real :class:`agent.daemon.Agent` daemons, each with its own MQTT connection
   to a real Mosquitto and a trainer that answers at once; an ``MqttFleet`` runs rounds with all 50
   (quorum 50). Wall time of ``fleet.train()`` (target p50 <= 50 ms). Two contenders, rounds
   interleaved: *agents in a child process* (this script with ``--serve-agents``; the measuring
   process runs only the fleet, as a coordinator with remote devices does) and *agents
   in-process* (the agents share the fleet's event loop: coordinator and agents on one loop).
3. **fanout**: a 10 MiB model to 20 subscribers. hyperfleet: the fleet's own send path
   (``MqttFleet._send``: encode one envelope per inbox, publish QoS 1) until all 20 subscribers have
   received *and decoded* it. raw: a bare paho-mqtt client on the same event loop publishing the
   same 10 MiB bytes to 20 topics (QoS 1, no codec) until the same 20 subscribers have received
   it. ``ratio = raw / hyperfleet`` (target >= 0.7).

Run ``.venv/bin/python bench/protocol.py`` (writes ``bench/results/protocol.{json,png}``) or with
``--quick`` for a smoke run that writes nothing unless ``--out`` is given. Needs Mosquitto.

Machines here are shared and noisy: absolute times are context; the ratios, measured with the
contenders interleaved in the same run, are the result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import importlib.metadata
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt
import numpy as np
import numpy.typing as npt
import paho.mqtt.client as paho
import psutil
from paho.mqtt.enums import CallbackAPIVersion

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike

# This file is bench/protocol.py. Python puts bench/ first on sys.path and mypy names this file
# `protocol`, so either way `import protocol` would find this script, not hyperfleet's wire
# package. Hence the repository root goes first on the path, bench/ comes off it, and hyperfleet's
# modules are loaded by name: to the type checker they are `Any`; everything of the bench's own is
# typed.
_SCRIPT = Path(__file__).resolve()
_BENCH_DIR = _SCRIPT.parent
_ROOT = _BENCH_DIR.parent
sys.path[:] = [str(_ROOT)] + [p for p in sys.path if Path(p or os.curdir).resolve() != _BENCH_DIR]


def _hyperfleet_module(name: str) -> Any:
    return importlib.import_module(name)


wire = _hyperfleet_module("protocol")
daemon = _hyperfleet_module("agent.daemon")
link_mqtt = _hyperfleet_module("link.mqtt")
probe = _hyperfleet_module("agent.probe")
trainer_port = _hyperfleet_module("agent.trainer")
fleet_port = _hyperfleet_module("coordinator.fleet")
mqtt_fleet = _hyperfleet_module("coordinator.mqtt_fleet")
broker_mod = _hyperfleet_module("hyperfleet.broker")

_log = logging.getLogger("bench.protocol")
_NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
_MODEL_BYTES = 10 * 1024 * 1024  # four float32 arrays of 2.5 MiB each
_ARRAYS = 4
CODEC_TARGET = 0.5
ROUND_TARGET_MS = 50.0
FANOUT_TARGET = 0.7
NOOP_AGENTS = 50
FANOUT_AGENTS = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """How many repetitions each measurement takes."""

    codec_reps: int
    round_warmup: int
    rounds: int
    fanout_warmup: int
    fanout_reps: int

    @classmethod
    def full(cls) -> Plan:
        return cls(codec_reps=200, round_warmup=3, rounds=30, fanout_warmup=1, fanout_reps=10)

    @classmethod
    def quick(cls) -> Plan:
        return cls(codec_reps=20, round_warmup=1, rounds=8, fanout_warmup=1, fanout_reps=3)


# ------------------------------------------------------------------------------ statistics


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Median, p95, min and max of ``seconds``, in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {
        "median": round(float(np.median(ms)), 3),
        "p95": round(float(np.percentile(ms, 95)), 3),
        "min": round(float(ms.min()), 3),
        "max": round(float(ms.max()), 3),
        "n": len(ms),
    }


def model_weights(total_bytes: int = _MODEL_BYTES) -> tuple[npt.NDArray[np.float32], ...]:
    """``_ARRAYS`` float32 arrays of normal noise totalling ``total_bytes``."""
    rng = np.random.default_rng(0)
    per = total_bytes // _ARRAYS // 4
    return tuple(rng.standard_normal(per).astype(np.float32) for _ in range(_ARRAYS))


# ------------------------------------------------------------------------------ 1. codec


def bench_codec(plan: Plan) -> dict[str, Any]:
    weights = model_weights()
    raw = b"".join(w.tobytes() for w in weights)
    body = wire.TrainRes(
        weights=weights, num_examples=100, steps=10, loss=0.25, train_s=1.5, metrics={"acc": 0.9}
    )
    env = wire.new_envelope(body, sender="agent-000", job_id="bench", round=1)

    def codec() -> tuple[float, float]:
        t0 = time.perf_counter()
        frame = wire.encode(env)
        t1 = time.perf_counter()
        back = wire.decode(frame)
        t2 = time.perf_counter()
        assert len(back.body.weights) == _ARRAYS
        return t1 - t0, t2 - t1

    def copy() -> float:
        t0 = time.perf_counter()
        dup = bytearray(raw)  # one real memcpy (bytes(raw) would return raw itself)
        elapsed = time.perf_counter() - t0
        assert len(dup) == len(raw)
        return elapsed

    codec()
    copy()  # warm caches and the allocator
    encode_s: list[float] = []
    decode_s: list[float] = []
    copy_s: list[float] = []
    for rep in range(plan.codec_reps):
        gc.collect()
        if rep % 2:
            copy_s.append(copy())
            enc, dec = codec()
        else:
            enc, dec = codec()
            copy_s.append(copy())
        encode_s.append(enc)
        decode_s.append(dec)
    codec_s = [e + d for e, d in zip(encode_s, decode_s, strict=True)]
    codec_ms = summary_ms(codec_s)
    copy_ms = summary_ms(copy_s)
    ratio = copy_ms["median"] / codec_ms["median"]
    return {
        "payload_bytes": len(raw),
        "frame_bytes": len(wire.encode(env)),
        "arrays": _ARRAYS,
        "reps": plan.codec_reps,
        "codec_ms": codec_ms,
        "encode_ms": summary_ms(encode_s),
        "decode_ms": summary_ms(decode_s),
        "copy_ms": copy_ms,
        "ratio": round(ratio, 3),
        "target": CODEC_TARGET,
        "met": ratio >= CODEC_TARGET,
        "samples_ms": {
            "codec": [round(s * 1e3, 3) for s in codec_s],
            "copy": [round(s * 1e3, 3) for s in copy_s],
        },
    }


# ------------------------------------------------------------------------------ 2. no-op round


class NoopTrainer:
    """A trainer that answers at once with the weights it was given."""

    name = "noop"

    def fit(
        self, model: str, weights: list[npt.NDArray[Any]], config: Any, *, stop_at: float
    ) -> Any:
        return trainer_port.FitResult(
            weights=weights, steps=1, num_examples=1, loss=0.0, train_s=0.0
        )

    def evaluate(self, model: str, weights: list[npt.NDArray[Any]]) -> Any:
        return trainer_port.EvalResult(loss=0.0, accuracy=0.0, num_examples=1)


def _agent(agent_id: str, broker: Any, prefix: str) -> Any:
    settings = daemon.AgentSettings(
        agent_id=agent_id,
        broker=broker,
        device_class="x86-cpu",
        topics=wire.Topics(prefix),
        heartbeat_s=5.0,
    )
    caps = probe.Capabilities(
        arch=platform.machine(),
        cores=os.cpu_count() or 1,
        memory_bytes=1 << 30,
        gpus=(),
        runtimes=(),
    )
    return daemon.Agent(settings=settings, trainer=NoopTrainer(), capabilities=caps, num_examples=1)


def _noop_ids(count: int) -> list[str]:
    return [f"noop-{i:03d}" for i in range(count)]


def _noop_agents(count: int, broker: Any, prefix: str) -> list[Any]:
    return [_agent(agent_id, broker, prefix) for agent_id in _noop_ids(count)]


@contextlib.asynccontextmanager
async def running_agents(agents: Sequence[Any], *, timeout: float = 60.0) -> AsyncIterator[None]:
    """Run ``agents`` in a task group for the block, once every one is connected."""
    async with asyncio.TaskGroup() as tg:
        for agent in agents:
            tg.create_task(agent.run(), name=f"agent-{agent.settings.agent_id}")
        try:
            async with asyncio.timeout(timeout):
                for agent in agents:
                    await agent.connected.wait()
            yield
        finally:
            for agent in agents:
                agent.stop()


async def serve_agents(count: int, broker_url: str, prefix: str) -> None:
    """The agents' side of the no-op round, run as its own process (``--serve-agents``).

    Runs ``count`` no-op agents, writes ``ready <count>`` on stdout once every one is connected,
    and stops them cleanly when stdin closes: when the benchmark is done, or gone.
    """
    agents = _noop_agents(count, wire.parse_broker_url(broker_url), prefix)
    stdin = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin
    )
    async with running_agents(agents):
        sys.stdout.write(f"ready {count}\n")
        sys.stdout.flush()
        await stdin.read()


@contextlib.asynccontextmanager
async def agents_in_child(
    count: int, broker_url: str, prefix: str, *, timeout: float = 60.0
) -> AsyncIterator[psutil.Process]:
    """Run ``count`` no-op agents in a child process (this script, ``--serve-agents``)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(_SCRIPT),
        "--serve-agents",
        str(count),
        "--broker",
        broker_url,
        "--prefix",
        prefix,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        async with asyncio.timeout(timeout):
            line = await child.stdout.readline()
        if line.split() != [b"ready", str(count).encode()]:
            raise RuntimeError(f"the agent process did not start: it said {line!r}")
        yield psutil.Process(child.pid)
    finally:
        child.stdin.close()  # the child's signal to stop its agents and exit
        try:
            async with asyncio.timeout(15):
                await child.wait()
        except TimeoutError:
            child.kill()
            await child.wait()


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


@dataclass(slots=True)
class RoundContender:
    """One way of running the 50 agents, its fleet, and what its measured rounds cost."""

    key: str
    label: str
    fleet: Any
    agent_process: psutil.Process | None
    """The process the agents run in; ``None``: this one, with the fleet."""
    round_s: list[float] = field(default_factory=list)
    failures: int = 0
    cpu_s: dict[str, float] = field(
        default_factory=lambda: {"coordinator": 0.0, "agents": 0.0, "broker": 0.0}
    )

    def report(self, plan: Plan) -> dict[str, Any]:
        ms = summary_ms(self.round_s)

        def per_round(seconds: float) -> float:
            return round(seconds / plan.rounds * 1e3, 1)

        return {
            "label": self.label,
            "agents_in": "child process" if self.agent_process else "coordinator process",
            "p50_ms": ms["median"],
            "p95_ms": ms["p95"],
            "round_ms": ms,
            "failures": self.failures,
            "coordinator_process_cpu_ms_per_round": per_round(self.cpu_s["coordinator"]),
            "agent_process_cpu_ms_per_round": (
                per_round(self.cpu_s["agents"]) if self.agent_process else None
            ),
            "broker_cpu_ms_per_round": per_round(self.cpu_s["broker"]),
            "met": ms["median"] <= ROUND_TARGET_MS,
            "samples_ms": [round(s * 1e3, 3) for s in self.round_s],
        }


_ROUND_SETTLE_S = 0.05
"""Pause after each round, outside its wall time: the round's tail drains before the next one."""


async def _noop_round(
    contender: RoundContender, rnd: int, *, reference: Any, measured: bool, broker: psutil.Process
) -> None:
    """One round with all agents of ``contender``; timed, and its CPU charged, when ``measured``."""
    me = psutil.Process()
    procs = {"coordinator": me, "agents": contender.agent_process or me, "broker": broker}
    gc.collect()
    ins = wire.TrainIns(
        model="{}", weights=reference, config=wire.TrainConfig(local_steps=1), budget_s=30.0
    )
    instructions = dict.fromkeys(_noop_ids(NOOP_AGENTS), ins)
    cpu0 = {k: _cpu_s(p) for k, p in procs.items()}
    t0 = time.perf_counter()
    replies = await contender.fleet.train(
        job_id="noop",
        round=rnd,
        instructions=instructions,
        reference=reference,
        quorum=NOOP_AGENTS,
        timeout_s=30.0,
    )
    elapsed = time.perf_counter() - t0
    # The round's tail (PUBACKs of the replies, the agents' bookkeeping) drains here: charged to
    # this round's CPU, not to its wall time, and not to the next round, the other contender's.
    await asyncio.sleep(_ROUND_SETTLE_S)
    cpu1 = {k: _cpu_s(p) for k, p in procs.items()}
    if replies.failures:
        _log.warning("%s round %d: %d failures", contender.key, rnd, len(replies.failures))
    if measured:
        contender.round_s.append(elapsed)
        contender.failures += len(replies.failures)
        for k in procs:
            contender.cpu_s[k] += cpu1[k] - cpu0[k]


async def bench_noop_round(plan: Plan, broker: Any) -> dict[str, Any]:
    address = wire.parse_broker_url(broker.url)
    run = uuid.uuid4().hex[:8]
    child_prefix, local_prefix = f"bench/{run}/child/hf/v1", f"bench/{run}/local/hf/v1"
    reference = (np.zeros((10, 10), dtype=np.float32), np.zeros((10, 10), dtype=np.float32))
    mosquitto = psutil.Process(broker.process.pid)
    async with (
        agents_in_child(NOOP_AGENTS, broker.url, child_prefix) as agent_process,
        running_agents(_noop_agents(NOOP_AGENTS, address, local_prefix)),
        mqtt_fleet.open_mqtt_fleet(broker=address, topics=wire.Topics(child_prefix)) as fleet_c,
        mqtt_fleet.open_mqtt_fleet(broker=address, topics=wire.Topics(local_prefix)) as fleet_l,
    ):
        contenders = [
            RoundContender(
                key="separate_process",
                label="agents in a child process",
                fleet=fleet_c,
                agent_process=agent_process,
            ),
            RoundContender(
                key="in_process", label="agents in-process", fleet=fleet_l, agent_process=None
            ),
        ]
        for c in contenders:
            seen = await c.fleet.wait_for_agents(NOOP_AGENTS, timeout=30)
            if seen != NOOP_AGENTS:
                raise RuntimeError(f"{c.key}: only {seen} of {NOOP_AGENTS} agents announced")
        await asyncio.sleep(_ROUND_SETTLE_S)
        for rnd in range(1, plan.round_warmup + plan.rounds + 1):
            measured = rnd > plan.round_warmup
            for c in contenders if rnd % 2 else contenders[::-1]:
                await _noop_round(c, rnd, reference=reference, measured=measured, broker=mosquitto)
    reports = {c.key: c.report(plan) for c in contenders}
    return {
        "agents": NOOP_AGENTS,
        "model_bytes": sum(w.nbytes for w in reference),
        "warmup_rounds": plan.round_warmup,
        "rounds": plan.rounds,
        "settle_ms": _ROUND_SETTLE_S * 1e3,
        "target_p50_ms": ROUND_TARGET_MS,
        "contenders": reports,
        "met": reports["separate_process"]["met"],
    }


# ------------------------------------------------------------------------------ 3. fan-out


@dataclass(slots=True)
class Arrivals:
    """The copies of one fan-out that reached their subscribers, and when the last one did."""

    contender: str
    rep: int
    expected: int
    count: int = 0
    last_at: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class Board:
    """Where subscribers report arrivals; holds the one fan-out in flight."""

    current: Arrivals | None = None

    def arrive(self, contender: str, rep: int) -> None:
        now = time.perf_counter()
        cur = self.current
        if cur is None or (cur.contender, cur.rep) != (contender, rep):
            raise RuntimeError(f"stray {contender} copy of repetition {rep}")
        cur.count += 1
        if cur.count == cur.expected:
            cur.last_at = now
            cur.done.set()


async def _subscriber(
    client: aiomqtt.Client,
    *,
    inbox: str,
    raw_filter: str,
    size: int,
    board: Board,
    ready: Callable[[], None],
) -> None:
    """One receiving client: decodes hyperfleet frames on ``inbox``, takes raw bytes as they are."""
    async with client:
        await client.subscribe(inbox, qos=1)
        await client.subscribe(raw_filter, qos=1)
        ready()
        async for message in client.messages:
            payload = message.payload
            assert isinstance(payload, bytes)
            topic = message.topic.value
            if topic == inbox:
                env = wire.decode(payload)
                if sum(w.nbytes for w in env.body.weights) != size:
                    raise RuntimeError("decoded model has the wrong size")
                board.arrive("hyperfleet", int(env.round))
            else:
                if len(payload) != size:
                    raise RuntimeError("raw payload has the wrong size")
                board.arrive("raw", int(topic.rsplit("/", 1)[1]))


class RawPublisher:
    """A bare paho-mqtt client driven by the running event loop through paho's socket hooks.

    No aiomqtt and no codec: ``publish`` queues a QoS 1 PUBLISH; the loop writes it.
    """

    def __init__(self, *, host: str, port: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._connected = asyncio.Event()
        self._acked = 0
        self._acked_changed = asyncio.Event()
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv311,
        )
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        self._client = client
        self._host, self._port = host, port

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: SocketLike) -> None:
        assert isinstance(sock, socket.socket)
        sock.setsockopt(*_NODELAY)
        self._loop.add_reader(sock, client.loop_read)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: SocketLike) -> None:
        self._loop.remove_reader(sock)

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: SocketLike) -> None:
        self._loop.add_writer(sock, client.loop_write)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: SocketLike) -> None:
        self._loop.remove_writer(sock)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._connected.set()

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        self._acked += 1
        self._acked_changed.set()

    async def _housekeeping(self) -> None:
        while self._client.loop_misc() == paho.MQTT_ERR_SUCCESS:
            await asyncio.sleep(1.0)

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[RawPublisher]:
        self._client.connect(self._host, self._port, keepalive=30)
        async with asyncio.TaskGroup() as tg:
            misc = tg.create_task(self._housekeeping(), name="raw-publisher-misc")
            try:
                await asyncio.wait_for(self._connected.wait(), timeout=10)
                yield self
            finally:
                self._client.disconnect()
                misc.cancel()

    def publish(self, topic: str, payload: bytes) -> None:
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"paho publish failed: {paho.error_string(info.rc)}")

    async def wait_acked(self, count: int) -> None:
        """Wait until ``count`` publishes in all have been acknowledged."""
        while self._acked < count:
            self._acked_changed.clear()
            await self._acked_changed.wait()


async def bench_fanout(plan: Plan, broker: Any) -> dict[str, Any]:
    address = wire.parse_broker_url(broker.url)
    run = uuid.uuid4().hex[:8]
    topics = wire.Topics(f"bench/{run}/hf/v1")
    ids = [f"fan-{i:03d}" for i in range(FANOUT_AGENTS)]
    weights = model_weights()
    raw = b"".join(w.tobytes() for w in weights)

    def raw_topic(i: int, rep: int) -> str:
        return f"bench/{run}/raw/{i}/{rep}"

    board = Board()
    times: dict[str, list[float]] = {"hyperfleet": [], "raw": []}
    encode_s: list[float] = []
    subscribed = 0

    def on_ready() -> None:
        nonlocal subscribed
        subscribed += 1

    async def hyperfleet_fanout(fleet: Any, rep: int) -> float:
        ins = wire.TrainIns(
            model="{}", weights=weights, config=wire.TrainConfig(local_steps=1), budget_s=60.0
        )
        collector = fleet_port.RoundCollector(
            job_id="fanout", round=rep, expected=set(ids), reference=weights, quorum=len(ids)
        )
        board.current = arrivals = Arrivals("hyperfleet", rep, len(ids))
        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:  # what MqttFleet.train does to send a round
            for agent_id in ids:
                env = wire.new_envelope(ins, sender=fleet.identity, job_id="fanout", round=rep)
                collector.instruction_ids[agent_id] = env.msg_id
                tg.create_task(fleet._send(collector, agent_id, env))
            await arrivals.done.wait()
        if len(collector.delivered) != len(ids):
            raise RuntimeError(f"fleet sends failed: {len(collector.delivered)}/{len(ids)} acked")
        return arrivals.last_at - t0

    async def raw_fanout(publisher: RawPublisher, rep: int, sent_before: int) -> float:
        board.current = arrivals = Arrivals("raw", rep, len(ids))
        t0 = time.perf_counter()
        for i in range(len(ids)):
            publisher.publish(raw_topic(i, rep), raw)
        await arrivals.done.wait()
        elapsed = arrivals.last_at - t0
        await publisher.wait_acked(sent_before + len(ids))
        return elapsed

    async with asyncio.TaskGroup() as subscribers:
        subscriber_tasks: list[asyncio.Task[None]] = []
        for i, agent_id in enumerate(ids):
            client = link_mqtt.mqtt_client(address, identifier=f"bench-sub-{run}-{i}")
            task = subscribers.create_task(
                _subscriber(
                    client,
                    inbox=topics.inbox(agent_id),
                    raw_filter=raw_topic(i, 0).rsplit("/", 1)[0] + "/+",
                    size=len(raw),
                    board=board,
                    ready=on_ready,
                ),
                name=f"subscriber-{i}",
            )
            subscriber_tasks.append(task)
        async with asyncio.timeout(30):
            while subscribed < len(ids):
                await asyncio.sleep(0.01)
        async with (
            mqtt_fleet.open_mqtt_fleet(broker=address, topics=topics) as fleet,
            RawPublisher(host=address.host, port=address.port).connected() as publisher,
        ):
            raw_sent = 0
            for rep in range(1, plan.fanout_warmup + plan.fanout_reps + 1):
                order = ("hyperfleet", "raw") if rep % 2 else ("raw", "hyperfleet")
                for contender in order:
                    gc.collect()
                    await asyncio.sleep(0.05)  # let the broker and sockets drain
                    if contender == "hyperfleet":
                        elapsed = await hyperfleet_fanout(fleet, rep)
                    else:
                        elapsed = await raw_fanout(publisher, rep, raw_sent)
                        raw_sent += len(ids)
                    if rep > plan.fanout_warmup:
                        times[contender].append(elapsed)
        board.current = None
        # Only now: how long the fleet's encode of one 10 MiB TrainIns takes (one per agent).
        ins = wire.TrainIns(
            model="{}", weights=weights, config=wire.TrainConfig(local_steps=1), budget_s=0.0
        )
        for _ in range(10):
            env = wire.new_envelope(ins, sender="coordinator", job_id="fanout", round=1)
            t0 = time.perf_counter()
            wire.encode(env)
            encode_s.append(time.perf_counter() - t0)
        for task in subscriber_tasks:
            task.cancel()
    hf, rw = summary_ms(times["hyperfleet"]), summary_ms(times["raw"])
    ratio = rw["median"] / hf["median"]
    return {
        "agents": FANOUT_AGENTS,
        "payload_bytes": len(raw),
        "warmup_reps": plan.fanout_warmup,
        "reps": plan.fanout_reps,
        "hyperfleet_ms": hf,
        "raw_ms": rw,
        "encode_ms_per_agent": summary_ms(encode_s),
        "ratio": round(ratio, 3),
        "target": FANOUT_TARGET,
        "met": ratio >= FANOUT_TARGET,
        "samples_ms": {k: [round(s * 1e3, 3) for s in v] for k, v in times.items()},
    }


# ------------------------------------------------------------------------------ report


def machine() -> dict[str, Any]:
    try:
        version = subprocess.run(
            [broker_mod.find_mosquitto() or "mosquitto", "-h"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        version = "unknown"
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "broker": version,
        "numpy": np.__version__,
        "paho_mqtt": importlib.metadata.version("paho-mqtt"),
        "aiomqtt": importlib.metadata.version("aiomqtt"),
    }


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    codec, noop, fan = results["codec"], results["noop_round"], results["fanout"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.6))
    ax = axes[0]
    ax.boxplot(
        [codec["samples_ms"]["codec"], codec["samples_ms"]["copy"]],
        tick_labels=["encode+decode", "bytearray copy"],
        showfliers=False,
    )
    ax.set_ylabel("ms")
    ax.set_title(
        f"codec, {codec['payload_bytes'] / 2**20:.0f} MiB TrainRes\n"
        f"copy/codec = {codec['ratio']:.2f} (target >= {codec['target']})"
    )
    ax = axes[1]
    sep, inp = noop["contenders"]["separate_process"], noop["contenders"]["in_process"]
    ax.boxplot(
        [sep["samples_ms"], inp["samples_ms"]],
        tick_labels=["agents in a\nchild process", "agents\nin-process"],
        showfliers=True,
    )
    ax.axhline(noop["target_p50_ms"], color="tab:red", linestyle="--", label="target p50")
    ax.set_ylabel("ms")
    ax.legend(loc="upper right")
    ax.set_title(
        f"no-op round, {noop['agents']} agents ({noop['rounds']} rounds each)\n"
        f"p50 {sep['p50_ms']:.1f} / {inp['p50_ms']:.1f} ms, "
        f"p95 {sep['p95_ms']:.1f} / {inp['p95_ms']:.1f} ms"
    )
    ax = axes[2]
    ax.boxplot(
        [fan["samples_ms"]["hyperfleet"], fan["samples_ms"]["raw"]],
        tick_labels=["hyperfleet\n(encode+publish+decode)", "raw paho\n(bytes)"],
        showfliers=True,
    )
    ax.set_ylabel("ms")
    ax.set_title(
        f"fan-out, {fan['payload_bytes'] / 2**20:.0f} MiB to {fan['agents']} subscribers\n"
        f"raw/hyperfleet = {fan['ratio']:.2f} (target >= {fan['target']})"
    )
    for ax in axes:
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"hyperfleet protocol benchmarks — {results['date']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(results: dict[str, Any]) -> str:
    codec, noop, fan = results["codec"], results["noop_round"], results["fanout"]

    def verdict(met: bool) -> str:
        return "met" if met else "MISSED"

    rows = [
        ("measurement", "contender", "median ms", "p95 ms", "ratio / target", ""),
        (
            "codec 10 MiB",
            "encode+decode",
            f"{codec['codec_ms']['median']:.2f}",
            f"{codec['codec_ms']['p95']:.2f}",
            f"{codec['ratio']:.2f} >= {codec['target']}",
            verdict(codec["met"]),
        ),
        (
            "",
            "bytearray copy",
            f"{codec['copy_ms']['median']:.2f}",
            f"{codec['copy_ms']['p95']:.2f}",
            "",
            "",
        ),
        *(
            (
                f"no-op round x{noop['agents']}" if i == 0 else "",
                c["label"],
                f"{c['p50_ms']:.1f}",
                f"{c['p95_ms']:.1f}",
                f"p50 <= {noop['target_p50_ms']:.0f} ms",
                verdict(c["met"]),
            )
            for i, c in enumerate(noop["contenders"].values())
        ),
        (
            f"fan-out 10 MiB x{fan['agents']}",
            "hyperfleet",
            f"{fan['hyperfleet_ms']['median']:.1f}",
            f"{fan['hyperfleet_ms']['p95']:.1f}",
            f"{fan['ratio']:.2f} >= {fan['target']}",
            verdict(fan["met"]),
        ),
        ("", "raw paho", f"{fan['raw_ms']['median']:.1f}", f"{fan['raw_ms']['p95']:.1f}", "", ""),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    for c in noop["contenders"].values():
        agents = c["agent_process_cpu_ms_per_round"]
        lines.append(
            f"no-op round CPU per round, {c['label']}: "
            f"coordinator process {c['coordinator_process_cpu_ms_per_round']:.1f} ms, "
            + (f"agent process {agents:.1f} ms, " if agents is not None else "")
            + f"broker {c['broker_cpu_ms_per_round']:.1f} ms"
        )
    return "\n".join(lines)


async def bench_broker(plan: Plan) -> dict[str, Any]:
    with broker_mod.start_broker(prefer="mosquitto") as broker:
        async with asyncio.timeout(150):
            noop = await bench_noop_round(plan, broker)
        async with asyncio.timeout(150):
            fan = await bench_fanout(plan, broker)
    return {"noop_round": noop, "fanout": fan}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="few repetitions; a smoke run")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for protocol.json and protocol.png "
        "(default: bench/results for a full run; nothing for --quick)",
    )
    parser.add_argument(
        "--serve-agents",
        type=int,
        metavar="N",
        default=None,
        help="internal: run N no-op agents (for the no-op round) until stdin closes",
    )
    parser.add_argument("--broker", help="with --serve-agents: the broker URL")
    parser.add_argument("--prefix", help="with --serve-agents: the topic prefix")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.serve_agents is not None:
        if not (args.broker and args.prefix):
            parser.error("--serve-agents needs --broker and --prefix")
        asyncio.run(serve_agents(args.serve_agents, args.broker, args.prefix))
        return 0
    plan = Plan.quick() if args.quick else Plan.full()
    out: Path | None = args.out or (None if args.quick else _BENCH_DIR / "results")
    started = time.perf_counter()
    results: dict[str, Any] = {
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "command": "python bench/protocol.py" + (" --quick" if args.quick else ""),
    }
    results["codec"] = bench_codec(plan)  # first, on a quiet machine: no broker or clients yet
    results.update(asyncio.run(bench_broker(plan)))
    results["duration_s"] = round(time.perf_counter() - started, 1)
    print(table(results))
    print(f"({results['mode']} run, {results['duration_s']} s)")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "protocol.json").write_text(json.dumps(results, indent=2) + "\n")
        chart(results, out / "protocol.png")
        print(f"wrote {out / 'protocol.json'} and {out / 'protocol.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
