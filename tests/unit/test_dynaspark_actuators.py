"""dynaSpark's actuator arithmetic (pure): CPUs per task for a number of task slots, the slots a
profile leaves, and shuffle partitions from cores and waves."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.dynaspark import shuffle_partitions, task_cpus, task_slots


@given(cores=st.integers(1, 256), data=st.data())
def test_fractional_cpus_leave_exactly_the_slots_asked(cores: int, data: st.DataObject) -> None:
    slots = data.draw(st.integers(1, cores))
    cpus = task_cpus(slots, cores_per_executor=cores)
    assert task_slots(cpus, executors=1, cores_per_executor=cores) == slots
    assert task_slots(cpus, executors=3, cores_per_executor=cores) == 3 * slots


@given(cores=st.integers(1, 256), data=st.data())
def test_whole_cpus_leave_the_fewest_slots_not_below_the_ask(
    cores: int, data: st.DataObject
) -> None:
    slots = data.draw(st.integers(1, cores))
    cpus = task_cpus(slots, cores_per_executor=cores, fractional=False)
    assert cpus == int(cpus) >= 1
    assert task_slots(cpus, executors=1, cores_per_executor=cores) >= slots
    # One more CPU per task would leave fewer slots than asked.
    assert task_slots(cpus + 1, executors=1, cores_per_executor=cores) < slots


def test_cpus_for_the_measured_cluster_and_the_clamps() -> None:
    assert task_cpus(1, cores_per_executor=2) == 2.0  # one task at once on a 2-core executor
    assert task_cpus(2, cores_per_executor=2) == 1.0  # Spark's default
    assert task_cpus(3, cores_per_executor=8) == 2.666666666  # rounded down, not to ...667
    assert task_slots(2.666666667, executors=1, cores_per_executor=8) == 2  # why: rounded up
    assert task_cpus(3, cores_per_executor=8, fractional=False) == 2.0  # 4 slots, not 3
    assert task_cpus(0, cores_per_executor=4) == 4.0  # at least one slot
    assert task_cpus(9, cores_per_executor=4) == 1.0  # never oversubscribed
    with pytest.raises(ValueError, match="cores_per_executor"):
        task_cpus(1, cores_per_executor=0)
    with pytest.raises(ValueError, match="cpus"):
        task_slots(0.0, executors=1, cores_per_executor=2)


def test_shuffle_partitions_are_whole_waves() -> None:
    assert shuffle_partitions(4) == 8
    assert shuffle_partitions(3, waves=3) == 9
    assert shuffle_partitions(0, waves=2) == 2
    with pytest.raises(ValueError, match="waves"):
        shuffle_partitions(4, waves=0)
