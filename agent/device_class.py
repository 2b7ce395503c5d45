"""Device classes and fleets, read from ``firmware_configs/``.

A *device class* (``firmware_configs/<name>.toml``) says how an agent on that kind of device should
work: preferred runtime, threads, memory limit, batch size, step cap. Its ``[emulation]`` table says
what such a device *is*, in absolute terms (training speed, link, availability), so that
``hyperfleet agent --emulate`` can make one host behave like many different devices.

A *fleet* (``firmware_configs/fleets/<name>.toml``) is a list of ``[[agents]]`` tables, each a
device class and a count; :meth:`FleetSpec.expand` turns it into deterministic agent ids.

These files are an untrusted edge: they are validated with pydantic, unknown keys are rejected,
and every problem is raised as :class:`~agent.errors.ConfigError` naming the file and the key.
"""

from __future__ import annotations

import importlib.resources
import os
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import ConfigError
from agent.speed import SpeedSpec
from protocol import ProtocolError, check_id

__all__ = [
    "DEFAULT_CONFIG_DIR",
    "DeviceClass",
    "Emulation",
    "FleetEmulation",
    "FleetEntry",
    "FleetSpec",
    "list_device_classes",
    "list_fleets",
    "load_device_class",
    "load_fleet",
]


def _shipped_config_dir() -> Path:
    """Where the shipped ``firmware_configs`` are: the ``firmware_configs`` package (its TOML
    files are package data, so a wheel carries them), else the source tree next to ``agent``."""
    try:
        root = importlib.resources.files("firmware_configs")
    except ModuleNotFoundError:
        root = None
    if isinstance(root, Path):  # a regular package on the file system (not a zip, namespace)
        return root.resolve()
    return Path(__file__).resolve().parent.parent / "firmware_configs"


DEFAULT_CONFIG_DIR = _shipped_config_dir()
"""The shipped ``firmware_configs`` directory (installed or in the checkout), used when no
``search_dir`` is given."""

_FLEETS_SUBDIR = "fleets"
_SUFFIX = ".toml"
# Agent ids are at most 64 characters (see protocol); "<class>-<index>" must fit.
_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
_NAME_MAX = 48

_M = TypeVar("_M", bound=BaseModel)


class Emulation(BaseModel):
    """What a device of this class *is*, in absolute terms, for ``hyperfleet agent --emulate``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    train_rate: float = Field(gt=0, description="examples/s for the job's model on this device")
    uplink_mbps: float = Field(gt=0, description="upload bandwidth, Mbit/s")
    downlink_mbps: float = Field(gt=0, description="download bandwidth, Mbit/s")
    rtt_ms: float = Field(ge=0, description="round-trip time to the broker, ms")
    availability: float = Field(gt=0, le=1, description="share of time online")
    mean_session_s: float = Field(default=600.0, gt=0, description="mean online session, s")
    failure_rate: float = Field(ge=0, lt=1, description="chance of dropping out mid-round")
    rate_sigma: float = Field(
        default=0.2, ge=0, le=2, description="std. dev. of the log of each round's train rate"
    )
    load_factor: float = Field(
        default=2.0, ge=1, description="train rate divisor during a background-load episode"
    )
    load_on_mean_s: float = Field(
        default=120.0, gt=0, description="mean background-load episode, device-seconds"
    )
    load_off_mean_s: float = Field(
        default=600.0, gt=0, description="mean time between load episodes, device-seconds"
    )

    def announced(
        self, *, time_scale: float = 1.0, wire_bytes: int | None = None
    ) -> dict[str, float]:
        """What an agent of this class announces in its ``hello``: the class's *nominal* figures,
        in device units (examples per device-second, Mbit/s, ms, device-seconds), with the time
        scale it runs at and, when emulated, the model size on its wire. Never the per-round
        realised rate, the variance or the load episodes: the coordinator learns those from
        replies."""
        figures = {
            key: float(getattr(self, key))
            for key in (
                "train_rate",
                "uplink_mbps",
                "downlink_mbps",
                "rtt_ms",
                "availability",
                "mean_session_s",
                "failure_rate",
            )
        }
        figures["time_scale"] = float(time_scale)
        if wire_bytes is not None:
            figures["model_wire_bytes"] = float(wire_bytes)
        return figures

    def speed(self) -> SpeedSpec:
        """The parameters of this device's per-round rate process (:mod:`agent.speed`)."""
        return SpeedSpec(
            rate=self.train_rate,
            sigma=self.rate_sigma,
            load_factor=self.load_factor,
            load_on_mean_s=self.load_on_mean_s,
            load_off_mean_s=self.load_off_mean_s,
        )


