"""The runner's pure parts: live stages keyed as the profiler keys them, the report's
arithmetic and JSON, the cluster's cores from the master, finding the profile, and what
``hyperfleet spark run`` refuses before Spark starts (bad numbers, no profile, an infeasible
deadline)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.dynaspark import InfeasibleDeadline, JobProfile, ProfileError, StageProfile, stage_keys
from cloud.dynaspark.live import LiveStage, StageKeyer, site
from cloud.dynaspark.report import (
    RunReport,
    Sample,
    StageOutcome,
    deadline_error_pct,
    held_integral,
    held_mean,
    write_png,
)
from cloud.dynaspark.runner import (
    ProfileNotFound,
    RunSettings,
    cluster_cores,
    find_profile,
    prepare,
    profile_candidates,
)
from hyperfleet.cli import main


def live(sid: int, name: str, status: str, done_at: float = 0.0, tasks: int = 4,
         completed: int = 0) -> LiveStage:  # fmt: skip
    return LiveStage(stage_id=sid, name=name, status=status, tasks=tasks,
                     completed_tasks=tasks if status == "COMPLETE" else completed,
                     completed_s=done_at)  # fmt: skip


# --- live stages -> profile keys ----------------------------------------------------------


def test_keyer_numbers_repeated_call_sites_and_reports_events_in_order() -> None:
    keyer = StageKeyer()
    events = keyer.observe([live(0, "map at a.py:3", "ACTIVE", completed=1),
                            live(1, "count at a.py:9", "PENDING")])  # fmt: skip
    assert [(e.kind, e.key) for e in events] == [("started", "map at a.py:3#0")]
    assert keyer.running["map at a.py:3#0"].progress == pytest.approx(0.25)
    assert keyer.running["map at a.py:3#0"].tasks_left == 3
    # Stage 0 completes; 1 was skipped (never numbered); 2, as short as a period, started and
    # completed between two polls; 3 runs: the completion of 0 first, then 2, then 3.
    events = keyer.observe([
        live(0, "map at a.py:3", "COMPLETE", 5.0), live(1, "count at a.py:9", "SKIPPED"),
        live(2, "map at a.py:3", "COMPLETE", 6.0), live(3, "count at a.py:9", "ACTIVE"),
    ])  # fmt: skip
    assert [(e.kind, e.key) for e in events] == [
        ("completed", "map at a.py:3#0"), ("started", "map at a.py:3#1"),
        ("completed", "map at a.py:3#1"), ("started", "count at a.py:9#0"),
    ]  # fmt: skip
    assert list(keyer.running) == ["count at a.py:9#0"]
    assert keyer.observe([live(0, "map at a.py:3", "COMPLETE", 5.0)]) == []  # nothing new


def test_keyer_numbers_stages_first_seen_complete_by_completion_time() -> None:
    keyer = StageKeyer()
    keyer.observe(
        [live(5, "x at j.py:1", "COMPLETE", 9.0), live(4, "x at j.py:1", "COMPLETE", 8.0)]
    )
    assert keyer.keys == {4: "x at j.py:1#0", 5: "x at j.py:1#1"}
    assert keyer.rekeyed([live(5, "x at j.py:1", "COMPLETE", 9.0),
                          live(4, "x at j.py:1", "COMPLETE", 8.0)]) == {}  # fmt: skip


def test_keyer_tells_when_concurrent_same_site_stages_finish_out_of_order() -> None:
    keyer = StageKeyer()
    keyer.observe([live(1, "j at q.py:7", "ACTIVE"), live(2, "j at q.py:7", "ACTIVE")])
    done = [live(1, "j at q.py:7", "COMPLETE", 9.0), live(2, "j at q.py:7", "COMPLETE", 8.0)]
    keyer.observe(done)
    assert keyer.rekeyed(done) == {1: ("j at q.py:7#0", "j at q.py:7#1"),
                                   2: ("j at q.py:7#1", "j at q.py:7#0")}  # fmt: skip


@given(st.lists(st.tuples(st.sampled_from(["a at s.py:1", "b at s.py:2", "c at S.java:3"]),
                          st.booleans(), st.booleans()), min_size=1, max_size=12))  # fmt: skip
def test_sequential_stages_get_the_profilers_keys_however_they_are_polled(
    stages: list[tuple[str, bool, bool]],
) -> None:
    """Stages one after another, each polled while running or not (too short), and a poll
    falling between any two: the live keys are the profiler's (stage_keys, completion order)."""
    keyer = StageKeyer()
    history: list[LiveStage] = []
    for sid, (name, seen_running, poll_after) in enumerate(stages):
        if seen_running:
            keyer.observe([*history, live(sid, name, "ACTIVE")])
        history.append(live(sid, name, "COMPLETE", float(sid)))
        if poll_after:
            keyer.observe(history)
    keyer.observe(history)
    assert [keyer.keys[i] for i in range(len(stages))] == stage_keys(n for n, _, _ in stages)
    assert keyer.rekeyed(history) == {}


