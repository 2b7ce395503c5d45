"""dynaSpark: PySpark jobs by their deadlines with the fewest cores, on stock Spark 4.

::

    profile     JobProfile, StageProfile, stage_keys       what each stage cost (pure)
    planner     plan, cores_for, Plan                      per-stage deadlines and cores (pure)
    controller  JobController, StageController             PI on progress, re-planning (pure)
    simulator   simulate, policies                         a discrete-event Spark cluster (pure)

Built so far: the pure core above. Not built yet: the profiler and runner on a live Spark
session (``hyperfleet spark profile|run``), the actuators, the pipelines as Spark jobs, the
benchmark (docs/dynaspark.md says what is where).
"""

from __future__ import annotations

from .controller import ControlSettings, JobController, StageController, StageDecision
from .errors import DynaSparkError, InfeasibleDeadline, ProfileError
from .planner import Plan, StagePlan, cores_for, plan
from .profile import PROFILE_VERSION, JobProfile, StageProfile, stage_keys
from .simulator import (
    DeadlinePolicy,
    DynamicAllocationPolicy,
    Policy,
    SimResult,
    SimSettings,
    StaticPolicy,
    simulate,
)

__all__ = [
    "PROFILE_VERSION",
    "ControlSettings",
    "DeadlinePolicy",
    "DynaSparkError",
    "DynamicAllocationPolicy",
    "InfeasibleDeadline",
    "JobController",
    "JobProfile",
    "Plan",
    "Policy",
    "ProfileError",
    "SimResult",
    "SimSettings",
    "StageController",
    "StageDecision",
    "StagePlan",
    "StageProfile",
    "StaticPolicy",
    "cores_for",
    "plan",
    "simulate",
    "stage_keys",
]
