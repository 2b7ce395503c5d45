"""A small PySpark job for the runner's tests, written as any user would (nothing of ours):
a shuffle (two stages), then the same call site twice (the profile numbers them #0 and #1).
Tasks sleep, so their time is known: ``SLEEP`` seconds each (argument 1, default 0.3)."""

import sys
import time
from operator import add

from pyspark.sql import SparkSession


def slow(x: int, sleep: float) -> int:
    time.sleep(sleep)
    return x


if __name__ == "__main__":
    spark = SparkSession.builder.appName("runner test job").getOrCreate()
    sc = spark.sparkContext
    sleep = float(sys.argv[1]) if len(sys.argv) > 1 else 0.3
    pairs = sc.parallelize(range(8), 8).map(lambda x: (x % 2, slow(x, sleep)))
    sums = pairs.reduceByKey(add, 2).collect()
    assert sorted(sums) == [(0, 12), (1, 16)], sums
    for _ in range(2):
        assert sc.parallelize(range(4), 4).map(lambda x: slow(x, sleep)).count() == 4
    spark.stop()
