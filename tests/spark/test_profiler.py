"""dynaSpark against a real Spark session: profiling an unmodified PySpark script through the
REST API, stage keys that survive between runs, a script's own stop() held back, failures."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cloud.dynaspark.errors import ProfileError
from cloud.dynaspark.profiler import profile_from_records, profile_script
from cloud.dynaspark.rest import StageRecord
from cloud.dynaspark.session import ScriptError, deadline_control_available

MASTER = "local[2]"  # profiling needs no executor requests; local-cluster is for the actuators

SCRIPT = textwrap.dedent("""
    import sys
    from pyspark.sql import SparkSession, functions as F

    spark = SparkSession.builder.appName("third-party job").getOrCreate()
    n = int(sys.argv[1])
    df = spark.range(n).withColumn("k", F.col("id") % 7)
    counts = df.groupBy("k").agg(F.count("*").alias("c")).collect()
    assert sum(r["c"] for r in counts) == n
    print("rows", df.filter(F.col("k") == 3).count())
    spark.stop()
""")


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("job") / "job.py"
    path.write_text(SCRIPT)
    return path


def test_local_masters_cannot_take_deadline_control() -> None:
    assert not deadline_control_available("local[4]")
    assert not deadline_control_available("local")
    assert deadline_control_available("local-cluster[2,1,1024]")
    assert deadline_control_available("spark://host:7077")


def test_profile_of_an_unmodified_script_keys_stages_by_call_site(script: Path) -> None:
    first = profile_script(str(script), ["20000"], master=MASTER)
    assert len(first.stages) >= 2
    assert all(s.tasks >= 1 and s.duration_s >= 0 for s in first.stages)
    # Named by call site: the script's line where Spark knows it (AQE's own stages are named
    # after Spark internals; their position still keys them).
    assert "job.py:" in first.stages[0].name
    assert any(s.records_in > 0 for s in first.stages)
    assert first.wall_s > 0
    assert first.cores == 2  # local[2]: the driver's two task slots
    # The same script again (another size): the same stage keys, whatever Spark's ids were.
    second = profile_script(str(script), ["40000"], master=MASTER)
    assert [s.key for s in second.stages] == [s.key for s in first.stages]
    assert second.matches([s.key for s in first.stages]) == []


def test_a_failing_or_missing_script_is_a_script_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ScriptError, match="boom"):
        profile_script(str(bad), master=MASTER)
    with pytest.raises(ScriptError, match="no such script"):
        profile_script(str(tmp_path / "absent.py"), master=MASTER)
    idle = tmp_path / "idle.py"
    idle.write_text("x = 1\n")
    with pytest.raises(ProfileError, match="no Spark stage"):
        profile_script(str(idle), master=MASTER)


def test_profile_from_records_orders_by_completion_and_numbers_repeated_call_sites() -> None:
    def rec(stage_id: int, name: str, done: float) -> StageRecord:
        return StageRecord(stage_id=stage_id, attempt=0, name=name, tasks=4, submitted_s=done - 1,
                           completed_s=done, task_s=3.0, records_in=100, records_out=10,
                           bytes_in=0, bytes_out=0)  # fmt: skip

    p = profile_from_records("s.py", [rec(7, "map at s.py:3", 20.0), rec(2, "map at s.py:3", 10.0),
                                      rec(5, "count at s.py:9", 15.0)], cores=2, wall_s=30.0)  # fmt: skip
    assert [s.key for s in p.stages] == ["map at s.py:3#0", "count at s.py:9#0", "map at s.py:3#1"]
    assert p.stages[0].duration_s == pytest.approx(1.0)
    assert p.stages[0].nominal_rate == pytest.approx(100 / 3.0)


def test_cli_writes_the_profile_and_refuses_bad_conf(script: Path, tmp_path: Path) -> None:
    from hyperfleet.cli import main

    out = tmp_path / "job.profile.json"
    status = main(["spark", "profile", str(script), "--master", MASTER, "--out", str(out),
                   "--", "5000"])  # fmt: skip
    assert status == 0
    from cloud.dynaspark import JobProfile

    profile = JobProfile.loads(out.read_text())
    assert profile.script == str(script)
    assert len(profile.stages) >= 2
    assert main(["spark", "profile", str(script), "--conf", "nonsense"]) == 64
