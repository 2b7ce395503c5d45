"""dynaSpark: PySpark jobs by their deadlines with the fewest cores, on stock Spark 4.

::

    profile     JobProfile, StageProfile, stage_keys       what each stage cost (pure)
    planner     plan, cores_for, Plan                      per-stage deadlines and cores (pure)
    controller  JobController, StageController             PI on progress, re-planning (pure)
    simulator   simulate, policies                         a discrete-event Spark cluster (pure)
    actuators   ExecutorTotal, TaskSlots, ShufflePartitions  cores into Spark's terms (Actuator)

Built so far: the pure core above. Not built yet: the profiler and runner on a live Spark
session (``hyperfleet spark profile|run``), the pipelines as Spark jobs, the
benchmark (docs/dynaspark.md says what is where).
"""

from __future__ import annotations

from .actuators import (
    Actuator,
    ActuatorUnavailable,
    ExecutorTotal,
    ShufflePartitions,
    TaskSlots,
    shuffle_partitions,
    task_cpus,
    task_slots,
)
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
    "Actuator",
    "ActuatorUnavailable",
    "ControlSettings",
    "DeadlinePolicy",
    "DynaSparkError",
    "DynamicAllocationPolicy",
    "ExecutorTotal",
    "InfeasibleDeadline",
    "JobController",
    "JobProfile",
    "Plan",
    "Policy",
    "ProfileError",
    "ShufflePartitions",
    "SimResult",
    "SimSettings",
    "StageController",
    "StageDecision",
    "StagePlan",
    "StageProfile",
    "StaticPolicy",
    "TaskSlots",
    "cores_for",
    "plan",
    "shuffle_partitions",
    "simulate",
    "stage_keys",
    "task_cpus",
    "task_slots",
]