class FleetEmulation(BaseModel):
    """A fleet's ``[emulation]`` table: what holds for every agent of the fleet. Each speed knob,
    when given, replaces the device classes' own; ``model_wire_bytes`` is the payload size every
    emulated transfer pretends the model has (unset: the real model's size)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_wire_bytes: int | None = Field(
        default=None, gt=0, description="emulated size of a model download/upload, bytes"
    )
    rate_sigma: float | None = Field(default=None, ge=0, le=2)
    load_factor: float | None = Field(default=None, ge=1)
    load_on_mean_s: float | None = Field(default=None, gt=0)
    load_off_mean_s: float | None = Field(default=None, gt=0)

    def apply(self, spec: Emulation) -> Emulation:
        """``spec`` with this fleet's speed knobs in place of the class's."""
        changes = {
            key: value
            for key, value in self.model_dump(exclude={"model_wire_bytes"}).items()
            if value is not None
        }
        return spec.model_copy(update=changes) if changes else spec


class DeviceClass(BaseModel):
    """One kind of device: how an agent on it trains, and what it is when emulated."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(pattern=_NAME_PATTERN, max_length=_NAME_MAX)
    description: str
    arch: Literal["x86_64", "aarch64"]
    runtime: Literal["keras", "litert", "numpy"]
    threads: int = Field(ge=1, description="threads for local compute")
    memory_limit_mb: int = Field(
        gt=0, description="memory the agent may use, MiB; caps the memory its hello announces"
    )
    max_local_steps: int = Field(
        default=500, ge=1, description="cap on local steps per instruction, whatever is asked"
    )
    emulation: Emulation


class FleetEntry(BaseModel):
    """``count`` agents of one device class."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    device_class: str = Field(pattern=_NAME_PATTERN, max_length=_NAME_MAX)
    count: int = Field(ge=1, le=100_000)


class FleetSpec(BaseModel):
    """A named mix of device classes. In TOML the entries are ``[[agents]]`` tables."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, allow_inf_nan=False
    )

    name: str = Field(pattern=_NAME_PATTERN, max_length=_NAME_MAX)
    description: str = ""
    seed: int = 0
    emulation: FleetEmulation = Field(default_factory=FleetEmulation)
    # ``validation_alias`` (not ``alias``) keeps ``FleetSpec(entries=...)`` typed for mypy.
    entries: tuple[FleetEntry, ...] = Field(
        validation_alias="agents", serialization_alias="agents", min_length=1
    )

    @property
    def total(self) -> int:
        """Number of agents in the fleet."""
        return sum(entry.count for entry in self.entries)

    def expand(self) -> list[tuple[str, str]]:
        """Return ``(agent_id, device_class)`` for every agent, in file order.

        Ids are ``<device_class>-<index>``, numbered from 0 per class (continuing across entries
        of the same class) and zero-padded to at least two digits, e.g. ``x86-gpu-server-00``.
        The result depends only on the file, so every process computes the same ids.
        """
        per_class: Counter[str] = Counter()
        for entry in self.entries:
            per_class[entry.device_class] += entry.count
        next_index: Counter[str] = Counter()
        agents: list[tuple[str, str]] = []
        for entry in self.entries:
            cls = entry.device_class
            width = max(2, len(str(per_class[cls] - 1)))
            for _ in range(entry.count):
                agents.append((f"{cls}-{next_index[cls]:0{width}d}", cls))
                next_index[cls] += 1
        return agents


