"""``hyperfleet agents``: every agent of a fleet file in one process, each with its own MQTT
connection and the same code path as a lone ``hyperfleet agent`` — the way to run fifty emulated
devices on one machine without fifty TensorFlow processes.

Shards are handed to agents by a seeded permutation, so which labels sit on slow devices depends
on the seed, not on the file order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.app import RuntimeChoice, create_agent, read_shard
from agent.daemon import Agent, AgentSettings
from agent.device_class import DeviceClass, Emulation, FleetSpec, load_device_class
from agent.emulation import DeviceEmulator
from link.mqtt import TlsFiles
from protocol import BrokerAddress, Topics

from .errors import UsageError
from .flags import require_absolute

__all__ = ["FleetRun", "assign_shards", "emulated_profile", "run_fleet"]

_log = logging.getLogger("hyperfleet.fleet")


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetRun:
    fleet: FleetSpec
    shards_dir: Path
    broker: BrokerAddress
    topics: Topics
    emulate: bool = True
    time_scale: float = 1.0
    runtime: RuntimeChoice = "numpy"
    seed: int = 0
    heartbeat_s: float = 5.0
    report: Path | None = None
    model_wire_bytes: int | None = None
    """Emulated model size on every link, bytes; ``None``: the fleet file's, else the real size."""
    tls: TlsFiles | None = None

    def __post_init__(self) -> None:
        require_absolute("shards_dir", self.shards_dir)
        require_absolute("report", self.report)


def assign_shards(fleet: FleetSpec, shards_dir: Path, seed: int) -> list[tuple[str, str, Path]]:
    """``(agent_id, device_class, shard)`` for every agent; shard ``perm[i]`` goes to agent ``i``."""
    members = fleet.expand()
    shards = sorted(shards_dir.glob("agent-*.npz"))
    if len(shards) != len(members):
        raise UsageError(
            f"fleet {fleet.name} has {len(members)} agents but {shards_dir} holds {len(shards)} shards"
        )
    perm = np.random.default_rng(seed).permutation(len(members))
    return [(aid, cls, shards[int(perm[i])]) for i, (aid, cls) in enumerate(members)]


def emulated_profile(
    spec: Emulation, time_scale: float, wire_bytes: int | None = None
) -> dict[str, float]:
    """What an emulated device announces: its class's nominal figures (device units), its time
    scale and its emulated model size (see :meth:`agent.device_class.Emulation.announced`)."""
    return spec.announced(time_scale=time_scale, wire_bytes=wire_bytes)


def build_agents(run: FleetRun) -> list[tuple[Agent, DeviceEmulator | None]]:
    classes: dict[str, DeviceClass] = {}
    out: list[tuple[Agent, DeviceEmulator | None]] = []
    wire_bytes = (
        run.model_wire_bytes
        if run.model_wire_bytes is not None
        else run.fleet.emulation.model_wire_bytes
    )
    for agent_id, cls, shard_path in assign_shards(run.fleet, run.shards_dir, run.seed):
        device = classes.setdefault(cls, load_device_class(cls))
        spec = run.fleet.emulation.apply(device.emulation)
        emulator = (
            DeviceEmulator(
                spec,
                seed=random.Random(f"{run.seed}:{agent_id}").getrandbits(32),
                time_scale=run.time_scale,
                wire_bytes=wire_bytes,
            )
            if run.emulate
            else None
        )
        settings = AgentSettings(
            agent_id=agent_id,
            broker=run.broker,
            device_class=cls,
            topics=run.topics,
            heartbeat_s=run.heartbeat_s,
            tls=run.tls,
            profile=emulated_profile(spec, run.time_scale, wire_bytes)
            if run.emulate
            else spec.announced(),
        )
        agent = create_agent(
            settings,
            device=device,
            shard=read_shard(shard_path),
            runtime=run.runtime,
            emulator=emulator,
        )
        out.append((agent, emulator))
    return out


def fidelity_report(agents: list[tuple[Agent, DeviceEmulator | None]]) -> dict[str, Any]:
    per_agent = {}
    total = overruns = 0
    for agent, emu in agents:
        if emu is None:
            continue
        total += emu.instructions
        overruns += emu.overruns
        per_agent[agent.settings.agent_id] = {
            "device_class": agent.settings.device_class,
            "instructions": emu.instructions,
            "overruns": emu.overruns,
            "dropouts": emu.dropouts,
            "offline_spells": emu.offline_spells,
            "load_episodes": emu.load_episodes,
            "connections": agent.connections,
            "dropped_messages": dict(agent.dropped),
        }
    return {
        "replies_total": total,
        "overruns": overruns,
        "overrun_share": overruns / total if total else 0.0,
        "agents": per_agent,
    }


async def run_fleet(run: FleetRun) -> int:
    agents = build_agents(run)
    _log.info("fleet %s: %d agents connecting to %s", run.fleet.name, len(agents), run.broker.url)
    try:
        async with asyncio.TaskGroup() as tg:
            for agent, _ in agents:
                tg.create_task(agent.run(), name=agent.settings.agent_id)
    finally:
        if run.report is not None:
            run.report.parent.mkdir(parents=True, exist_ok=True)
            run.report.write_text(json.dumps(fidelity_report(agents), indent=2, sort_keys=True))
    return 0
