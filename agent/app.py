"""Assembling an agent from its settings: shard, trainer, capabilities."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Literal

import numpy as np

from link import ShardError
from link import read_shard as read_shard_file
from protocol import Shard

from .daemon import Agent, AgentSettings, Emulator
from .device_class import DeviceClass
from .errors import ConfigError
from .numpy_trainer import NumpyTrainer
from .probe import Capabilities, probe_capabilities
from .trainer import Trainer

__all__ = ["RuntimeChoice", "announced_runtimes", "choose_trainer", "create_agent", "read_shard"]

_log = logging.getLogger(__name__)
RuntimeChoice = Literal["auto", "keras", "numpy"]


def read_shard(path: Path) -> Shard:
    """Read a shard file written by the pipelines; :class:`ConfigError` when it cannot be used."""
    try:
        return read_shard_file(path)
    except ShardError as exc:
        raise ConfigError(str(exc)) from exc


def choose_trainer(
    runtime: RuntimeChoice, device: DeviceClass, caps: Capabilities, shard: Shard
) -> Trainer:
    """Keras where asked for (or preferred by the device class) and installed, else NumPy."""
    wanted = device.runtime if runtime == "auto" else runtime
    if wanted == "keras":
        if "keras" not in caps.runtimes:
            if runtime == "keras":
                raise ConfigError(
                    "--runtime keras needs TensorFlow and Keras: install the 'train' extra"
                )
            _log.info("Keras is not installed; training with NumPy")
        else:
            from .keras_trainer import KerasTrainer

            return KerasTrainer(shard, threads=device.threads)
    return NumpyTrainer(shard)


def announced_runtimes(caps: Capabilities, trainer: Trainer) -> Capabilities:
    """``caps`` with the runtimes the agent will *train* with: Keras only when its trainer is
    Keras. An agent on the NumPy trainer (by choice or by device class) says so in its hello,
    even where TensorFlow happens to be installed, so the coordinator never sends it a model
    only Keras can train (a CNN)."""
    runtimes = tuple(r for r in caps.runtimes if r != "keras" or trainer.name == "keras")
    return dataclasses.replace(caps, runtimes=runtimes)


def create_agent(
    settings: AgentSettings,
    *,
    device: DeviceClass,
    shard: Shard,
    runtime: RuntimeChoice = "auto",
    emulator: Emulator | None = None,
    software: str = "",
    share_label_counts: bool = True,
) -> Agent:
    """An agent for ``shard``. With ``share_label_counts`` its hello tells the coordinator how
    many examples of each label it holds (never the examples), so no label is starved."""
    caps = probe_capabilities(device_class=device)
    # What the device class lets the agent use: its memory limit caps what the hello announces.
    caps = dataclasses.replace(
        caps, memory_bytes=min(caps.memory_bytes, device.memory_limit_mb * 1024 * 1024)
    )
    labels = (
        tuple(int(c) for c in np.bincount(shard.y)) if share_label_counts and len(shard) else ()
    )
    trainer = choose_trainer(runtime, device, caps, shard)
    return Agent(
        settings=settings,
        trainer=trainer,
        capabilities=announced_runtimes(caps, trainer),
        num_examples=len(shard),
        label_counts=labels,
        software=software,
        emulator=emulator,
        max_local_steps=device.max_local_steps,
    )
