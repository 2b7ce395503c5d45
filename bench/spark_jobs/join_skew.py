"""Benchmark job (b): join- and shuffle-heavy. Two generated tables, deterministic for a seed:
orders with power-law (skewed) customer keys and a customer table; a sort-merge join on the skewed
key, a repartition by region and an aggregate over it, a second join of the orders with
themselves on (customer, bucket), and a global sort.

A plain PySpark script: its ``SparkSession.builder.getOrCreate()`` takes the session a runner made
(``hyperfleet spark run|profile``); run alone, it makes one (``--master``, else PySpark's default).
Broadcast joins are turned off for the session (``spark.sql.autoBroadcastJoinThreshold=-1``) so
the joins shuffle both sides, as they would with a large dimension table. Every step ends in a
``noop`` write or a small ``collect``. Prints one JSON line: rows, seconds, Spark jobs and stages.

    .venv/bin/python bench/spark_jobs/join_skew.py --rows 1000000 --master 'local-cluster[2,1,1024]'
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F


def unit(seed: int, salt: int) -> Column:
    """A uniform number in [0, 1) from the row id: the same for every partitioning."""
    return (F.abs(F.xxhash64(F.col("id"), F.lit(seed), F.lit(salt))) % 1_000_003) / 1_000_003.0


def orders(spark: SparkSession, rows: int, customers: int, partitions: int, seed: int) -> DataFrame:
    """``rows`` orders; customer = floor(customers * u^3): a few customers hold most orders."""
    return spark.range(0, rows, numPartitions=partitions).select(
        F.col("id").alias("order"),
        F.floor(F.pow(unit(seed, 1), F.lit(3.0)) * customers).cast("long").alias("customer"),
        (unit(seed, 2) * 16).cast("int").alias("bucket"),
        (unit(seed, 3) * 1000.0).alias("price"),
        (unit(seed, 4) * 10).cast("int").alias("quantity"),
    )


def customers_table(spark: SparkSession, customers: int, partitions: int, seed: int) -> DataFrame:
    return spark.range(0, customers, numPartitions=partitions).select(
        F.col("id").alias("customer"),
        (unit(seed, 11) * 40).cast("int").alias("region"),
        (unit(seed, 12) * 5).cast("int").alias("tier"),
        F.sha2(F.col("id").cast("string"), 256).alias("name"),
    )


def run(
    spark: SparkSession, rows: int, customers: int, partitions: int, seed: int
) -> dict[str, Any]:
    spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")
    o = orders(spark, rows, customers, partitions, seed)
    c = customers_table(spark, customers, max(1, partitions // 4), seed)
    # 1. The skewed join, then a repartition by region and an aggregate per region and tier.
    joined = o.join(c, "customer").withColumn("total", F.col("price") * F.col("quantity"))
    by_region = (
        joined.repartition(32, "region")
        .groupBy("region", "tier")
        .agg(F.sum("total").alias("revenue"), F.count("*").alias("orders"))
    )
    regions = len(by_region.collect())
    # 2. Orders joined with a second order stream on (customer, bucket): skew on both sides.
    later = orders(spark, rows // 2, customers, partitions, seed + 1).select(
        "customer", "bucket", F.col("price").alias("later_price")
    )
    pairs = (
        o.groupBy("customer", "bucket")
        .agg(F.avg("price").alias("mean_price"))
        .join(later, ["customer", "bucket"])
        .withColumn("delta", F.col("later_price") - F.col("mean_price"))
    )
    pair_stats = pairs.agg(F.count("*").alias("pairs"), F.avg("delta")).collect()
    # 3. A global sort of the joined orders (range partitioning: a sampling job, then the sort).
    ranked = joined.select("order", "customer", "total", "name").orderBy(F.desc("total"), "order")
    ranked.write.format("noop").mode("overwrite").save()
    # 4. Customers without orders: an anti join.
    idle = c.join(o.select("customer").distinct(), "customer", "left_anti").count()
    return {"regions": regions, "pairs": int(pair_stats[0]["pairs"]), "idle_customers": idle}


def stages_run(tracker: Any, jobs: list[int]) -> int:
    """Stages that ran at least one task (a stage whose shuffle output was reused is skipped)."""
    ids = {s for j in jobs if (info := tracker.getJobInfo(j)) is not None for s in info.stageIds}
    return sum(
        1 for s in ids if (stage := tracker.getStageInfo(s)) is not None and stage.numCompletedTasks
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="orders to generate")
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=16, help="of the generated orders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--master", default=None, help="only when no session exists yet")
    args = parser.parse_args()
    builder = SparkSession.builder.appName("bench join_skew").config(
        "spark.ui.showConsoleProgress", "false"
    )
    if args.master and SparkSession.getActiveSession() is None:
        builder = builder.master(args.master)
    spark = builder.getOrCreate()
    tracker = spark.sparkContext.statusTracker()
    started = time.monotonic()
    result = run(spark, args.rows, args.customers, args.partitions, args.seed)
    elapsed = time.monotonic() - started
    jobs = tracker.getJobIdsForGroup()
    report = {"job": "join_skew", "rows": args.rows, "seconds": round(elapsed, 1)}
    print(json.dumps({**report, "jobs": len(jobs), "stages": stages_run(tracker, jobs), **result}))
    spark.stop()


if __name__ == "__main__":
    main()
