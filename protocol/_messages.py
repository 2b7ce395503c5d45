"""The messages of the wire contract: frozen, slotted, keyword-only records.

Field vocabulary follows Flower (``TrainIns``/``TrainRes``) so FL users recognise it. Arrays are NumPy arrays; the codec moves them as dtype + shape + raw bytes.
Every message travels inside an :class:`Envelope` that carries who sent it, for which job and round.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar, dataclass_transform

import numpy.typing as npt

__all__ = [
    "MESSAGE_TYPES",
    "Artifact",
    "Envelope",
    "Failure",
    "GpuInfo",
    "Heartbeat",
    "Hello",
    "JobState",
    "Message",
    "ModelRef",
    "Normalization",
    "ServingStats",
    "Status",
    "TrainConfig",
    "TrainIns",
    "TrainRes",
    "Weights",
]

Weights = tuple[npt.NDArray[Any], ...]
"""Model weights: one array per model tensor, in ``keras.Model.get_weights()`` order."""

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(field,))
def _record(cls: type[_T]) -> type[_T]:
    """``@dataclass(frozen=True, slots=True, kw_only=True)``, spelled so type checkers see it."""
    return dataclass(frozen=True, slots=True, kw_only=True)(cls)


class Message:
    """Base of every message body; ``TYPE`` is its name on the wire."""

    __slots__ = ()
    TYPE: ClassVar[str]


@_record
class Status(Message):
    """Retained on ``agents/{id}/status``: ``online`` on connect, ``offline`` as the Last Will.

    ``session`` names the daemon run that sent it, so one daemon's ``offline`` never hides another
    running by mistake under the same agent id."""

    TYPE: ClassVar[str] = "Status"
    state: Literal["online", "offline"]
    session: str = ""


@_record
class GpuInfo:
    index: int
    name: str
    memory_bytes: int


@_record
class Hello(Message):
    """Retained on ``agents/{id}/hello``: what the agent is and can do."""

    TYPE: ClassVar[str] = "Hello"
    device_class: str
    arch: str
    cores: int
    memory_bytes: int
    gpus: tuple[GpuInfo, ...] = ()
    runtimes: tuple[str, ...] = ()
    num_examples: int = 0
    software: str = ""
    profile: Mapping[str, float] = field(default_factory=dict)
    """What the device class states about the device (train_rate, uplink_mbps, ...), to seed profiles."""
    label_counts: tuple[int, ...] = ()
    """Examples per label in the agent's shard, so planners can keep every label in training.
    Empty when the agent keeps its label distribution to itself."""
    session: str = ""
    """A fresh random id per daemon run: two daemons under one agent id show as two sessions."""


@_record
class Heartbeat(Message):
    """Periodic, never retained: the fresh evidence that an agent is alive (its status and hello
    are retained and may be hours old)."""

    TYPE: ClassVar[str] = "Heartbeat"
    seq: int
    busy: bool
    load: float
    """1-minute load average of the host."""
    memory_used_bytes: int
    """Resident memory of the daemon process."""
    session: str = ""


@_record
class TrainConfig:
    """How much to train and how. ``local_steps`` bounds the work exactly when set; else ``epochs``."""

    epochs: int = 1
    local_steps: int | None = None
    batch_size: int = 32
    learning_rate: float = 0.1
    proximal_mu: float = 0.0
    seed: int = 0


@_record
class TrainIns(Message):
    """Coordinator → agent: train ``model`` from ``weights`` with ``config`` and reply within
    ``budget_s`` seconds of receiving it.

    The budget is relative and each side measures it on its own monotonic clock, so a coordinator
    and agents whose wall clocks disagree still agree on it. The reply's envelope names this
    instruction's ``msg_id`` in ``reply_to``."""

    TYPE: ClassVar[str] = "TrainIns"
    model: str
    """The model's architecture as a Keras JSON config (``keras.Model.to_json()``)."""
    weights: Weights
    config: TrainConfig
    budget_s: float
    """Seconds from receipt by which the reply must be sent (the coordinator's round time left)."""
    epoch: int = 0
    """The coordinator's ownership epoch of the job, +1 each time a coordinator takes the job over;
    agents ignore instructions of an epoch older than one they have seen for the job."""


@_record
class TrainRes(Message):
    TYPE: ClassVar[str] = "TrainRes"
    weights: Weights
    num_examples: int
    steps: int
    loss: float
    train_s: float
    metrics: Mapping[str, float] = field(default_factory=dict)


@_record
class Failure(Message):
    """An agent could not do what it was asked; ``code`` is machine-readable, ``reason`` is for people."""

    TYPE: ClassVar[str] = "Failure"
    code: str
    reason: str


@_record
class Artifact:
    """One file of a published model: its format (``keras``, ``tflite``, ``tflite_dynamic``),
    where to fetch it (``http(s)://`` for other hosts; ``file://`` only on the same machine) and
    how to check it."""

    format: str
    url: str
    sha256: str
    size_bytes: int
    signature: str | None = None
    """Ed25519 signature (base64) by the coordinator's signing key over
    :func:`~protocol.artifact_statement` of this file; ``None``: unsigned."""


