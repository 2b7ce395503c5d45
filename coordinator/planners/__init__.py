"""Round planners: who trains in the next round, how much, and by when.

``uniform`` is classic FedAvg sampling (:mod:`.uniform`); ``hyperfl`` plans to the job's
constraints (:mod:`.hyperfl`, with agent profiles and a learning-curve model); ``oort`` is Oort's
guided participant selection with a deadline (:mod:`.oort`). All implement
the :class:`Planner` port of :mod:`.base`; :func:`make_planner` picks the one a job file names.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .base import Planner, Prediction, RoundPlan, agent_seed
from .hyperfl import HyperFLPlanner
from .oort import OortPlanner, OortSettings
from .settings import HYPERFL_DEFAULTS, HyperFLSettings
from .uniform import UniformPlanner

if TYPE_CHECKING:  # the job module imports the planners' settings
    from ..job import JobSpec

__all__ = [
    "HYPERFL_DEFAULTS",
    "HyperFLPlanner",
    "HyperFLSettings",
    "OortPlanner",
    "OortSettings",
    "Planner",
    "Prediction",
    "RoundPlan",
    "UniformPlanner",
    "agent_seed",
    "make_planner",
]


def make_planner(spec: JobSpec, *, model_bytes: int) -> Planner:
    """The planner the job file names. hyperFL's settings are the ``[planner]`` table's fields
    by name, with what ``[rounds]`` and ``[constraints]`` fix for every planner."""
    if spec.planner.name == "uniform":
        return UniformPlanner(spec)
    if spec.planner.name == "oort":
        return _oort(spec)
    p, r = spec.planner, spec.rounds
    from_table = {
        f.name: getattr(p, f.name)
        for f in dataclasses.fields(HyperFLSettings)
        if f.name in type(p).model_fields
    }
    fixed = dict(
        participants=r.participants,
        min_participants=min(p.min_participants or r.participants, r.participants),
        max_participants=max(p.max_participants, r.participants),
        batch_size=r.batch_size,
        learning_rate=r.learning_rate,
        max_deadline_s=min(p.max_deadline_s, r.round_timeout_s),
        target_accuracy=spec.constraints.target_accuracy,
        seed=spec.seed,
        time_scale=spec.emulation.time_scale,
    )
    settings = dataclasses.replace(HYPERFL_DEFAULTS, **{**from_table, **fixed})
    return HyperFLPlanner(settings, model_bytes=model_bytes)


def _oort(spec: JobSpec) -> OortPlanner:
    o, r = spec.planner.oort, spec.rounds
    deadline = min(o.deadline_s or r.round_timeout_s, r.round_timeout_s)
    settings = OortSettings(
        participants=r.participants,
        deadline_s=deadline,
        max_deadline_s=r.round_timeout_s,
        alpha=o.alpha,
        epsilon=o.epsilon,
        epsilon_decay=o.epsilon_decay,
        min_epsilon=min(o.min_epsilon, o.epsilon),
        cut_off=o.cut_off,
        overcommit=o.overcommit,
        pacer_window=o.pacer_window,
        pacer_step_s=o.pacer_step_s,
        local_epochs=r.local_epochs,
        local_steps=r.local_steps,
        batch_size=r.batch_size,
        learning_rate=r.learning_rate,
        min_results=r.min_results,
        seed=spec.seed,
    )
    return OortPlanner(settings)
