"""Actuators: how a decision on cores becomes Spark's. One interface, :class:`Actuator`.

:class:`ExecutorTotal` sets the total number of executors the application wants
(``SparkContext.requestTotalExecutors``, reached through py4j: PySpark has no Python API for
it) and reads back what runs through the REST API. Measured on ``local-cluster``: raising the
total starts executors (in the REST API 2–3 s later); lowering it removes none, so a decrease
kills the idlest executors (``killExecutors``, which lowers Spark's target with them; gone from
the REST API ~6 s later) and then sets the total exactly. Requesting executors one by one does
not work after a kill (the kill had lowered the requested total), hence always the total. ``local[N]`` masters ignore the request
(``requestTotalExecutors`` returns false): :class:`ExecutorTotal` refuses them with
:class:`ActuatorUnavailable`.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

from .errors import DynaSparkError
from .rest import SparkRest
from .session import deadline_control_available

__all__ = ["Actuator", "ActuatorUnavailable", "ExecutorTotal"]


class ActuatorUnavailable(DynaSparkError):
    """The master cannot carry out this actuator's decisions (``local[N]``)."""


class Actuator(Protocol):
    def set_cores(self, cores: int) -> int:
        """Ask for ``cores``; return what was asked for, in cores (rounded to the unit)."""
        ...

    def observed_cores(self) -> int:
        """Cores running now, as Spark reports them."""
        ...


class ExecutorTotal:
    """Executor totals on a cluster master; ``cores_per_executor`` from ``spark.executor.cores``
    (``local-cluster[N,cores,mem]``: ``cores``)."""

    def __init__(self, spark: Any, rest: SparkRest, *, cores_per_executor: int) -> None:
        master = str(spark.sparkContext.master)
        if not deadline_control_available(master):
            raise ActuatorUnavailable(f"master {master} runs tasks in the driver and ignores "
                                      "executor requests: use local-cluster[N,cores,mem], "
                                      "spark:// or k8s://")  # fmt: skip
        if cores_per_executor < 1:
            raise ValueError(f"cores_per_executor must be >= 1, got {cores_per_executor}")
        self._spark = spark
        self._rest = rest
        self.cores_per_executor = cores_per_executor
        self.requested: int | None = None

    def set_cores(self, cores: int) -> int:
        executors = max(1, math.ceil(cores / self.cores_per_executor))
        if executors == self.requested:
            return executors * self.cores_per_executor
        sc = self._spark.sparkContext
        jvm = sc._jvm
        running = self._rest.executors()
        if executors < len(running):
            # Lowering the total alone removes nothing: kill the idlest executors (Spark lowers
            # its target with them), then set the total exactly.
            idlest = sorted(running, key=lambda e: int(e.get("activeTasks", 0)))
            ids = [str(e["id"]) for e in idlest[: len(running) - executors]]
            sc._jsc.sc().killExecutors(jvm.PythonUtils.toSeq(jvm.java.util.ArrayList(ids)))
        empty = getattr(getattr(jvm.scala.collection.immutable, "Map$"), "MODULE$").empty()
        if not sc._jsc.sc().requestTotalExecutors(executors, 0, empty):
            raise ActuatorUnavailable(f"Spark refused a total of {executors} executors")
        self.requested = executors
        return executors * self.cores_per_executor

    def observed_cores(self) -> int:
        return sum(int(e.get("totalCores", 0)) for e in self._rest.executors())

    def wait_for(self, cores: int, *, timeout_s: float = 30.0) -> bool:
        """Poll the REST API until ``cores`` run (True) or ``timeout_s`` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.observed_cores() == cores:
                return True
            time.sleep(0.5)
        return False