@_record
class Normalization:
    """The input normalisation a model was trained with, shipped beside it so serving
    normalises the same way: a model input is ``(x - offset) * scale``, per feature (one value
    each in ``offset`` and ``scale``), or with one value for every feature. Finite numbers
    (the codec checks), ``offset`` and ``scale`` of the same length; ``ValueError`` otherwise."""

    offset: tuple[float, ...]
    scale: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.offset or len(self.offset) != len(self.scale):
            raise ValueError(
                f"normalization needs offset and scale of one length >= 1, got "
                f"{len(self.offset)} and {len(self.scale)}"
            )


@_record
class ModelRef(Message):
    """Retained on ``models/{name}/latest``: where the newest accepted model is and how to check
    it. ``format``/``url``/``sha256``/``size_bytes`` name the primary (Keras) file; ``variants``
    the other formats of the same model, each with its own URL, sha256 and size."""

    TYPE: ClassVar[str] = "ModelRef"
    name: str
    version: int
    job_id: str
    format: str
    url: str
    sha256: str
    size_bytes: int
    metrics: Mapping[str, float] = field(default_factory=dict)
    variants: tuple[Artifact, ...] = ()
    normalization: Normalization | None = None
    """How inputs were normalised in training (from the data pipeline), for serving."""
    signature: str | None = None
    """The primary file's signature (see :attr:`Artifact.signature`); ``None``: unsigned."""

    def artifacts(self) -> tuple[Artifact, ...]:
        """Every file of the model: the primary first, then the variants."""
        primary = Artifact(
            format=self.format,
            url=self.url,
            sha256=self.sha256,
            size_bytes=self.size_bytes,
            signature=self.signature,
        )
        return (primary, *self.variants)

    def artifact(self, format: str) -> Artifact | None:
        """The file of ``format``, or ``None`` when the reference has none."""
        return next((a for a in self.artifacts() if a.format == format), None)


@_record
class JobState(Message):
    """Retained on ``jobs/{id}/state``: progress for monitors, one per completed round."""

    TYPE: ClassVar[str] = "JobState"
    status: str
    """``running``, a stop reason (``reached``, ``time_budget``, ...), or ``lost``: the owner's
    Last Will, published by the broker when the coordinator's connection dies."""
    round: int
    accuracy: float
    best_accuracy: float
    target_accuracy: float
    elapsed_s: float
    time_budget_s: float
    participants: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()
    plan: Mapping[str, Any] = field(default_factory=dict)
    message: str = ""
    owner: str = ""
    """The coordinator run that owns the job (its session id); see ``TrainIns.epoch``."""
    epoch: int = 0


@_record
class ServingStats(Message):
    """Retained on ``serving/{model}/stats``: how a ROMA server serves one model, republished
    every ``period_s`` seconds (a monitor deems it stale after a few periods without one).

    Times in milliseconds, over the model's SLA window of ``window_s`` seconds; the ``None``
    fields are ``None`` when no request completed in the window. ``version`` is 0 while no
    version serves (``state`` ``LOADING`` or ``UNAVAILABLE``, ``reason`` says why). With several
    ROMA replicas on one prefix the newest publication wins (the envelope's sender names it)."""

    TYPE: ClassVar[str] = "ServingStats"
    model: str
    version: int
    state: str
    """``READY``, ``LOADING``, ``UNAVAILABLE``, or ``STOPPED``: the server's last word as it
    stopped cleanly (the window's figures as they were)."""
    sla_ms: float
    percentile: float
    """The SLA's percentile (e.g. 95: the SLA holds when 95% of requests finish in ``sla_ms``)."""
    window_s: float
    period_s: float
    response_ms: float | None = None
    """Response time at the SLA's percentile over the window."""
    p95_ms: float | None = None
    violation_share: float | None = None
    """Share of the window's requests slower than ``sla_ms``."""
    requests_per_s: float = 0.0
    """Requests completed per second over the window."""
    requests: int = 0
    """Requests since the version was loaded (with ``shed`` the ones refused with 429)."""
    shed: int = 0
    cores: float = 0.0
    """Cores the core controller gives the model now."""
    queued: int = 0
    reason: str = ""


MESSAGE_TYPES: Mapping[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Status,
        Hello,
        Heartbeat,
        TrainIns,
        TrainRes,
        Failure,
        ModelRef,
        JobState,
        ServingStats,
    )
}


@_record
class Envelope:
    """What travels: a message body with its routing facts.

    ``msg_id`` is unique per message (receivers are idempotent on it); ``round`` is 0 outside rounds;
    ``reply_to`` is the ``msg_id`` of the instruction a reply answers ("" for anything else);
    ``ts`` is the sender's wall clock, used only to estimate clock skew, never to decide.
    """

    body: Message
    msg_id: str
    sender: str
    job_id: str = ""
    round: int = 0
    ts: float = 0.0
    reply_to: str = ""

    @property
    def type(self) -> str:
        return self.body.TYPE
