"""``hyperfleet spark profile``: run a PySpark script once and record what each stage cost
(:class:`~.profile.JobProfile`), from Spark's REST API. The stages are keyed by call site and
position (:func:`~.profile.stage_keys`), so the profile fits later runs of the same script."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ProfileError
from .profile import JobProfile, StageProfile, stage_keys
from .rest import SparkRest, StageRecord
from .session import DEFAULT_MASTER, deferred_stop, run_script, start_session

__all__ = ["profile_from_records", "profile_script", "settle"]


def profile_from_records(
    script: str,
    records: Sequence[StageRecord],
    *,
    cores: int,
    wall_s: float,
    cvs: Mapping[tuple[int, int], float | None] = {},
) -> JobProfile:
    """A profile from the REST API's completed stages (pure)."""
    ordered = sorted(records, key=lambda r: (r.completed_s, r.stage_id))
    keys = stage_keys(r.name for r in ordered)
    stages = tuple(
        StageProfile(
            key=key, name=r.name, tasks=max(1, r.tasks),
            duration_s=max(0.0, r.completed_s - r.submitted_s), task_s=max(0.0, r.task_s),
            task_cv=max(0.0, cvs.get((r.stage_id, r.attempt)) or 0.3),
            records_in=r.records_in, records_out=r.records_out, bytes_in=r.bytes_in,
            bytes_out=r.bytes_out,
        )
        for key, r in zip(keys, ordered, strict=True)
    )  # fmt: skip
    return JobProfile(script=script, cores=max(1, cores), wall_s=wall_s, stages=stages)


def settle(spark: Any, rest: SparkRest, *, timeout_s: float = 10.0) -> list[StageRecord]:
    """The completed stages once Spark runs none and the REST API's count has held for 1 s
    (its listener bus lags the jobs)."""
    deadline = time.monotonic() + timeout_s
    last: list[StageRecord] = []
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        active = spark.sparkContext.statusTracker().getActiveStageIds()
        now = rest.completed_stages()
        if len(now) != len(last) or active:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= 1.0:
            return now
        time.sleep(0.25)
    return last


def profile_script(
    target: str,
    args: Sequence[str] = (),
    *,
    master: str = DEFAULT_MASTER,
    conf: Mapping[str, str] = {},
) -> JobProfile:
    """Run ``target`` once on ``master`` and return its profile. Raises
    :class:`~.session.ScriptError` when the script fails, :class:`~.rest.SparkRestError` when
    the REST API cannot be read, :class:`~.errors.ProfileError` when no stage ran."""
    spark = start_session(master, app_name=f"profile {target}", conf=conf)
    try:
        rest = SparkRest(str(spark.sparkContext.uiWebUrl))
        t0 = time.monotonic()
        with deferred_stop():
            run_script(target, args)
        wall = time.monotonic() - t0
        records = settle(spark, rest)
        cvs = {(r.stage_id, r.attempt): rest.task_cv(r.stage_id, r.attempt) for r in records}
        cores = rest.task_slots()
        if not records:
            raise ProfileError(f"{target} ran no Spark stage: nothing to profile")
        return profile_from_records(target, records, cores=cores, wall_s=wall, cvs=cvs)
    finally:
        spark.stop()
