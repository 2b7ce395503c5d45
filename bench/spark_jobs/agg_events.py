"""Benchmark job (a): aggregation-heavy. Generated click events, deterministic for a seed:
wide per-user aggregates, a per-user-and-day rollup, sessionisation with windows (lag, running
sums, ranks), a cube over country x device x day, and the top users per country.

A plain PySpark script: its ``SparkSession.builder.getOrCreate()`` takes the session a runner made
(``hyperfleet spark run|profile``); run alone, it makes one (``--master``, else PySpark's default).
Every step ends in a ``noop`` write or a small ``collect``, so Spark computes all of it and
nothing lands on disk. Prints one JSON line: rows, seconds, Spark jobs and stages run.

    .venv/bin/python bench/spark_jobs/agg_events.py --rows 2000000 --master 'local-cluster[2,1,1024]'
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

DAY_S = 86_400
SESSION_GAP_S = 1_800


def unit(seed: int, salt: int) -> Column:
    """A uniform number in [0, 1) from the event id: the same for every partitioning."""
    return (F.abs(F.xxhash64(F.col("id"), F.lit(seed), F.lit(salt))) % 1_000_003) / 1_000_003.0


def events(spark: SparkSession, rows: int, users: int, partitions: int, seed: int) -> DataFrame:
    """``rows`` events over ``users`` users and 30 days; a few heavy users (power law)."""
    u = unit(seed, 1)
    return spark.range(0, rows, numPartitions=partitions).select(
        F.col("id").alias("event"),
        F.floor(F.pow(u, F.lit(2.0)) * users).cast("long").alias("user"),
        (unit(seed, 2) * 30 * DAY_S).cast("long").alias("ts"),
        F.element_at(
            F.array(*[F.lit(c) for c in ("de", "fr", "it", "es", "nl", "pl", "se", "us")]),
            (unit(seed, 3) * 8).cast("int") + 1,
        ).alias("country"),
        F.element_at(
            F.array(*[F.lit(d) for d in ("phone", "tablet", "desktop", "tv")]),
            (unit(seed, 4) * 4).cast("int") + 1,
        ).alias("device"),
        (F.exp(unit(seed, 5) * 6.0) / 10.0).alias("amount"),
        (unit(seed, 6) * 5000).cast("int").alias("item"),
    )


def run(spark: SparkSession, rows: int, users: int, partitions: int, seed: int) -> dict[str, int]:
    ev = events(spark, rows, users, partitions, seed).withColumn(
        "day", (F.col("ts") / DAY_S).cast("int")
    )
    # 1. Wide per-user aggregates.
    per_user = ev.groupBy("user").agg(
        F.count("*").alias("n"),
        F.sum("amount").alias("spend"),
        F.avg("amount").alias("mean"),
        F.stddev("amount").alias("sd"),
        F.min("ts").alias("first"),
        F.max("ts").alias("last"),
        F.approx_count_distinct("item").alias("items"),
        F.percentile_approx("amount", 0.9).alias("p90"),
        F.countDistinct("day").alias("days"),
    )
    per_user.write.format("noop").mode("overwrite").save()
    # 2. Per user and day, then per day.
    daily = ev.groupBy("user", "day").agg(F.count("*").alias("n"), F.sum("amount").alias("s"))
    by_day = daily.groupBy("day").agg(
        F.count("*").alias("active"), F.avg("n").alias("events_per_user"), F.sum("s")
    )
    days = len(by_day.collect())
    # 3. Sessions: a gap of more than 30 minutes starts a new one (lag and running sums).
    ordered = Window.partitionBy("user").orderBy("ts", "event")
    sessions = (
        ev.withColumn("gap", F.col("ts") - F.lag("ts").over(ordered))
        .withColumn("new", F.when(F.col("gap").isNull() | (F.col("gap") > SESSION_GAP_S), 1))
        .withColumn("session", F.sum(F.coalesce(F.col("new"), F.lit(0))).over(ordered))
        .withColumn("running", F.sum("amount").over(ordered))
        .groupBy("user", "session")
        .agg(
            F.count("*").alias("clicks"),
            (F.max("ts") - F.min("ts")).alias("length"),
            F.max("running").alias("spend_so_far"),
        )
    )
    session_stats = sessions.agg(
        F.count("*").alias("sessions"), F.avg("clicks"), F.avg("length")
    ).collect()
    # 4. Cube over country x device x day.
    cube = ev.cube("country", "device", "day").agg(F.count("*"), F.sum("amount"), F.avg("amount"))
    cube.write.format("noop").mode("overwrite").save()
    # 5. Top 10 users per country by spend (rank over a window).
    spend = ev.groupBy("country", "user").agg(F.sum("amount").alias("spend"))
    top = spend.withColumn(
        "rank", F.rank().over(Window.partitionBy("country").orderBy(F.desc("spend")))
    ).filter(F.col("rank") <= 10)
    top_rows = top.count()
    return {"days": days, "sessions": int(session_stats[0]["sessions"]), "top_rows": top_rows}


def stages_run(tracker: Any, jobs: list[int]) -> int:
    """Stages that ran at least one task (a stage whose shuffle output was reused is skipped)."""
    ids = {s for j in jobs if (info := tracker.getJobInfo(j)) is not None for s in info.stageIds}
    return sum(
        1 for s in ids if (stage := tracker.getStageInfo(s)) is not None and stage.numCompletedTasks
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="events to generate")
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=16, help="of the generated events")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--master", default=None, help="only when no session exists yet")
    args = parser.parse_args()
    builder = SparkSession.builder.appName("bench agg_events").config(
        "spark.ui.showConsoleProgress", "false"
    )
    if args.master and SparkSession.getActiveSession() is None:
        builder = builder.master(args.master)
    spark = builder.getOrCreate()
    tracker = spark.sparkContext.statusTracker()
    started = time.monotonic()
    result = run(spark, args.rows, args.users, args.partitions, args.seed)
    elapsed = time.monotonic() - started
    jobs = tracker.getJobIdsForGroup()
    stages = stages_run(tracker, jobs)
    report = {"job": "agg_events", "rows": args.rows, "seconds": round(elapsed, 1)}
    print(json.dumps({**report, "jobs": len(jobs), "stages": stages, **result}))
    spark.stop()


if __name__ == "__main__":
    main()
