"""The actuators on real Spark sessions, read back through Spark's REST API: executor totals on a
``local-cluster`` of two one-core workers; task slots (a task resource profile) and shuffle
partitions on ``local-cluster[1,2,1024]`` (one executor of two cores); ``local[1]`` refused
where an actuator cannot act there, served where it can."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.dynaspark.actuators import (
    GRACEFUL_CONF,
    ActuatorUnavailable,
    ExecutorTotal,
    ShufflePartitions,
    TaskSlots,
)
from cloud.dynaspark.rest import SparkRest
from cloud.dynaspark.session import start_session

REST_TIMEOUT_S = 30.0  # the machine is shared: the driver's UI can be slow to answer


def test_executor_totals_go_down_and_up_on_local_cluster() -> None:
    spark = start_session("local-cluster[2,1,1024]", app_name="actuator test")
    try:
        rest = SparkRest(str(spark.sparkContext.uiWebUrl))
        actuator = ExecutorTotal(spark, rest, cores_per_executor=1)
        assert actuator.wait_for(2, timeout_s=60)  # the application takes both workers
        assert actuator.set_cores(1) == 1
        assert actuator.wait_for(1, timeout_s=30)
        assert actuator.set_cores(2) == 2
        assert actuator.wait_for(2, timeout_s=30)
        # Work still runs on what is there.
        assert spark.range(1000).count() == 1000
    finally:
        spark.stop()


def _running(rest: SparkRest) -> int:
    stages = rest.get(f"/applications/{rest.app_id}/stages?status=active&details=true"
                      "&taskStatus=RUNNING")  # fmt: skip
    return sum(1 for st in stages for t in (st.get("tasks") or {}).values()
               if t.get("status") == "RUNNING")  # fmt: skip


def test_a_graceful_decrease_keeps_the_shuffle_files_of_the_executor_that_goes() -> None:
    spark = start_session("local-cluster[2,1,1024]", app_name="graceful test", conf=GRACEFUL_CONF)
    try:
        sc = spark.sparkContext
        rest = SparkRest(str(sc.uiWebUrl), timeout_s=REST_TIMEOUT_S)
        actuator = ExecutorTotal(spark, rest, cores_per_executor=1)
        assert actuator.graceful
        assert actuator.wait_for(2, timeout_s=60)
        sums = (
            sc.parallelize(range(20_000), 8)
            .map(lambda x: (x % 10, x))
            .reduceByKey(lambda a, b: a + b)
        )
        assert sums.count() == 10  # map outputs on both executors
        seen = _stage_ids(rest)
        assert actuator.set_cores(1) == 1
        assert actuator.removed == 1
        assert actuator.wait_for(1, timeout_s=60)
        assert sums.count() == 10
        # The map stage was skipped: its outputs moved to the executor that stayed. A killed
        # executor's outputs are lost, and the map stage runs again (measured: 4 of 8 tasks).
        again = _stages_since(rest, seen)
        assert again
        assert all(s["numTasks"] == 8 for s in again)
        skipped = rest.get(f"/applications/{rest.app_id}/stages?status=skipped")
        assert any(int(s["stageId"]) not in seen for s in skipped)
        # Later calls reconcile without removing more than the surplus.
        assert actuator.set_cores(1) == 1
        assert actuator.removed == 1
    finally:
        spark.stop()


def test_without_decommissioning_only_idle_executors_are_killed() -> None:
    spark = start_session("local-cluster[2,1,1024]", app_name="idle kill test")
    try:
        sc = spark.sparkContext
        rest = SparkRest(str(sc.uiWebUrl), timeout_s=REST_TIMEOUT_S)
        actuator = ExecutorTotal(spark, rest, cores_per_executor=1)
        assert not actuator.graceful
        assert actuator.wait_for(2, timeout_s=60)

        def slow(rows: Iterable[Any]) -> Iterator[int]:
            import time as _time

            _time.sleep(12)
            yield sum(1 for _ in rows)

        done: list[int] = []
        job = threading.Thread(target=lambda: done.append(
            sum(sc.parallelize(range(2), 2).mapPartitions(slow).collect())))  # fmt: skip
        job.start()
        deadline = time.monotonic() + 60
        while _running(rest) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _running(rest) == 2
        assert actuator.set_cores(1) == 1
        assert actuator.removed == 0  # both busy: nothing killed, no task lost
        job.join()
        assert done == [2]
        assert actuator.set_cores(1) == 1  # idle now: one goes
        assert actuator.removed == 1
        assert actuator.wait_for(1, timeout_s=60)
    finally:
        spark.stop()


def _stages_since(rest: SparkRest, seen: set[int]) -> list[dict[str, Any]]:
    rows = rest.get(f"/applications/{rest.app_id}/stages?status=complete")
    return sorted((r for r in rows if int(r["stageId"]) not in seen), key=lambda r: r["stageId"])


def _stage_ids(rest: SparkRest) -> set[int]:
    return {int(r["stageId"]) for r in rest.get(f"/applications/{rest.app_id}/stages")}


def _wait_for_stage(
    rest: SparkRest, seen: set[int], match: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The first stage completed since ``seen`` that ``match``es (REST; the listener may show a
    stage's end a little after the action returns)."""
    deadline = time.monotonic() + REST_TIMEOUT_S
    while True:
        stages = _stages_since(rest, seen)
        found = [r for r in stages if match(r)]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no such stage among {stages}")
        time.sleep(0.5)