def test_keys_match_the_profile_whatever_path_the_script_was_run_by() -> None:
    assert site("count at /home/u/jobs/prep.py:9#1") == "count at prep.py:9#1"
    assert site("collect at jobs/prep.py:22#0") == "collect at prep.py:22#0"
    java = "$anonfun$withThreadLocalCaptured$1 at CompletableFuture.java:1768#0"
    assert site(java) == java
    keyer = StageKeyer(["count at jobs/prep.py:9#0", java])
    keyer.observe([live(0, "count at /abs/jobs/prep.py:9", "ACTIVE"),
                   live(1, "$anonfun$withThreadLocalCaptured$1 at CompletableFuture.java:1768",
                        "ACTIVE"), live(2, "other at /abs/jobs/prep.py:11", "ACTIVE")])  # fmt: skip
    assert keyer.keys == {0: "count at jobs/prep.py:9#0", 1: java,
                          2: "other at /abs/jobs/prep.py:11#0"}  # fmt: skip


# --- report arithmetic ----------------------------------------------------------------------


def sample(t: float, observed: int, asked: int | None = None) -> Sample:
    return Sample(t_s=t, cores_observed=observed, cores_asked=asked)


def test_core_seconds_hold_each_sample_until_the_next() -> None:
    samples = [sample(1.0, 2), sample(3.0, 1), sample(6.0, 4)]
    # 2 cores from 0 (the first sample's value before it) to 3, 1 core to 6, 4 cores to 7.
    assert held_integral(samples, lambda s: s.cores_observed, 0.0, 7.0) == (6 + 3 + 4, 7.0)
    assert held_integral(samples, lambda s: s.cores_observed, 2.0, 4.0) == (2 + 1, 2.0)
    assert held_integral([], lambda s: s.cores_observed, 0.0, 7.0) == (0.0, 0.0)
    assert held_integral(samples, lambda s: s.cores_observed, 5.0, 5.0) == (0.0, 0.0)
    assert held_mean(samples, lambda s: s.cores_observed, 2.0, 4.0) == pytest.approx(1.5)
    assert held_mean(samples, lambda s: s.cores_observed, 4.0, 4.0) == 1.0  # an instant
    # Unasked periods cover nothing: the mean is over the asked ones only.
    mixed = [sample(0.0, 2, None), sample(2.0, 2, 3)]
    assert held_mean(mixed, lambda s: s.cores_asked, 0.0, 4.0) == pytest.approx(3.0)
    assert held_mean([sample(0.0, 2)], lambda s: s.cores_asked, 0.0, 4.0) is None


def test_deadline_error_is_signed_percent_of_the_deadline() -> None:
    assert deadline_error_pct(110.0, 100.0) == pytest.approx(10.0)
    assert deadline_error_pct(95.0, 100.0) == pytest.approx(-5.0)
    with pytest.raises(ValueError, match="positive"):
        deadline_error_pct(1.0, 0.0)


def report() -> RunReport:
    outcome = StageOutcome(key="a at s.py:1#0", stage_id=0, tasks=4, started_s=0.5,
                           completed_s=4.0, planned_deadline_s=3.5, planned_cores=1,
                           cores_asked=1.0, cores_observed=1.5)  # fmt: skip
    timeline = (Sample(t_s=0.0, cores_observed=2, cores_asked=1, job_progress=0.0,
                       stages={"a at s.py:1#0": 0.0}),
                Sample(t_s=4.0, cores_observed=1, cores_asked=1, job_progress=1.0))  # fmt: skip
    return RunReport(script="s.py", master="local-cluster[2,1,1024]", control=True,
                     deadline_s=5.0, finish_s=4.0, core_seconds=8.0, max_cores=2, period_s=1.0,
                     feasible=True, actuations=1, stages=(outcome,), timeline=timeline)  # fmt: skip


