"""The Spark job's first two stages: read raw data into one shape, and tag every row that
cleaning drops with its reason.

Every format becomes the same columns::

    _row   long           reading order (monotonically_increasing_id: partition << 33 | position)
    _lraw  string         the label as read (trimmed), null when missing
    _x     array<double>  the features, null elements where a cell was missing or not a number
    _user  string         the row's owner (LEAF user, or --user-column), null when there is none

CSV is read with its header and every cell as a string (``try_cast`` to double: a cell that is
not a number is a null, hence a dropped row, not a failed job). Parquet feature columns must be
numeric (a string or boolean column is refused by name: it is no feature as it stands). LEAF JSON is read with a map schema (``user_data: map<user, struct<x, y>>``), exploded
to one row per example in the JVM.
"""

from __future__ import annotations

import glob
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .errors import DataError

__all__ = [
    "DROP_REASONS",
    "InputFormat",
    "LabelCoding",
    "RawInput",
    "code_labels",
    "read_raw",
    "tag_rows",
]

InputFormat = Literal["csv", "parquet", "leaf-json"]
INPUT_FORMATS: Final = ("csv", "parquet", "leaf-json")

#: Why cleaning drops a row, in the order the reasons are tested (a row counts once, first match).
DROP_REASONS: Final = (
    "missing_label",
    "bad_label",
    "missing_feature",
    "nonfinite_feature",
    "wrong_feature_count",
    "missing_user",
)
FLOAT32_MAX: Final = 3.4028234663852886e38
#: More distinct labels than this is refused: a label column that is not a class.
MAX_CLASSES: Final = 10_000