def _groupby_tasks(rest: SparkRest, df: Any, *, keys: int) -> int:
    """Runs a groupBy on ``df``; the task count of the stage that read its shuffle."""
    seen = _stage_ids(rest)
    assert len(df.groupBy("k").count().collect()) == keys
    reader = _wait_for_stage(rest, seen, lambda r: int(r.get("shuffleReadRecords", 0)) > 0)
    return int(reader["numTasks"])


def test_local_mode_refuses_executors_and_task_profiles_but_takes_partitions() -> None:
    spark = start_session("local[1]", app_name="local refusal")
    try:
        rest = SparkRest(str(spark.sparkContext.uiWebUrl), timeout_s=REST_TIMEOUT_S)
        with pytest.raises(ActuatorUnavailable, match="local-cluster"):
            ExecutorTotal(spark, rest, cores_per_executor=1)
        with pytest.raises(ActuatorUnavailable, match="local-cluster"):
            TaskSlots(spark, rest, cores_per_executor=1)
        partitions = ShufflePartitions(spark, rest, waves=3)
        assert partitions.set_cores(1) == 1
        assert partitions.partitions == 3
        df = spark.range(0, 2000, 1, 2).selectExpr(
            "id", "id % 10 AS k"
        )  # one partition: no shuffle
        assert _groupby_tasks(rest, df, keys=10) == 3
    finally:
        spark.stop()


def _probe(directory: str, wait_s: float) -> Callable[[Iterable[Any]], Iterator[int]]:
    """A partition function that reports how many tasks ran at once with it: each task puts a
    file in ``directory`` (shared: the executor runs on this machine), waits up to ``wait_s``
    for another task's file, and yields the most files it saw (itself included)."""

    def run(rows: Iterable[Any]) -> Iterator[int]:
        import os
        import time
        import uuid

        for _ in rows:
            pass
        me = os.path.join(directory, uuid.uuid4().hex)
        open(me, "w").close()
        seen, deadline = 1, time.monotonic() + wait_s
        try:
            while time.monotonic() < deadline and seen < 2:
                seen = max(seen, len(os.listdir(directory)))
                time.sleep(0.02)
            time.sleep(0.2)  # let a peer that just started see this task too
        finally:
            os.unlink(me)
        yield seen

    return run


