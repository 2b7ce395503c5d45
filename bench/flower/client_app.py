"""The ClientApp: one fleet member, emulated exactly as hyperfleet's agents are.

Each SuperNode is started with ``--node-config partition-id=<i>``: fleet member ``i`` in
``load_fleet(fleet).expand()`` order. It trains on hyperfleet's shard for that member (the same
seeded permutation as ``hyperfleet.fleetrun.assign_shards``) with hyperfleet's NumPy trainer, and
plays the device of its class the way ``agent.daemon.Agent`` does under ``--emulate``: wait out
the download, train for real, wait until ``examples / train_rate`` has passed, maybe drop out,
wait out the upload.

Flower starts a fresh ``flwr-clientapp`` process for every instruction, so nothing lives between
rounds. The emulator's availability schedule is therefore rebuilt in every process from the same
seed and a clock shared through the run config (``clock-origin``, UNIX seconds): every process
answers ``online()`` alike at the same moment. Drop-out draws are seeded per member and round.

A member that is offline when the instruction arrives, or that drops out mid-round, stays silent
past the round's timeout, as a vanished device would: Flower's ``send_and_receive`` then waits the
whole ``timeout`` for it. It finally answers with an error reply that nobody reads (the round it
belonged to is over); until then its SuperNode takes no other instruction.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from agent.app import read_shard
from agent.device_class import Emulation, load_device_class, load_fleet
from agent.emulation import DeviceEmulator
from agent.numpy_trainer import NumpyTrainer
from protocol import TrainConfig

__all__ = ["FleetMember", "app", "fleet_member", "member_online"]

# The Grid stops pulling replies once ``timeout`` has passed since it pushed the round's messages;
# a silent member wakes just after that, so its late error reply is never read and its SuperNode
# is free again for the next round.
_PAST_TIMEOUT_S = 0.5
_DROPPED = 1001
_NO_STEPS = 1002
_DIVERGED = 1003

_log = logging.getLogger("flwr").getChild(__name__)

app = ClientApp()


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetMember:
    agent_id: str
    device_class: str
    shard: Path


def fleet_member(*, fleet: str, shards_dir: Path, seed: int, index: int) -> FleetMember:
    """Member ``index`` of the fleet and its shard: shard ``perm[index]`` of the sorted files."""
    members = load_fleet(fleet).expand()
    shards = sorted(shards_dir.glob("agent-*.npz"))
    if len(shards) != len(members):
        raise ValueError(
            f"fleet {fleet} has {len(members)} agents but {shards_dir} holds {len(shards)} shards"
        )
    perm = np.random.default_rng(seed).permutation(len(members))
    agent_id, device_class = members[index]
    return FleetMember(agent_id=agent_id, device_class=device_class, shard=shards[int(perm[index])])


def agent_seed(job_seed: int, server_round: int, agent_id: str) -> int:
    """hyperfleet's per-agent, per-round seed for local batch order (coordinator.planner)."""
    return random.Random(f"{job_seed}:{server_round}:{agent_id}").getrandbits(31)


class _SharedClock:
    """Seconds since the run's clock origin; reads 0 until started, so that every process builds
    the same availability schedule however late it starts."""

    def __init__(self, origin: float) -> None:
        self._origin = origin
        self.running = False

    def __call__(self) -> float:
        return time.time() - self._origin if self.running else 0.0


def _emulator(
    spec: Emulation, *, seed: int, agent_id: str, scale: float, origin: float
) -> DeviceEmulator:
    clock = _SharedClock(origin)
    emulator = DeviceEmulator(
        spec,
        seed=random.Random(f"{seed}:{agent_id}").getrandbits(32),  # as hyperfleet.fleetrun
        time_scale=scale,
        clock=clock,
    )
    clock.running = True
    return emulator


