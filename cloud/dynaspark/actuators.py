"""Actuators: how a decision on cores becomes Spark's. One interface, :class:`Actuator`; three
implementations, each measured against a real ``local-cluster``:

::

    ExecutorTotal      executors the application holds        any stage     cluster masters
    TaskSlots          tasks one stage runs at once            cooperating   cluster masters,
                       (a TaskResourceProfile, cpus per task)  stages only   dynamic allocation off
    ShufflePartitions  tasks later SQL shuffles are cut into   SQL shuffles  any master

:class:`ExecutorTotal` sets the total number of executors the application wants
(``SparkContext.requestTotalExecutors``, reached through py4j: PySpark has no Python API for
it) and reads back what runs through the REST API. Measured on ``local-cluster``: raising the
total starts executors (in the REST API 2–3 s later); lowering it removes none, so a decrease
kills the idlest executors (``killExecutors``, which lowers Spark's target with them; gone from
the REST API ~6 s later) and then sets the total exactly. Requesting executors one by one does
not work after a kill (the kill had lowered the requested total), hence always the total. ``local[N]`` masters ignore the request
(``requestTotalExecutors`` returns false): :class:`ExecutorTotal` refuses them with
:class:`ActuatorUnavailable`.

:class:`TaskSlots` and :class:`ShufflePartitions` are documented on their classes. Where an
actuator cannot act on the session's master or settings, its constructor raises
:class:`ActuatorUnavailable` naming the fix.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from decimal import ROUND_DOWN, Decimal
from typing import Any, Protocol

from .errors import DynaSparkError
from .rest import SparkRest
from .session import deadline_control_available

__all__ = [
    "GRACEFUL_CONF",
    "Actuator",
    "ActuatorUnavailable",
    "ExecutorTotal",
    "ShufflePartitions",
    "TaskSlots",
    "shuffle_partitions",
    "task_cpus",
    "task_slots",
]

log = logging.getLogger(__name__)

_CPU_STEP = Decimal("1e-9")
"""Spark keeps fractional ``cpus`` amounts to 9 decimals (``CpuAmount.SCALE``, Spark 4.3)."""


class ActuatorUnavailable(DynaSparkError):
    """The master or the session's settings cannot carry out this actuator's decisions (e.g.
    ``local[N]``); the message names the fix."""


class Actuator(Protocol):
    """Turns the cores a controller decided into Spark's terms, and reads Spark's answer back.
    What "cores" means in Spark differs by actuator (executors' cores, a stage's task slots,
    tasks per wave), and so does what :meth:`observed_cores` reads; each class says."""

    def set_cores(self, cores: int) -> int:
        """Ask for ``cores``; return what was asked for, in cores, after rounding to what the
        actuator can express (an executor's cores, a whole number of task slots)."""
        ...

    def observed_cores(self) -> int:
        """What Spark reports now for the quantity this actuator sets, in cores."""
        ...


def _running_tasks(rest: SparkRest) -> int:
    """Tasks running now over all active stages, from one REST call (``details=true`` with
    ``taskStatus=RUNNING``). Measured: the per-stage and per-executor ``numActiveTasks`` /
    ``activeTasks`` counters lag by a task for seconds (2 shown while 1 ran); the task list
    does not, but a finished task may still show as running for some milliseconds."""
    stages = rest.get(f"/applications/{rest.app_id}/stages?status=active&details=true"
                      "&taskStatus=RUNNING")  # fmt: skip
    running = 0
    for stage in stages:
        tasks = stage.get("tasks") or {}
        running += sum(1 for t in tasks.values() if t.get("status") == "RUNNING")
    return running


GRACEFUL_CONF = {
    "spark.decommission.enabled": "true",
    "spark.storage.decommission.enabled": "true",
    "spark.storage.decommission.shuffleBlocks.enabled": "true",
    "spark.storage.decommission.replicationReattemptInterval": "2s",
}
"""Settings under which :class:`ExecutorTotal` releases executors gracefully (decommissioning,
their shuffle files moved to the executors that stay); the runner sets them unless told
otherwise. Spark docs, "Graceful Decommission of Executors"."""


class ExecutorTotal:
    """Executor totals on a cluster master; ``cores_per_executor`` from ``spark.executor.cores``
    (``local-cluster[N,cores,mem]``: ``cores``). :meth:`observed_cores`: the cores of the live
    executors (REST ``/executors``). Raises :class:`ActuatorUnavailable` on ``local[N]``.

    Lowering Spark's total alone removes no executor, so a decrease also removes the surplus,
    idlest first (REST ``activeTasks``), in one of two ways:

    - **graceful** (the session has ``spark.decommission.enabled``; :data:`GRACEFUL_CONF`):
      the scheduler backend's ``decommissionExecutors``: the executor takes no new task, ends
      the ones it runs, hands its shuffle files to the executors that stay
      (``spark.storage.decommission.shuffleBlocks.enabled``) and exits. Measured on
      ``local-cluster[2,1,1024]``: a reduceByKey counted again after one of its two executors
      was decommissioned skipped its map stage (the files had moved);
    - otherwise ``killExecutors`` with ``force=false``: the scheduler kills only executors with
      no running task (a busy one is left until a later call finds it idle). A kill loses the
      executor's shuffle files (no external shuffle service on ``local-cluster``): measured,
      the same count re-ran 4 of its 8 map tasks, and in a benchmark run two resubmitted stages
      cost 20 s. ``SparkContext.killExecutors`` (which forces) killed busy executors too: their
      tasks ran again.

    Every call reconciles: executors that register after a decrease (asked for before it,
    started late) are removed as surplus on the next call; executors already told to go are
    not counted (Spark's REST API shows them for some seconds more)."""

    def __init__(self, spark: Any, rest: SparkRest, *, cores_per_executor: int,
                 graceful: bool | None = None) -> None:  # fmt: skip
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
        if graceful is None:
            conf = spark.sparkContext.getConf()
            graceful = str(conf.get("spark.decommission.enabled", "false")).lower() == "true"
        self.graceful = graceful
        self.requested: int | None = None
        self.leaving: set[str] = set()
        """Executors told to go that the REST API still shows."""
        self.removed = 0
        """Executors removed (killed or decommissioned) so far."""

    def set_cores(self, cores: int) -> int:
        executors = max(1, math.ceil(cores / self.cores_per_executor))
        running = self._rest.executors()
        self.leaving &= {str(e["id"]) for e in running}
        staying = [e for e in running if str(e["id"]) not in self.leaving]
        removed = 0
        if len(staying) > executors:
            idlest = sorted(staying, key=lambda e: int(e.get("activeTasks", 0)))
            removed = self._remove([str(e["id"]) for e in idlest], len(staying) - executors)
        if executors != self.requested or removed:
            sc = self._spark.sparkContext
            jvm = sc._jvm
            empty = getattr(getattr(jvm.scala.collection.immutable, "Map$"), "MODULE$").empty()
            if not sc._jsc.sc().requestTotalExecutors(executors, 0, empty):
                raise ActuatorUnavailable(f"Spark refused a total of {executors} executors")
            self.requested = executors
        return executors * self.cores_per_executor

    def _remove(self, candidates: Sequence[str], count: int) -> int:
        """Remove up to ``count`` of ``candidates`` (in order); the number removed."""
        sc = self._spark.sparkContext
        jvm = sc._jvm
        backend = sc._jsc.sc().schedulerBackend()
        done = 0
        for ident in candidates:
            if done >= count:
                break
            if self.graceful:
                info = jvm.org.apache.spark.scheduler.ExecutorDecommissionInfo(
                    "dynaspark: fewer cores", jvm.scala.Option.apply(None))  # fmt: skip
                pair = sc._gateway.new_array(jvm.scala.Tuple2, 1)
                pair[0] = jvm.scala.Tuple2(ident, info)
                gone = backend.decommissionExecutors(pair, True, False)
            else:
                ids = jvm.PythonUtils.toSeq(jvm.java.util.ArrayList([ident]))
                gone = backend.killExecutors(ids, True, False, False)  # force=false: idle only
            if int(gone.size()) > 0:
                self.leaving.add(ident)
                self.removed += 1
                done += 1
                log.debug("executor %s %s", ident,
                          "decommissioned" if self.graceful else "killed")  # fmt: skip
        return done

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


# --- task slots: a TaskResourceProfile per decision ---------------------------------------


def task_cpus(slots: int, *, cores_per_executor: int, fractional: bool = True) -> float:
    """The CPUs per task (``TaskResourceRequests.cpus``) that leave at least ``slots`` task
    slots on an executor of ``cores_per_executor`` cores, and as few as can be expressed:
    ``cores/slots`` rounded down to Spark's 9 decimals when ``fractional`` (Spark 4.3 and later
    take fractional amounts; rounding down keeps ``floor(cores/cpus) == slots`` exact), else the
    largest whole number ``cores // slots``. ``slots`` is clamped to ``[1, cores_per_executor]``:
    one task per core is Spark's default, and fewer cores than one per task is not a throttle.
    Raises ``ValueError`` when ``cores_per_executor < 1``."""
    if cores_per_executor < 1:
        raise ValueError(f"cores_per_executor must be >= 1, got {cores_per_executor}")
    slots = min(max(1, slots), cores_per_executor)
    if not fractional:
        return float(cores_per_executor // slots)
    return float((Decimal(cores_per_executor) / slots).quantize(_CPU_STEP, rounding=ROUND_DOWN))


def task_slots(cpus: float, *, executors: int, cores_per_executor: int) -> int:
    """Tasks that run at once on ``executors`` executors of ``cores_per_executor`` cores when
    each takes ``cpus`` CPUs: ``executors · floor(cores / cpus)``, in Spark's exact decimal
    arithmetic (``TaskSchedulerImpl`` offers a task while the executor's free CPUs cover it).
    Raises ``ValueError`` for ``cpus <= 0``."""
    if cpus <= 0:
        raise ValueError(f"cpus must be > 0, got {cpus}")
    amount = Decimal(repr(cpus)).quantize(_CPU_STEP)
    return max(0, executors) * int(Decimal(cores_per_executor) // amount)


def _fractional_cpus() -> bool:
    """Whether this PySpark takes fractional ``cpus`` (4.3 and later)."""
    import pyspark

    major, minor = (int(p) for p in pyspark.__version__.split(".")[:2])
    return (major, minor) >= (4, 3)


class TaskSlots:
    """Throttles the stages that ask for it, without new executors: a ``TaskResourceProfile``
    whose ``cpus`` per task leaves the wanted number of task slots (an executor of ``c`` cores
    runs ``floor(c/cpus)`` of its tasks at once). Spark docs, "Stage Level Scheduling Overview".

    **It acts only on stages that attach its profile** when they are defined: ``apply(rdd)``
    (``RDD.withResources``) or ``df.mapInPandas(f, schema, **slots.map_kwargs())`` (also
    ``mapInArrow``). hyperfleet's own pipelines do; the stages of an unmodified script are not
    throttled by it (use :class:`ExecutorTotal` for those). A stage takes the profile current
    when the RDD or DataFrame is defined; a later :meth:`set_cores` acts on stages defined
    after it.

    What Spark 4 requires (``ResourceProfileManager.isSupported`` / ``canBeScheduled``):

    - a cluster master: standalone (``spark://``), ``local-cluster``, YARN or Kubernetes.
      ``local[N]`` refuses the profile (``withResources`` raises ``SparkException``:
      "TaskResourceProfiles are only supported for Standalone, Yarn and Kubernetes cluster
      for now when dynamic allocation is disabled"); refused here with :class:`ActuatorUnavailable`.
    - dynamic allocation **off** (``spark.dynamicAllocation.enabled=false``, the default).
      With it on, Spark treats the profile as a full resource profile: its tasks run only on
      executors started for that profile (``canBeScheduled``), which is more executors, not a
      throttle; refused here with :class:`ActuatorUnavailable`.
    - more than one core per executor to have anything to throttle: with one core, the only
      profile is one task per core (``cpus`` above the executor's cores never schedules: a
      ``cpus(3)`` stage on 2-core executors still waited after 15 s, measured; :func:`task_cpus`
      never asks for it).

    Measured on ``local-cluster[1,2,1024]`` (one executor, two cores, Spark 4.3): default
    profile 2 tasks at once, ``cpus(2)`` 1, ``cpus(1.5)`` 1; ``cpus(0.5)`` runs 4 at once on
    2 cores (fractions below 1 oversubscribe; never asked for here).

    :meth:`set_cores` spreads the slots over the live executors (REST ``/executors``):
    ``ceil(cores / executors)`` per executor, between 1 and ``cores_per_executor``, and
    returns the slots that leaves (``executors × slots per executor``). :meth:`observed_cores`:
    tasks running now over all stages (REST), the task slots in use.
    """

    def __init__(self, spark: Any, rest: SparkRest, *, cores_per_executor: int) -> None:
        sc = spark.sparkContext
        master = str(sc.master)
        if not deadline_control_available(master):
            raise ActuatorUnavailable(f"master {master} refuses task resource profiles: use "
                                      "local-cluster[N,cores,mem], spark://, k8s:// or yarn")  # fmt: skip
        if str(sc.getConf().get("spark.dynamicAllocation.enabled", "false")).lower() == "true":
            raise ActuatorUnavailable("with dynamic allocation on, Spark starts executors for a "
                                      "task resource profile instead of throttling: set "
                                      "spark.dynamicAllocation.enabled=false")  # fmt: skip
        if cores_per_executor < 1:
            raise ValueError(f"cores_per_executor must be >= 1, got {cores_per_executor}")
        if cores_per_executor == 1:
            log.warning("one core per executor: TaskSlots cannot throttle below one task per "
                        "executor")  # fmt: skip
        self._spark = spark
        self._rest = rest
        self.cores_per_executor = cores_per_executor
        self.fractional = _fractional_cpus()
        self.cpus: float = 1.0
        """CPUs per task of the current profile."""
        self._profiles: dict[float, Any] = {}

    def set_cores(self, cores: int) -> int:
        executors = max(1, len(self._rest.executors()))
        per_executor = math.ceil(max(1, cores) / executors)
        self.cpus = task_cpus(per_executor, cores_per_executor=self.cores_per_executor,
                              fractional=self.fractional)  # fmt: skip
        slots = task_slots(self.cpus, executors=executors,
                           cores_per_executor=self.cores_per_executor)  # fmt: skip
        log.debug("task slots: %d asked, %d executors, cpus per task %s, %d slots",
                  cores, executors, self.cpus, slots)  # fmt: skip
        return slots

    def profile(self) -> Any:
        """The current ``pyspark.resource.ResourceProfile`` (a task profile: ``cpus`` only).
        One profile per amount, built once (Spark registers each profile it is given)."""
        if self.cpus not in self._profiles:
            from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

            requests = TaskResourceRequests().cpus(self.cpus)
            self._profiles[self.cpus] = ResourceProfileBuilder().require(requests).build
        return self._profiles[self.cpus]

    def apply(self, rdd: Any) -> Any:
        """``rdd.withResources(self.profile())``: ``rdd``'s stage runs under the current profile."""
        return rdd.withResources(self.profile())

    def map_kwargs(self) -> dict[str, Any]:
        """``{"profile": ...}`` for ``DataFrame.mapInPandas`` / ``mapInArrow``."""
        return {"profile": self.profile()}

    def observed_cores(self) -> int:
        return _running_tasks(self._rest)


# --- shuffle partitions --------------------------------------------------------------------


def shuffle_partitions(cores: int, *, waves: int = 2) -> int:
    """Partitions for a shuffle meant to run on ``cores`` cores in ``waves`` waves:
    ``cores × waves``, at least 1. Two to three tasks per core is Spark's tuning advice
    ("Tuning Spark", Level of Parallelism): whole waves keep every core busy to the end, and
    more than one lets a straggler's core take another task. Raises ``ValueError`` for
    ``waves < 1``."""
    if waves < 1:
        raise ValueError(f"waves must be >= 1, got {waves}")
    return max(1, cores) * waves


class ShufflePartitions:
    """The number of tasks later SQL shuffles are cut into: ``spark.sql.shuffle.partitions``,
    which Spark reads when a query is planned, so a change applies to the DataFrame actions run
    after it (including DataFrames defined before it). It does not apply to RDD shuffles
    (``reduceByKey`` and others take ``spark.default.parallelism`` or their parent's count) nor
    to explicit counts (``repartition(n)``).

    Adaptive query execution (on by default) coalesces small shuffle partitions after the map
    side ran (measured: 7 set, 1 ran, for 10 000 rows), which would undo the decision, so this
    actuator turns ``spark.sql.adaptive.coalescePartitions.enabled`` off for the session unless
    ``coalesce=True`` (then the count set is an upper bound). AQE's other rewrites (join
    strategy, skew splits, which may add tasks) stay on. It acts on any master, ``local[N]``
    included: it is a setting, not a resource.

    :meth:`set_cores` sets ``cores × waves`` partitions and returns ``cores``;
    :meth:`observed_cores`: tasks running now over all stages (REST).
    """

    def __init__(self, spark: Any, rest: SparkRest, *, waves: int = 2,
                 coalesce: bool = False) -> None:  # fmt: skip
        if waves < 1:
            raise ValueError(f"waves must be >= 1, got {waves}")
        self._spark = spark
        self._rest = rest
        self.waves = waves
        if not coalesce:
            spark.conf.set("spark.sql.adaptive.coalescePartitions.enabled", "false")

    @property
    def partitions(self) -> int:
        """``spark.sql.shuffle.partitions`` as the session has it now."""
        return int(self._spark.conf.get("spark.sql.shuffle.partitions"))

    def set_cores(self, cores: int) -> int:
        cores = max(1, cores)
        partitions = shuffle_partitions(cores, waves=self.waves)
        self._spark.conf.set("spark.sql.shuffle.partitions", str(partitions))
        log.debug("shuffle partitions: %d (%d cores × %d waves)", partitions, cores, self.waves)
        return cores

    def observed_cores(self) -> int:
        return _running_tasks(self._rest)
