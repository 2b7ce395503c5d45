"""The hyperFL planner's settings, declared once.

:class:`HyperFLSettings` is the one place their defaults live: the job file's ``[planner]``
table (:class:`coordinator.job.PlannerSpec`) takes its defaults from here and only adds the
ranges a user may set; :func:`coordinator.planners.make_planner` builds the settings from the
job by field name.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HYPERFL_DEFAULTS", "HyperFLSettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class HyperFLSettings:
    participants: int = 10
    """Participants of the first rounds; the pace controller moves it within the bounds below."""
    min_participants: int = 3
    max_participants: int = 30
    batch_size: int = 16
    learning_rate: float = 0.1
    max_local_epochs: float = 5.0
    """Most local work per round, in passes over the agent's own data (limits client drift)."""
    min_steps: int = 1
    min_batch: int = 4
    """Smallest batch an agent that cannot finish a whole one in time may be given."""
    max_stretch: float = 5.0
    """Most a fairness round's deadline may exceed the chosen one, as a factor."""
    safety: float = 0.8
    """Share of the deadline that work is sized to fill; the rest absorbs noise."""
    min_deadline_s: float = 0.2
    max_deadline_s: float = 60.0
    explore_fraction: float = 0.2
    fairness_rounds: int = 20
    label_rounds: int = 5
    max_forced_fraction: float = 0.34
    target_accuracy: float = 0.9
    infeasible_after: int = 2
    """Consecutive rounds the prediction must say "out of reach" before the job is told."""
    verdict_after: int = 4
    """Rounds of learning curve needed before any verdict on feasibility."""
    verdict_margin: float = 0.0
    """When positive, a verdict also needs the optimistic accuracy at the end of the budget at full
    pace to fall this far below the target: fewer false alarms, later or missed true ones."""
    seed: int = 0
    time_scale: float = 1.0
    """The job's time scale (``[emulation] time_scale``): the planner counts in device-seconds of
    it, and converts what agents announce at another scale (see :mod:`.profiles`)."""


HYPERFL_DEFAULTS = HyperFLSettings()