def _silent_until_timeout(msg: Message, round_timeout_s: float, reason: str) -> Message:
    _log.info(
        "%s: picked up after %.2fs, silent until the round's timeout",
        reason,
        time.time() - msg.metadata.created_at,
    )
    wake_at = msg.metadata.created_at + round_timeout_s + _PAST_TIMEOUT_S
    time.sleep(max(0.0, wake_at - time.time()))
    return Message(Error(code=_DROPPED, reason=reason), reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Which fleet member this SuperNode plays: the ServerApp asks once, before round 1, so that
    it samples only members online at the time (:func:`member_online`), as hyperfleet's registry
    offers only live agents."""
    index = int(context.node_config["partition-id"])
    return Message(RecordDict({"member": MetricRecord({"partition-id": index})}), reply_to=msg)


def member_online(run: Any, index: int) -> bool:
    """Whether fleet member ``index`` is online now, by the emulator its ClientApp would build
    (same seed, same shared clock): what a SuperLink would know from a device's connection."""
    member = fleet_member(
        fleet=str(run["fleet"]),
        shards_dir=Path(str(run["shards-dir"])),
        seed=int(run["seed"]),
        index=index,
    )
    emulator = _emulator(
        load_device_class(member.device_class).emulation,
        seed=int(run["seed"]),
        agent_id=member.agent_id,
        scale=float(run["time-scale"]),
        origin=float(run["clock-origin"]),
    )
    return emulator.online()


@app.train()
def train(msg: Message, context: Context) -> Message:
    started = time.monotonic()
    # Flower's cost of getting an instruction into a ClientApp: the SuperNode's poll (every 3 s),
    # then a fresh flwr-clientapp process that imports Flower and this app.
    pickup_s = time.time() - msg.metadata.created_at
    run = context.run_config
    seed = int(run["seed"])
    server_round = int(msg.content["config"]["server-round"])
    round_timeout_s = float(run["round-timeout-s"])
    member = fleet_member(
        fleet=str(run["fleet"]),
        shards_dir=Path(str(run["shards-dir"])),
        seed=seed,
        index=int(context.node_config["partition-id"]),
    )
    spec = load_device_class(member.device_class).emulation
    emulator = _emulator(
        spec,
        seed=seed,
        agent_id=member.agent_id,
        scale=float(run["time-scale"]),
        origin=float(run["clock-origin"]),
    )
    if not emulator.online():
        return _silent_until_timeout(
            msg, round_timeout_s, f"{member.agent_id} round {server_round} is offline"
        )

    arrays = msg.content["arrays"]
    assert isinstance(arrays, ArrayRecord)
    weights = arrays.to_numpy_ndarrays()
    # The emulated payload per transfer (the fleet's model_wire_bytes) when set, else the real one.
    wire = int(run.get("model-wire-bytes", 0))
    download_s = emulator.transfer_s(wire or sum(w.nbytes for w in weights), spec.downlink_mbps)
    time.sleep(download_s)

    config = msg.content["config"]
    train_config = TrainConfig(
        epochs=int(config["local-epochs"]),
        batch_size=int(config["batch-size"]),
        learning_rate=float(config["learning-rate"]),
        seed=agent_seed(seed, server_round, member.agent_id),
    )
    trainer = NumpyTrainer(read_shard(member.shard))
    model_json = Path(str(run["model-json"])).read_text()
    compute_started = time.monotonic()
    fit = trainer.fit(model_json, weights, train_config, stop_at=math.inf)
    real_s = time.monotonic() - compute_started
    emulated_s = emulator.compute_s(fit.num_examples)

    fate = random.Random(f"{seed}:{member.agent_id}:{server_round}:drop-out")
    if fate.random() < spec.failure_rate:
        time.sleep(max(0.0, emulated_s - real_s) * fate.random())
        return _silent_until_timeout(
            msg, round_timeout_s, f"{member.agent_id} round {server_round} dropped out"
        )
    time.sleep(max(0.0, emulated_s - real_s))
    compute_s = time.monotonic() - compute_started

    if fit.steps == 0:
        return Message(Error(code=_NO_STEPS, reason="no examples to train on"), reply_to=msg)
    if not all(np.isfinite(w).all() for w in fit.weights) or not np.isfinite(fit.loss):
        return Message(Error(code=_DIVERGED, reason=f"diverged (loss {fit.loss})"), reply_to=msg)
    upload_s = emulator.transfer_s(wire or sum(w.nbytes for w in fit.weights), spec.uplink_mbps)
    time.sleep(upload_s)

    metrics = MetricRecord(
        {
            "num-examples": fit.num_examples,
            "device-s": download_s + compute_s + upload_s,
            "instruction-s": time.monotonic() - started,
            "pickup-s": pickup_s,
            "compute-s": compute_s,
            "real-compute-s": real_s,
            "emulated-compute-s": emulated_s,
            "train-loss": fit.loss,
        }
    )
    _log.info(
        "%s round %d: picked up after %.2fs; %d examples, device %.2fs (compute %.2fs, real %.3fs)",
        member.agent_id,
        server_round,
        pickup_s,
        fit.num_examples,
        download_s + compute_s + upload_s,
        compute_s,
        real_s,
    )
    reply = RecordDict({"arrays": ArrayRecord(list(fit.weights)), "metrics": metrics})
    return Message(reply, reply_to=msg)