def list_device_classes(search_dir: Path | None = None) -> list[str]:
    """Names of the device classes in ``search_dir`` (default: the shipped ones), sorted."""
    return _list_names(search_dir or DEFAULT_CONFIG_DIR)


def list_fleets(search_dir: Path | None = None) -> list[str]:
    """Names of the fleets in ``<search_dir>/fleets`` (default: the shipped ones), sorted."""
    return _list_names((search_dir or DEFAULT_CONFIG_DIR) / _FLEETS_SUBDIR)


def load_device_class(name_or_path: str | Path, *, search_dir: Path | None = None) -> DeviceClass:
    """Load a device class by bare name (``"raspberry-pi-5"``) or by path to a TOML file.

    A bare name resolves to ``<search_dir>/<name>.toml``; ``search_dir`` defaults to the
    shipped ``firmware_configs``. The class's ``name`` must match its file name.

    Raises:
        ConfigError: the file is missing, not TOML, or does not describe a valid device class.
    """
    directory = search_dir or DEFAULT_CONFIG_DIR
    path = _resolve(name_or_path, directory, what="device class")
    device_class = _validate(DeviceClass, _read_toml(path), path, what="device class")
    if device_class.name != path.stem:
        raise ConfigError(
            f"{path}: key 'name': the device class is named {device_class.name!r} but its file"
            f" is {path.name!r}; they must match"
        )
    return device_class


def load_fleet(name_or_path: str | Path, *, search_dir: Path | None = None) -> FleetSpec:
    """Load a fleet by bare name (``"mixed-50"``) or by path, checking every device class exists.

    A bare name resolves to ``<search_dir>/fleets/<name>.toml``; device classes are looked up in
    ``search_dir`` (default: the shipped ``firmware_configs``) and must load cleanly.

    Raises:
        ConfigError: the fleet file is missing or invalid, or names an unknown or broken class.
    """
    directory = search_dir or DEFAULT_CONFIG_DIR
    path = _resolve(name_or_path, directory / _FLEETS_SUBDIR, what="fleet")
    fleet = _validate(FleetSpec, _read_toml(path), path, what="fleet")
    checked: set[str] = set()
    for index, entry in enumerate(fleet.entries):
        if entry.device_class in checked:
            continue
        try:
            load_device_class(entry.device_class, search_dir=directory)
        except ConfigError as exc:
            raise ConfigError(f"{path}: key 'agents[{index}].device_class': {exc}") from exc
        checked.add(entry.device_class)
    for agent_id, _ in fleet.expand():  # each id is a topic level (protocol.check_id)
        try:
            check_id(agent_id, "agent id")
        except ProtocolError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    return fleet


def _list_names(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob(f"*{_SUFFIX}") if p.is_file())


def _is_path(name_or_path: str | Path) -> bool:
    if isinstance(name_or_path, Path):
        return True
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return name_or_path.endswith(_SUFFIX) or any(s in name_or_path for s in separators)


def _resolve(name_or_path: str | Path, directory: Path, *, what: str) -> Path:
    if _is_path(name_or_path):
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"{what} file not found: {path}")
        return path
    name = str(name_or_path)
    path = directory / f"{name}{_SUFFIX}"
    if path.is_file():
        return path
    known = _list_names(directory)
    listing = ", ".join(known) if known else "(none)"
    raise ConfigError(f"unknown {what} {name!r} in {directory}; known: {listing}")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"file not found: {path}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def _validate(model: type[_M], data: dict[str, Any], path: Path, *, what: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors(include_url=False))
        raise ConfigError(f"{path}: invalid {what}: {problems}") from exc


def _describe(error: Any) -> str:
    key = _key(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown key {key!r}"
    if kind == "missing":
        return f"missing key {key!r}"
    return f"key {key!r}: {error['msg']} (got {error['input']!r})"


def _key(loc: tuple[int | str, ...]) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key += f".{part}" if key else part
    return key or "(top level)"
