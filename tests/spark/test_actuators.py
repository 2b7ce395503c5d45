"""The executor-total actuator on a real ``local-cluster`` (two workers of one core), verified
through Spark's REST API; ``local[N]`` refused."""

from __future__ import annotations

import pytest

from cloud.dynaspark.actuators import ActuatorUnavailable, ExecutorTotal
from cloud.dynaspark.rest import SparkRest
from cloud.dynaspark.session import start_session


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


def test_local_mode_is_refused_with_the_reason() -> None:
    spark = start_session("local[1]", app_name="local refusal")
    try:
        rest = SparkRest(str(spark.sparkContext.uiWebUrl))
        with pytest.raises(ActuatorUnavailable, match="local-cluster"):
            ExecutorTotal(spark, rest, cores_per_executor=1)
    finally:
        spark.stop()