@pytest.fixture(scope="class")
def cluster() -> Iterator[Any]:
    """A ``local-cluster[1,2,1024]`` session for one test class (stopped at the class's end, so
    it never meets another session in this process)."""
    spark = start_session("local-cluster[1,2,1024]", app_name="task slots test")
    try:
        yield spark
    finally:
        spark.stop()


@pytest.fixture(scope="class")
def cluster_rest(cluster: Any) -> SparkRest:
    rest = SparkRest(str(cluster.sparkContext.uiWebUrl), timeout_s=REST_TIMEOUT_S)
    executors = ExecutorTotal(cluster, rest, cores_per_executor=2)
    assert executors.wait_for(2, timeout_s=90), "the executor did not register"
    return rest


class TestOnOneExecutorOfTwoCores:
    """The task-slot and partition actuators on one ``local-cluster[1,2,1024]`` session."""

    def test_a_task_profile_of_two_cpus_halves_concurrency(
        self, cluster: Any, cluster_rest: SparkRest, tmp_path: Path
    ) -> None:
        spark, rest = cluster, cluster_rest
        sc = spark.sparkContext
        slots = TaskSlots(spark, rest, cores_per_executor=2)
        assert slots.set_cores(5) == 2  # never above the cores there are
        assert slots.cpus == 1.0
        assert slots.set_cores(1) == 1
        assert slots.cpus == 2.0
        # Default profile: the two tasks meet (each waits up to 10 s for the other).
        default = _probe(str(tmp_path), wait_s=10.0)
        assert max(sc.parallelize(range(4), 2).mapPartitions(default).collect()) == 2
        # cpus(2): each task waits 2 s for the other, and never meets it.
        probe = _probe(str(tmp_path), wait_s=2.0)

        seen = _stage_ids(rest)
        result: list[int] = []
        job = threading.Thread(target=lambda: result.extend(
            slots.apply(sc.parallelize(range(4), 2)).mapPartitions(probe).collect()))  # fmt: skip
        job.start()
        observed = []
        while job.is_alive():
            observed.append(slots.observed_cores())
            time.sleep(0.2)
        job.join()
        assert len(result) == 2
        assert max(result) == 1  # one task at a time with cpus(2)
        assert 1 in observed  # the running task, as the REST API shows it
        assert slots.observed_cores() == 0
        stage = _wait_for_stage(rest, seen, lambda r: True)
        assert stage["resourceProfileId"] == slots.profile().id

    def test_map_in_pandas_stages_take_the_profile(
        self, cluster: Any, cluster_rest: SparkRest
    ) -> None:
        spark, rest = cluster, cluster_rest
        slots = TaskSlots(spark, rest, cores_per_executor=2)
        slots.set_cores(1)

        def passthrough(batches: Iterable[Any]) -> Iterator[Any]:
            yield from batches

        seen = _stage_ids(rest)
        df = spark.range(0, 100, 1, 2).mapInPandas(passthrough, "id long", **slots.map_kwargs())
        assert df.count() == 100
        profile_id = slots.profile().id
        _wait_for_stage(rest, seen, lambda r: r["resourceProfileId"] == profile_id)
        # The same amount is the same profile: built once.
        assert slots.profile() is slots.profile()

    def test_shuffle_partitions_set_the_tasks_of_later_groupbys(
        self, cluster: Any, cluster_rest: SparkRest
    ) -> None:
        spark, rest = cluster, cluster_rest
        df = spark.range(10_000).selectExpr("id", "id % 100 AS k")  # defined before the setting
        partitions = ShufflePartitions(spark, rest, waves=3)
        assert spark.conf.get("spark.sql.adaptive.coalescePartitions.enabled") == "false"
        assert partitions.set_cores(2) == 2
        assert _groupby_tasks(rest, df, keys=100) == 6  # AQE would have coalesced these to 1
        partitions.set_cores(1)
        assert _groupby_tasks(rest, df, keys=100) == 3
