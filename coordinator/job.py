"""The job file: what to train, on what, how, and what the user needs (``JOB.toml``).

Validated with pydantic at this untrusted edge; unknown keys are rejected, every problem is a
:class:`~coordinator.errors.JobConfigError` that names the file and the key. Example::

    job_id = "digits"
    holdout = "results/demo/data/holdout.npz"
    normalization = "results/demo/data/normalization.json"   # optional, from the data pipeline

    [model]
    hidden = [64, 32]

    [strategy]
    name = "fedavg"

    [rounds]
    participants = 8
    min_results = 2
    round_timeout_s = 20
    local_epochs = 1

    [constraints]
    target_accuracy = 0.90
    time_budget_s = 300

    [emulation]          # optional: a fleet emulated at --time-scale 0.25
    time_scale = 0.25    # the seconds above are then device-seconds
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from protocol import Normalization, check_id

from .errors import JobConfigError, StrategyError
from .planners.settings import HYPERFL_DEFAULTS as _H
from .strategies import Krum, Strategy, make_strategy

__all__ = [
    "AsyncSpec",
    "Constraints",
    "EmulationSpec",
    "JobSpec",
    "ModelSpec",
    "OortSpec",
    "PlannerSpec",
    "RoundsSpec",
    "StrategySpec",
    "load_job",
    "load_normalization",
    "min_updates",
    "required_runtime",
]

_Strict = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # TOML has inf and nan

JobId = Annotated[str, AfterValidator(lambda v: check_id(v, "job id"))]
"""A job id: one MQTT topic level (:func:`protocol.check_id`)."""
ModelName = Annotated[str, AfterValidator(lambda v: check_id(v, "model name"))]
"""A model name: one MQTT topic level (:func:`protocol.check_id`)."""


class ModelSpec(BaseModel):
    """A dense network on flat inputs: ``hidden`` widths, softmax over the classes; with ``conv``
    a small CNN in front of it (the flat input reshaped to ``image_shape``, then per entry of
    ``conv`` a 3x3 convolution with that many filters and a 2x2 max-pool, then flatten).

    Input width and class count come from the holdout unless given. ``hidden = []`` is softmax
    regression. ``image_shape`` defaults to a square single-channel image of the input width.
    A CNN needs agents that train with Keras (``"keras"`` in their hello's ``runtimes``): the
    coordinator never asks others (:func:`required_runtime`).
    """

    model_config = _Strict
    name: ModelName = "digits-mlp"
    hidden: list[int] = Field(default_factory=lambda: [64, 32])
    conv: list[int] = Field(default_factory=list, description="filters per 3x3 conv layer")
    image_shape: list[int] | None = Field(default=None, min_length=3, max_length=3)
    activation: Literal["relu", "tanh"] = "relu"
    input_dim: int | None = Field(default=None, gt=0)
    num_classes: int | None = Field(default=None, gt=1)
    seed: int = 0


def required_runtime(model: ModelSpec) -> str | None:
    """The training runtime an agent must announce to be given ``model``: ``"keras"`` for a
    CNN (the NumPy trainer runs dense networks only), ``None`` when any trainer will do."""
    return "keras" if model.conv else None


class StrategySpec(BaseModel):
    model_config = _Strict
    name: str = "fedavg"
    params: dict[str, float] = Field(default_factory=dict)


class RoundsSpec(BaseModel):
    model_config = _Strict
    participants: int = Field(default=8, ge=1, description="agents asked to train each round")
    min_results: int = Field(default=1, ge=1, description="fewest replies a round may aggregate")
    round_timeout_s: float = Field(default=30.0, gt=0, description="deadline of each round")
    local_epochs: int = Field(default=1, ge=1)
    local_steps: int | None = Field(default=None, ge=1, description="exact steps; overrides epochs")
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=0.1, gt=0)
    cut_work_at_deadline: bool = Field(
        default=True,
        description="agents stop training at the round's deadline and reply with what they did; "
        "false (uniform planner only): they are told the job's remaining time, and a reply after "
        "round_timeout_s is a failure (how Flower and FedML wait for their clients)",
    )
    min_agents: int = Field(default=1, ge=1, description="online agents to wait for before round 1")
    wait_for_agents_s: float = Field(default=120.0, gt=0)


class OortSpec(BaseModel):
    """``[planner.oort]``: Oort's knobs (see :mod:`coordinator.planners.oort`). Participants
    (``K``), local work, batch size and learning rate come from ``[rounds]``; the deadline ``T``
    starts at ``deadline_s`` (default ``rounds.round_timeout_s``) and the pacer may relax it up to
    ``rounds.round_timeout_s``."""

    model_config = _Strict
    deadline_s: float | None = Field(default=None, gt=0)
    alpha: float = Field(default=2.0, ge=0)
    epsilon: float = Field(default=0.9, ge=0, le=1)
    epsilon_decay: float = Field(default=0.98, gt=0, le=1)
    min_epsilon: float = Field(default=0.2, ge=0, le=1)
    cut_off: float = Field(default=0.95, gt=0, le=1)
    overcommit: float = Field(default=1.3, ge=1)
    pacer_window: int = Field(default=5, ge=1)
    pacer_step_s: float = Field(default=5.0, ge=0)


class PlannerSpec(BaseModel):
    """Who trains, how much, by when. ``uniform`` is classic FedAvg sampling; ``hyperfl`` plans to
    the constraints (see :mod:`coordinator.planners.hyperfl`); its participants, batch size and
    learning rate come from ``[rounds]``. Defaults are :data:`~coordinator.planners.settings.
    HYPERFL_DEFAULTS`; this table adds only the ranges. ``oort`` is Oort's guided selection with
    a deadline (:mod:`coordinator.planners.oort`, knobs in ``[planner.oort]``)."""

    model_config = _Strict
    name: Literal["uniform", "hyperfl", "oort"] = "uniform"
    oort: OortSpec = Field(default_factory=OortSpec)
    min_participants: int | None = Field(
        default=None,
        ge=1,
        description="fewest participants when ahead (default: rounds.participants)",
    )
    max_participants: int = Field(default=_H.max_participants, ge=1)
    max_local_epochs: float = Field(default=_H.max_local_epochs, gt=0)
    min_steps: int = Field(default=_H.min_steps, ge=1)
    min_batch: int = Field(default=_H.min_batch, ge=1)
    max_stretch: float = Field(default=_H.max_stretch, ge=1)
    safety: float = Field(default=_H.safety, gt=0, le=1)
    min_deadline_s: float = Field(default=_H.min_deadline_s, gt=0)
    max_deadline_s: float = Field(default=_H.max_deadline_s, gt=0)
    explore_fraction: float = Field(default=_H.explore_fraction, ge=0, le=1)
    fairness_rounds: int = Field(default=_H.fairness_rounds, ge=1)
    label_rounds: int = Field(default=_H.label_rounds, ge=1)
    infeasible_after: int = Field(default=_H.infeasible_after, ge=1)
    verdict_after: int = Field(default=_H.verdict_after, ge=2)
    verdict_margin: float = Field(default=_H.verdict_margin, ge=0, lt=1)


class AsyncSpec(BaseModel):
    """The ``[async]`` table of a ``mode = "async"`` job: FedBuff's parameters (Nguyen et al.,
    AISTATS 2022; see :mod:`coordinator.async_rounds`)."""

    model_config = _Strict
    buffer_size: int = Field(
        default=10, ge=1, description="updates (K) aggregated into each new model version"
    )
    concurrency: int = Field(default=20, ge=1, description="most agents training at once")
    max_staleness: int = Field(
        default=10,
        ge=0,
        description="versions an update may lag the current one; staler ones are dropped",
    )
    server_lr: float = Field(
        default=1.0, gt=0, le=10, description="server learning rate applied to each step"
    )


class Constraints(BaseModel):
    model_config = _Strict
    target_accuracy: float = Field(gt=0, le=1)
    time_budget_s: float = Field(gt=0)
    max_rounds: int | None = Field(default=None, ge=1)
    max_bytes: int | None = Field(default=None, ge=1)
    on_infeasible: Literal["continue", "stop"] = "continue"
    max_empty_rounds: int = Field(
        default=10,
        ge=1,
        description="rounds in a row with no result at all that stop the job (reason no_results)",
    )


class EmulationSpec(BaseModel):
    """For a job on an emulated fleet: ``time_scale`` is the fleet's ``--time-scale`` (wall
    seconds per device-second). Every duration of the job file (``time_budget_s``,
    ``round_timeout_s``, the planner's deadlines) is then in device-seconds and so is everything
    the coordinator reports; see :mod:`coordinator.timescale`. ``wait_for_agents_s`` stays wall
    time."""

    model_config = _Strict
    time_scale: float = Field(default=1.0, gt=0, allow_inf_nan=False)


class JobSpec(BaseModel):
    model_config = _Strict
    job_id: JobId
    holdout: Path
    normalization: Path | None = Field(
        default=None,
        description="the normalisation statistics the shards were made with (normalization.json "
        "from the data pipeline); announced with the model so serving normalises the same way",
    )
    seed: int = 0
    model: ModelSpec = Field(default_factory=ModelSpec)
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    rounds: RoundsSpec = Field(default_factory=RoundsSpec)
    planner: PlannerSpec = Field(default_factory=PlannerSpec)
    mode: Literal["sync", "async"] = Field(
        default="sync",
        description="sync: rounds (the planner asks agents, waits, aggregates); async: "
        "FedBuff buffered asynchronous aggregation, configured by [async]",
    )
    async_: AsyncSpec | None = Field(default=None, alias="async")
    constraints: Constraints
    emulation: EmulationSpec = Field(default_factory=EmulationSpec)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def asynchronous(self) -> AsyncSpec:
        """The ``[async]`` settings, defaults filled in (meaningful in ``mode = "async"``)."""
        return self.async_ or AsyncSpec()

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        if self.rounds.min_results > self.rounds.participants:
            raise ValueError(
                f"rounds.min_results ({self.rounds.min_results}) exceeds rounds.participants "
                f"({self.rounds.participants})"
            )
        try:
            strategy = make_strategy(self.strategy.name, **self.strategy.params)
        except StrategyError as exc:
            raise ValueError(f"strategy: {exc}") from exc
        if self.mode == "async":
            self._check_async(strategy)
        else:
            if self.async_ is not None:
                raise ValueError('an [async] table is given but mode is "sync"; set mode = "async"')
            self._check_participants_suffice(strategy)
        return self

    def _check_async(self, strategy: Strategy) -> None:
        """In async mode the engine buffers, discounts and steps; the strategy is the rule over
        each buffer, which must hold enough updates for it."""
        if strategy.name == "fedbuff":
            raise ValueError(
                'strategy fedbuff is what mode = "async" runs already: set its buffer size and '
                "server learning rate in [async] (buffer_size, server_lr) and choose the rule "
                "over each buffer as the strategy (fedavg, fedmedian, trimmed_mean, krum, ...)"
            )
        need = min_updates(strategy)
        if self.asynchronous.buffer_size < need:
            raise ValueError(
                f"strategy {strategy.name} aggregates only buffers of at least {need} updates, "
                f"but async.buffer_size = {self.asynchronous.buffer_size}: raise it to {need}"
            )

    def _check_participants_suffice(self, strategy: Strategy) -> None:
        """Refuse a job whose rounds could ask fewer agents than its strategy aggregates.

        Krum needs ``n >= 2f + 3`` updates (and ``f + m`` for Multi-Krum); a planner that may ask
        fewer would see rounds refused, possibly every round of the job.
        """
        need = min_updates(strategy)
        participants = self.rounds.participants
        keys = ["rounds.participants"]
        fewest = participants
        if self.planner.name == "hyperfl" and self.planner.min_participants is not None:
            # The pace controller may go down to min_participants (never above participants).
            fewest = min(self.planner.min_participants, participants)
            if fewest < participants:
                keys = ["planner.min_participants"]
        if fewest >= need:
            return
        assert isinstance(strategy, Krum)  # the only rule with a minimum above 1
        f, m = strategy.num_malicious, strategy.num_to_keep
        tolerable = (fewest - 3) // 2
        lower = (
            f"lower strategy.params.num_malicious to {tolerable}"
            if tolerable >= 0 and fewest >= tolerable + m
            else "choose another strategy"
        )
        raise ValueError(
            f"strategy krum with num_malicious = {f} and num_to_keep = {m} aggregates only rounds "
            f"of at least {need} updates (n >= 2f + 3 and n >= f + m), but {keys[0]} = {fewest} "
            f"asks for {fewest} agents a round, so no round could be aggregated: raise "
            f"{keys[0]} to at least {need} or {lower}"
        )


def min_updates(strategy: Strategy) -> int:
    """The fewest updates a round needs for ``strategy`` to aggregate it."""
    return strategy.min_updates() if isinstance(strategy, Krum) else 1


def load_job(path: Path, **overrides: Any) -> JobSpec:
    """Read and validate a job file; relative paths in it are relative to the file."""
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise JobConfigError(f"cannot read job file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise JobConfigError(f"{path} is not valid TOML: {exc}") from exc
    for dotted, value in overrides.items():
        section, _, key = dotted.rpartition(".")
        target = raw.setdefault(section, {}) if section else raw
        target[key] = value
    try:
        spec = JobSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors()
        )
        raise JobConfigError(f"{path}: {problems}") from exc
    if not spec.holdout.is_absolute():
        spec = spec.model_copy(update={"holdout": (path.parent / spec.holdout).resolve()})
    if spec.normalization is not None:
        if not spec.normalization.is_absolute():
            resolved = (path.parent / spec.normalization).resolve()
            spec = spec.model_copy(update={"normalization": resolved})
        load_normalization(spec.normalization)  # refused at start, not at export
    return spec


def load_normalization(path: Path | None) -> Normalization | None:
    """The statistics in ``path`` (``{"offset": [...], "scale": [...]}``, one number per
    feature or one for all; other keys, such as the pipeline's ``mean`` and ``std``, are
    ignored) as the :class:`protocol.Normalization` a ``ModelRef`` carries; ``None`` for no
    file. Raises :class:`~coordinator.errors.JobConfigError` naming the file and the problem."""
    if path is None:
        return None
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise JobConfigError(f"cannot read normalization {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise JobConfigError(f"normalization {path} is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise JobConfigError(f"normalization {path} must be a JSON object")
    values: dict[str, tuple[float, ...]] = {}
    for key in ("offset", "scale"):
        raw = doc.get(key)
        raw = [raw] if isinstance(raw, (int, float)) and not isinstance(raw, bool) else raw
        if (
            not isinstance(raw, list)
            or not raw
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw)
        ):
            raise JobConfigError(
                f"normalization {path}: {key!r} must be a number or a list of numbers"
            )
        if not all(math.isfinite(v) for v in raw):
            raise JobConfigError(f"normalization {path}: {key!r} holds a non-finite number")
        values[key] = tuple(float(v) for v in raw)
    offset, scale = values["offset"], values["scale"]
    if len(offset) != len(scale):
        if len(offset) == 1:
            offset = offset * len(scale)
        elif len(scale) == 1:
            scale = scale * len(offset)
        else:
            raise JobConfigError(
                f"normalization {path}: offset has {len(offset)} values, scale {len(scale)}"
            )
    return Normalization(offset=offset, scale=scale)
