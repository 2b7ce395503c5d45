"""ROMA's configuration: one :class:`ServeConfig` per server process, one :class:`ModelConfig`
per model (``{repository}/{model}/config.toml``). Both are pydantic models at the untrusted edge:
unknown keys and out-of-range numbers are refused with the key's name.

A model's ``config.toml``::

    sla_ms = 20.0            # the response-time target ...
    percentile = 95.0        # ... for this percentile of requests ...
    window_s = 5.0           # ... over this sliding window (seconds)
    runtimes = ["litert", "keras"]   # allowed, in order of preference
    max_batch = 32
    max_queue = 256          # requests waiting before a late one is shed (429)
    threads = 1              # compute threads per worker process
    initial_cores = 1.0
    min_cores = 0.1
    max_cores = 2.0
    alpha = 0.1              # dispatch and batch sizing aim at (1 - alpha) x SLA
    input_name = "input"
    output_name = "output"

    [normalization]          # shipped with the model: served inputs become (x - offset) * scale
    offset = 0.0             # a number, or one per feature
    scale = 1.0
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from protocol import Topics

from .errors import ServeConfigError
from .runtime import RuntimeName

__all__ = [
    "ControllerConfig",
    "ModelConfig",
    "Normalization",
    "ServeConfig",
    "load_model_config",
    "load_serve_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Normalization(_Strict):
    offset: float | list[float] = 0.0
    scale: float | list[float] = 1.0

    @property
    def identity(self) -> bool:
        return self.offset == 0.0 and self.scale == 1.0

    def apply(self, x: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """``(x - offset) * scale`` per feature (the last axis); ``ValueError`` when a per-feature
        list does not match the features."""
        offset = np.asarray(self.offset, dtype=np.float32)
        scale = np.asarray(self.scale, dtype=np.float32)
        for name, v in (("offset", offset), ("scale", scale)):
            if v.ndim and v.shape[0] != x.shape[-1]:
                raise ValueError(
                    f"normalization {name} has {v.shape[0]} values, the input {x.shape[-1]} features"
                )
        return ((x.astype(np.float32) - offset) * scale).astype(np.float32)

    @model_validator(mode="after")
    def _finite(self) -> Normalization:
        for name in ("offset", "scale"):
            values = getattr(self, name)
            values = values if isinstance(values, list) else [values]
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"normalization {name} must be finite")
        return self


class ModelConfig(_Strict):
    sla_ms: float = Field(default=20.0, gt=0, le=600_000)
    percentile: float = Field(default=95.0, gt=0, le=100)
    window_s: float = Field(default=5.0, gt=0, le=3600)
    runtimes: list[RuntimeName] = Field(default=["litert", "keras"], min_length=1)
    max_batch: int = Field(default=32, ge=1, le=4096)
    max_queue: int = Field(default=256, ge=1, le=1_000_000)
    threads: int = Field(default=1, ge=1, le=256)
    initial_cores: float = Field(default=1.0, gt=0, le=1024)
    min_cores: float = Field(default=0.1, gt=0, le=1024)
    max_cores: float = Field(default=2.0, gt=0, le=1024)
    alpha: float = Field(default=0.1, ge=0, lt=1)
    input_name: str = Field(default="input", min_length=1)
    output_name: str = Field(default="output", min_length=1)
    normalization: Normalization = Field(default_factory=Normalization)

    @model_validator(mode="after")
    def _cores(self) -> ModelConfig:
        if not self.min_cores <= self.initial_cores <= self.max_cores:
            raise ValueError(
                f"need min_cores <= initial_cores <= max_cores, got {self.min_cores}, "
                f"{self.initial_cores}, {self.max_cores}"
            )
        return self

    @property
    def sla_s(self) -> float:
        return self.sla_ms / 1000.0


class ControllerConfig(_Strict):
    mode: Literal["pi", "static"] = "pi"
    """``static``: every model keeps its ``initial_cores`` (a baseline, no control)."""
    period_s: float = Field(default=1.0, ge=0.05, le=60)
    kp: float = Field(default=0.3, ge=0)
    ki: float = Field(default=0.6, ge=0)
    setpoint_ratio: float = Field(default=0.8, gt=0, le=1)
    quantum: float = Field(default=0.1, gt=0, le=1)
    feedforward: bool = True
    """Floor each model's cores at its measured demand (arrival rate × CPU time per row, plus
    the backlog) over ``utilisation``; off: the PI loop alone."""
    utilisation: float = Field(default=0.7, gt=0, le=1)
    window_s: float = Field(default=2.0, gt=0, le=3600)
    """The controller reads the SLA percentile over the last ``window_s`` seconds (at most the
    model's SLA window): a spike leaves its view sooner than the SLA window's."""


class ServeConfig(_Strict):
    """The server's settings (``hyperfleet serve --config FILE`` and flags)."""

    repository: Path
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    broker: str | None = Field(default=None, repr=False)  # may hold a password
    """``mqtt[s]://[user:password@]host:port``: follow ``models/+/latest`` and hot-reload what
    is published."""
    tls_ca: Path | None = None
    """CA bundle (PEM) an ``mqtts://`` broker's certificate must chain to (default: the
    system's)."""
    tls_cert: Path | None = None
    """Client certificate (PEM) for brokers that require one, with :attr:`tls_key`."""
    tls_key: Path | None = None
    verify_key: Path | None = None
    """Ed25519 public key (PEM): a published model is installed only when every artifact of its
    ``ModelRef`` carries a signature of this key (:mod:`link.signing`); ``None``: unchecked."""
    prefix: Annotated[str, AfterValidator(lambda p: Topics(p).prefix)] = "hf/v1"
    """The topic prefix the coordinator publishes under (checked as :class:`protocol.Topics`
    checks it: no ``+``/``#``, control characters or NUL)."""
    stats_period_s: float = Field(default=5.0, gt=0, le=3600)
    """With a broker: publish each model's serving stats (retained ``serving/{model}/stats``,
    for ``hyperfleet monitor``) this often."""
    token: str | None = Field(default=None, repr=False)
    """Required (``Authorization: Bearer …``, compared in constant time) by the repository
    endpoints (index, load, unload); without one, load and unload are refused and the index is
    open. Inference and health stay open."""
    cores: float | None = Field(default=None, gt=0)
    """Cores the models may share on this node (default: the CPUs this process may use)."""
    max_body_bytes: int = Field(default=16 << 20, ge=1024, le=1 << 31)
    quota: bool = True
    """Hold each model's CPU use to its cores; ``false``: workers run unthrottled (a
    baseline)."""
    cgroup: Literal["auto", "off"] = "off"
    """``auto``: the kernel holds each model to its cores (a cgroup per model version, CFS
    quota; :mod:`cloud.roma.cgroup`) where this process may write a cgroup with the cpu
    controller, else the user-space quota (:mod:`cloud.roma.quota`); ``off`` (the default
    until the benchmark has measured the kernel's quota): user space always."""
    fake_gpu: bool = False
    """Treat one extra CPU worker per model as the node's GPU (tests and machines without one)."""
    default_model: ModelConfig = Field(default_factory=ModelConfig)
    """For models whose directory has no ``config.toml``."""
    controller: ControllerConfig = Field(default_factory=ControllerConfig)


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()
    )


def load_model_config(path: Path, *, default: ModelConfig) -> ModelConfig:
    """The model config at ``path``, or ``default`` when the file does not exist. Raises
    :class:`ServeConfigError` naming the file and the key for bad TOML, unknown keys and values
    out of range."""
    if not path.exists():
        return default
    try:
        data = tomllib.loads(path.read_text())
        return ModelConfig.model_validate(data)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ServeConfigError(f"{path}: {exc}") from exc
    except ValidationError as exc:
        raise ServeConfigError(f"{path}: {_errors(exc)}") from exc


def load_serve_config(path: Path | None, **overrides: Any) -> ServeConfig:
    """The server's config from the TOML file at ``path`` (if any) with ``overrides`` (flags that
    were given) on top. Raises :class:`ServeConfigError` for an unreadable file or bad values."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ServeConfigError(f"{path}: {exc}") from exc
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as exc:
        raise ServeConfigError(f"{path or 'settings'}: {_errors(exc)}") from exc