_LEAF_SCHEMA: Final = (
    "users array<string>, user_data map<string, struct<x: array<array<double>>, y: array<string>>>"
)
_NUMERIC: Final = (
    T.ByteType,
    T.ShortType,
    T.IntegerType,
    T.LongType,
    T.FloatType,
    T.DoubleType,
    T.DecimalType,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RawInput:
    """The raw rows in the common shape, and the feature names where the format has them."""

    frame: DataFrame
    feature_names: tuple[str, ...] | None
    has_users: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelCoding:
    """Raw label text -> class index; ``classes[i]`` is class ``i`` as the input spelled it."""

    raw_to_class: dict[str, int]
    classes: tuple[str, ...]
    numeric: bool

    @property
    def remapped(self) -> bool:
        """Whether class ``i`` is something other than the integer ``i`` in the input."""
        return not self.numeric or any(
            float(name) != float(i) for i, name in enumerate(self.classes)
        )


def read_raw(
    spark: SparkSession,
    path: str,
    fmt: str,
    *,
    label: str,
    user_column: str | None,
) -> RawInput:
    """Read ``path`` as ``fmt`` into the common columns. :class:`DataError` names what is wrong:
    a missing path, an unknown format, a missing or doubled label/user column, a column that
    cannot be a feature, no feature columns."""
    if fmt not in INPUT_FORMATS:
        raise DataError(f"unknown input format {fmt!r}; choose from {list(INPUT_FORMATS)}")
    _check_exists(path)
    try:
        if fmt == "leaf-json":
            return _read_leaf(spark, path)
        if fmt == "csv":
            frame = spark.read.option("header", "true").option("mode", "PERMISSIVE").csv(path)
        else:
            frame = spark.read.parquet(path)
    except AnalysisException as exc:
        raise DataError(f"{path}: cannot be read as {fmt}: {_first_line(exc)}") from exc
    columns = list(frame.columns)
    stripped = [c.strip() for c in columns]
    _check_column(path, stripped, label, "label")
    if user_column is not None:
        _check_column(path, stripped, user_column, "user")
    named = {c.strip(): c for c in columns}
    features = [c for c in stripped if c not in (label, user_column)]
    if not features:
        raise DataError(f"{path}: no feature columns besides {label!r}; the columns are {stripped}")
    kinds = {f.name.strip(): f.dataType for f in frame.schema.fields}
    allowed = (T.StringType,) if fmt == "csv" else _NUMERIC  # CSV cells are text until cast
    for name in features:
        kind = kinds[name]
        if not isinstance(kind, allowed):
            raise DataError(
                f"{path}: column {name!r} is {kind.simpleString()}, not a number; "
                "features must be numeric columns"
            )
    x = F.array(*[_as_double(F.col(_quoted(named[name]))) for name in features])
    lraw = F.trim(F.col(_quoted(named[label])).cast("string"))
    user = (
        F.col(_quoted(named[user_column])).cast("string")
        if user_column is not None
        else F.lit(None).cast("string")
    )
    shaped = frame.select(
        F.monotonically_increasing_id().alias("_row"),
        F.when(lraw == "", None).otherwise(lraw).alias("_lraw"),
        x.alias("_x"),
        user.alias("_user"),
    )
    return RawInput(frame=shaped, feature_names=tuple(features), has_users=user_column is not None)


def code_labels(path: str, raw_labels: Sequence[str]) -> LabelCoding:
    """Classes from the distinct raw labels. All numbers: the integral ones are classes in numeric
    order (the rest are bad labels); no numbers at all: strings in sorted order; a mix: the
    numbers win and the words are bad labels. :class:`DataError` when no label is usable or there
    are more than :data:`MAX_CLASSES`."""
    values: dict[str, float] = {}
    for raw in raw_labels:
        try:
            values[raw] = float(raw)
        except ValueError:
            continue
    if values:
        integral = {
            raw: int(v) for raw, v in values.items() if math.isfinite(v) and float(v).is_integer()
        }
        numbers = sorted(set(integral.values()))
        index = {number: i for i, number in enumerate(numbers)}
        coding = LabelCoding(
            raw_to_class={raw: index[number] for raw, number in integral.items()},
            classes=tuple(str(n) for n in numbers),
            numeric=True,
        )
    else:
        words = sorted(set(raw_labels))
        coding = LabelCoding(
            raw_to_class={w: i for i, w in enumerate(words)}, classes=tuple(words), numeric=False
        )
    if not coding.classes:
        raise DataError(f"{path}: no usable label: every label is missing or not an integer")
    if len(coding.classes) > MAX_CLASSES:
        raise DataError(
            f"{path}: {len(coding.classes)} distinct labels, more than {MAX_CLASSES}; "
            "is the label column a class?"
        )
    return coding


def tag_rows(
    spark: SparkSession, raw: DataFrame, coding: LabelCoding, *, features: int, need_user: bool
) -> DataFrame:
    """``raw`` with ``_label`` (class index, null when unusable) and ``_drop`` (the first of
    :data:`DROP_REASONS` that applies, null for a row that is kept)."""
    mapping = spark.createDataFrame(
        list(coding.raw_to_class.items()), schema="_lraw string, _label long"
    )
    tagged = raw.join(F.broadcast(mapping), on="_lraw", how="left")
    x = F.col("_x")
    reason = (
        F.when(F.col("_lraw").isNull(), F.lit("missing_label"))
        .when(F.col("_label").isNull(), F.lit("bad_label"))
        .when(x.isNull() | F.exists(x, lambda v: v.isNull()), F.lit("missing_feature"))
        .when(
            F.exists(x, lambda v: F.isnan(v) | (F.abs(v) > F.lit(FLOAT32_MAX))),
            F.lit("nonfinite_feature"),
        )
        .when(F.size(x) != F.lit(features), F.lit("wrong_feature_count"))
    )
    if need_user:
        reason = reason.when(F.col("_user").isNull(), F.lit("missing_user"))
    return tagged.select("_row", "_lraw", "_label", "_x", "_user", reason.alias("_drop"))


def _read_leaf(spark: SparkSession, path: str) -> RawInput:
    try:
        frame = spark.read.schema(_LEAF_SCHEMA).option("multiLine", "true").json(path)
    except AnalysisException as exc:
        raise DataError(f"{path}: cannot be read as LEAF JSON: {_first_line(exc)}") from exc
    users = frame.select(F.explode("user_data").alias("_user", "_d"))
    rows = users.select("_user", F.explode(F.arrays_zip("_d.x", "_d.y")).alias("_r"))
    lraw = F.trim(F.col("_r.y"))
    shaped = rows.select(
        F.monotonically_increasing_id().alias("_row"),
        F.when(lraw == "", None).otherwise(lraw).alias("_lraw"),
        F.col("_r.x").alias("_x"),
        F.col("_user"),
    )
    return RawInput(frame=shaped, feature_names=None, has_users=True)


def _as_double(column: Column) -> Column:
    return column.try_cast("double")


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _check_column(path: str, columns: list[str], name: str, role: str) -> None:
    if name not in columns:
        raise DataError(f"{path}: no {role} column {name!r}; the columns are {columns}")
    if columns.count(name) > 1:
        raise DataError(f"{path}: the {role} column {name!r} appears more than once")


def _check_exists(path: str) -> None:
    if "://" in path and not path.startswith("file://"):
        return  # a remote file system: Spark says whether it exists
    local = path.removeprefix("file://")
    if glob.has_magic(local):
        if not glob.glob(local):
            raise DataError(f"{path}: no file matches")
        return
    if not Path(local).exists():
        raise DataError(f"{path}: no such file or directory")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
