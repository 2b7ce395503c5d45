"""dynaSpark: PySpark jobs by their deadlines with the fewest cores, on stock Spark 4.

::

    profile     JobProfile, StageProfile, stage_keys       what each stage cost (pure)
    planner     plan, cores_for, Plan                      per-stage deadlines and cores (pure)
    controller  JobController, StageController             PI on progress, re-planning (pure)
    simulator   simulate, policies                         a discrete-event Spark cluster (pure)
    runner      prepare, run, RunSettings                  ``hyperfleet spark run``: a script
                                                           under a deadline (report: RunReport)
    actuators   ExecutorTotal, TaskSlots, ShufflePartitions  cores into Spark's terms (Actuator)

Built so far: the pure core above, the profiler and the runner on a live Spark session
(``hyperfleet spark profile|run``) and the three actuators. Not built yet: the pipelines as Spark
jobs, the benchmark (docs/dynaspark.md says what is where).
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
from .report import RunReport, Sample, StageOutcome
from .runner import ControlError, Prepared, ProfileNotFound, RunSettings, prepare, run
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
    "ControlError",
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
    "Prepared",
    "ProfileError",
    "ProfileNotFound",
    "RunReport",
    "RunSettings",
    "Sample",
    "ShufflePartitions",
    "SimResult",
    "SimSettings",
    "StageController",
    "StageDecision",
    "StageOutcome",
    "StagePlan",
    "StageProfile",
    "StaticPolicy",
    "TaskSlots",
    "cores_for",
    "plan",
    "prepare",
    "run",
    "shuffle_partitions",
    "simulate",
    "stage_keys",
    "task_cpus",
    "task_slots",
]