def test_report_json_has_the_verdict_and_the_plan_against_what_happened(tmp_path: Path) -> None:
    doc = json.loads(json.dumps(report().to_json()))
    assert doc["met"] is True
    assert doc["deadline_error_pct"] == pytest.approx(-20.0)
    assert doc["control"] is True
    assert doc["core_seconds"] == 8.0
    (stage,) = doc["stages"]
    assert stage["planned_deadline_s"] == 3.5
    assert stage["deadline_error_s"] == pytest.approx(0.5)
    assert doc["timeline"][0]["stages"] == {"a at s.py:1#0": 0.0}
    png = tmp_path / "run.png"
    write_png(report(), png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- cores, profile, refusals ---------------------------------------------------------------


def test_cluster_cores_from_the_master_or_the_settings() -> None:
    assert cluster_cores("local-cluster[2,1,1024]") == (2, 1)
    assert cluster_cores("local-cluster[3, 2, 512]") == (6, 2)
    assert cluster_cores("local[4]") == (4, 4)
    assert cluster_cores("local") == (1, 1)
    conf = {"spark.cores.max": "9", "spark.executor.cores": "2"}
    assert cluster_cores("spark://h:7077", conf) == (8, 2)  # whole executors
    assert cluster_cores("k8s://h", {"spark.executor.instances": "3"}) == (3, 1)
    with pytest.raises(ValueError, match=r"spark\.cores\.max"):
        cluster_cores("spark://h:7077")


PROFILE = JobProfile(script="job.py", cores=2, wall_s=10.0, stages=(
    StageProfile(key="map at job.py:3#0", name="map at job.py:3", tasks=8, duration_s=4.0,
                 task_s=8.0),
    StageProfile(key="count at job.py:5#0", name="count at job.py:5", tasks=2, duration_s=1.0,
                 task_s=2.0),
))  # fmt: skip


def test_profile_found_where_spark_profile_writes_it_or_beside_the_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "jobs" / "job.py"
    script.parent.mkdir()
    assert profile_candidates(str(script)) == [Path("job.profile.json"),
                                               script.parent / "job.profile.json"]  # fmt: skip
    assert profile_candidates("pkg.job") == [Path("pkg.job.profile.json")]
    with pytest.raises(ProfileNotFound, match="hyperfleet spark profile"):
        find_profile(str(script))
    (script.parent / "job.profile.json").write_text(json.dumps(PROFILE.to_json()))
    assert find_profile(str(script)) == PROFILE
    (tmp_path / "job.profile.json").write_text("{}")
    with pytest.raises(ProfileError, match=r"job\.profile\.json: .*version"):
        find_profile(str(script))


def test_an_infeasible_deadline_is_refused_with_the_figures_or_forced(tmp_path: Path) -> None:
    path = tmp_path / "job.profile.json"
    path.write_text(json.dumps(PROFILE.to_json()))
    settings = RunSettings(deadline_s=3.0, master="local-cluster[2,1,1024]")
    with pytest.raises(
        InfeasibleDeadline, match=r"infeasible: the stages left need at least 5\.0s on 2"
    ):
        prepare("job.py", settings, profile_path=path)
    forced = prepare("job.py", RunSettings(deadline_s=3.0, master="local-cluster[2,1,1024]",
                                           force=True), profile_path=path)  # fmt: skip
    assert forced.control
    assert forced.plan is not None
    assert not forced.plan.feasible
    assert "--force" in forced.note
    ok = prepare("job.py", RunSettings(deadline_s=60.0, master="local-cluster[2,1,1024]"),
                 profile_path=path)  # fmt: skip
    assert ok.plan is not None
    assert ok.plan.feasible
    assert ok.note == ""
    assert [s.key for s in ok.plan.stages] == [s.key for s in PROFILE.stages]
    # local[N]: no control, no profile needed, and the reason names the fix.
    local = prepare("absent.py", RunSettings(deadline_s=3.0, master="local[2]"))
    assert not local.control
    assert local.profile is None
    assert local.plan is None
    assert "local-cluster" in local.note
    assert "unavailable" in local.note
    with pytest.raises(ValueError, match="deadline_s"):
        RunSettings(deadline_s=math.nan)


def test_cli_refuses_bad_numbers_missing_profiles_and_infeasible_deadlines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "job.py"
    script.write_text("raise SystemExit('must not run')\n")
    run = ["spark", "run", str(script)]
    for bad in ("0", "-3", "nan", "inf", "soon"):
        with pytest.raises(SystemExit) as exc:
            main([*run, "--deadline", bad])
        assert exc.value.code == 64
        assert "--deadline" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([*run, "--deadline", "10", "--period", "0"])
    assert exc.value.code == 64
    assert main([*run, "--deadline", "10"]) == 1
    assert "run `hyperfleet spark profile" in capsys.readouterr().err
    (tmp_path / "job.profile.json").write_text(json.dumps(PROFILE.to_json()))
    assert main([*run, "--deadline", "3", "--profile", str(tmp_path / "job.profile.json")]) == 1
    assert "infeasible: the stages left need at least 5.0s" in capsys.readouterr().err
    assert main([*run, "--deadline", "10", "--master", "spark://h:7077"]) == 64
    assert "spark.cores.max" in capsys.readouterr().err
