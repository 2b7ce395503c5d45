"""The federated preparation job on Spark: raw data -> cleaned features, normalisation statistics,
per-agent shards and a holdout, in the layout :func:`~cloud.pipelines.prepare_federated` writes.

::

    python -m cloud.pipelines.spark_prepare --input digits.csv --format csv --label label \\
        --agents 10 --partition dirichlet --alpha 0.5 --holdout 0.2 --seed 0 --out data/

    out/
    ├── holdout.npz             the coordinator's evaluation set (normalised features)
    ├── shards/agent-000.npz    one shard per agent (x float32 normalised, y int64)
    ├── normalization.json      offset and scale per feature, from the training rows only
    └── manifest.json           written last: parameters, counts, histograms, sha256, cleaning

The session is ``SparkSession.builder.getOrCreate()``: under ``hyperfleet spark run`` it is the
runner's (deadline control); run alone it is a local one. Stages:

1. read (CSV with a header, Parquet, LEAF JSON) into one shape, and find the distinct labels and
   the feature count;
2. clean: every row with a missing or non-finite feature (or one past float32), a missing or
   non-integer label, or the wrong number of features is dropped and counted by reason; labels
   become classes 0..K-1 (in numeric order; words in sorted order) and the map is kept;
3. assign: per class and per input partition counts go to the driver, which runs the seeded
   functions of :mod:`cloud.pipelines.partition` on the class-sorted labels
   (:mod:`cloud.pipelines.assignment`) and broadcasts the answer; each row finds its holdout or
   agent and its place in that file from its class and rank. The result equals what
   ``prepare_federated`` makes of the same rows read in the same order;
4. statistics: per-feature moments of the training rows (every row not held out), merged on the
   driver, give offset and scale (``(x - offset) * scale``, ROMA's convention);
5. write: each destination's rows are normalised and written as one shard file, by the executors
   (``groupBy(dest).applyInArrow``; the output directory must be one the executors can write,
   which is so for ``local``/``local-cluster`` and shared file systems) or, with
   ``writer="driver"``, collected to the driver as Arrow. Files go to a staging directory under
   ``out``; only when every file is there do they move into place, manifest last, so a failed
   job leaves the old layout (or nothing) and no half-written files.

The job ships its own code (``cloud.pipelines``, ``link``, ``protocol``) to the executors with
``addPyFile``, as ``spark-submit --py-files`` would, so executors need only pyspark, NumPy and
pyarrow. Errors: :class:`DataError` for input or parameters that cannot work (naming the file,
column or value), :class:`PipelineError` when Spark itself fails.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from link import atomic_write_json, write_shard
from protocol import Shard

from ._spark_read import DROP_REASONS, code_labels, read_raw, tag_rows
from .assignment import HOLDOUT, PartitionKind, RowAssignment, assign_by_label, assign_users
from .errors import DataError, PipelineError
from .federated import MANIFEST_VERSION, FederatedLayout, agent_shard_name
from .normalization import Moments, Normalization, NormalizationMethod, merge_moments, moments_of

__all__ = [
    "CleaningReport",
    "PrepareConfig",
    "PrepareReport",
    "Writer",
    "main",
    "prepare_with_spark",
]

logger = logging.getLogger(__name__)

Writer = Literal["executors", "driver"]

NORMALIZATION_NAME: Final = "normalization.json"
_HOLDOUT_NAME: Final = "holdout.npz"
_SHARDS_DIR: Final = "shards"
_MANIFEST_NAME: Final = "manifest.json"
_PARTITION_SHIFT: Final = 33  # monotonically_increasing_id: partition index << 33 | position
_WRITTEN_SCHEMA: Final = "dest int, examples long, sha256 string, histogram array<long>"
_WRITTEN_ARROW: Final = pa.schema(
    [
        ("dest", pa.int32()),
        ("examples", pa.int64()),
        ("sha256", pa.string()),
        ("histogram", pa.list_(pa.int64())),
    ]
)
_MOMENTS_SCHEMA: Final = (
    "count long, mean array<double>, m2 array<double>, minimum array<double>, maximum array<double>"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareConfig:
    """One preparation: where the raw data is and how to split it.

    ``partition="users"`` gives each agent whole users (LEAF users, or ``user_column``);
    ``alpha`` is used by ``"dirichlet"`` only. ``normalize`` picks the statistics
    (:meth:`Normalization.from_moments`).
    """

    input: str
    format: str
    out_dir: Path
    agents: int
    label: str = "label"
    user_column: str | None = None
    partition: PartitionKind = "dirichlet"
    alpha: float = 0.5
    holdout: float = 0.2
    seed: int = 0
    normalize: NormalizationMethod = "standard"
    writer: Writer = "executors"


@dataclass(frozen=True, slots=True, kw_only=True)
class CleaningReport:
    """Rows read, rows kept, and rows dropped per reason (every reason listed, zeros included)."""

    rows_read: int
    rows_kept: int
    dropped: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"rows_read": self.rows_read, "rows_kept": self.rows_kept, "dropped": self.dropped}


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareReport:
    """What the job wrote and measured; ``stage_s`` is wall time per stage of the job, seconds."""

    layout: FederatedLayout
    normalization: Path
    cleaning: CleaningReport
    classes: tuple[str, ...]
    stage_s: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "manifest": str(self.layout.manifest),
            "holdout": str(self.layout.holdout),
            "shards": len(self.layout.shards),
            "normalization": str(self.normalization),
            "cleaning": self.cleaning.to_json(),
            "classes": list(self.classes),
            "stage_s": {k: round(v, 3) for k, v in self.stage_s.items()},
        }


def prepare_with_spark(spark: SparkSession, config: PrepareConfig) -> PrepareReport:
    """Run the preparation job in ``spark`` (see the module's docstring for the stages).

    Raises :class:`DataError` for a missing input, unknown format, missing label/user column,
    no usable rows or parameters the data cannot satisfy (nothing is written then);
    :class:`PipelineError` when Spark fails; ``OSError`` when ``out_dir`` cannot be written.
    """
    _check_config(config)
    clock = _StageClock()
    try:
        return _run(spark, config, clock)
    except PySparkException as exc:
        cause = _data_error_inside(exc)
        if cause is not None:
            raise DataError(cause) from exc
        raise PipelineError(f"the Spark job failed: {_first_line(str(exc))}") from exc


def _run(spark: SparkSession, config: PrepareConfig, clock: _StageClock) -> PrepareReport:
    _ship_code(spark)
    if config.format == "leaf-json" and config.user_column is not None:
        raise DataError("a LEAF file names its users itself; --user-column is for CSV/Parquet")
    raw = read_raw(
        spark, config.input, config.format, label=config.label, user_column=config.user_column
    )
    if config.partition == "users" and not raw.has_users:
        raise DataError(
            "partition 'users' needs users: a LEAF input, or --user-column for CSV/Parquet"
        )
    # One pass: the distinct labels and the feature counts the rows have.
    shapes = (
        raw.frame.groupBy("_lraw", F.size("_x").alias("_d")).count().collect()  # small: K x few
    )
    if not shapes:
        raise DataError(f"{config.input}: holds no rows")
    features = _common_length(shapes, raw.feature_names)
    coding = code_labels(config.input, sorted({r["_lraw"] for r in shapes if r["_lraw"]}))
    tagged = tag_rows(
        spark, raw.frame, coding, features=features, need_user=config.partition == "users"
    ).persist()
    try:
        cleaning = _cleaning_report(tagged)
        clock.mark("read_clean")
        logger.info(
            "read %d rows from %s, kept %d, dropped %s",
            cleaning.rows_read,
            config.input,
            cleaning.rows_kept,
            {k: v for k, v in cleaning.dropped.items() if v},
        )
        if cleaning.rows_kept < 2:
            raise DataError(
                f"{config.input}: {cleaning.rows_kept} usable row(s) after cleaning "
                f"(dropped: {cleaning.dropped}); need at least 2"
            )
        clean = tagged.filter(F.col("_drop").isNull()).select("_row", "_label", "_x", "_user")
        assigned = _assign(spark, clean, config, num_classes=len(coding.classes)).persist()
        try:
            assigned.count()  # materialise: the assignment runs once, both passes reuse it
            clock.mark("assign")
            normalization = _statistics(assigned, config.normalize, features)
            clock.mark("statistics")
            layout, norm_path = _write_layout(
                assigned, config, normalization, coding.classes, features, raw, cleaning
            )
            clock.mark("write")
        finally:
            assigned.unpersist()
    finally:
        tagged.unpersist()
    return PrepareReport(
        layout=layout,
        normalization=norm_path,
        cleaning=cleaning,
        classes=coding.classes,
        stage_s=clock.stages,
    )


# --- cleaning -----------------------------------------------------------------------------------


def _common_length(shapes: Sequence[Any], names: tuple[str, ...] | None) -> int:
    if names is not None:
        return len(names)
    lengths: dict[int, int] = {}
    for row in shapes:
        if row["_d"] is not None and row["_d"] > 0:
            lengths[int(row["_d"])] = lengths.get(int(row["_d"]), 0) + int(row["count"])
    if not lengths:
        raise DataError("no row has any features")
    # The most common length (the longest on a tie) is the data's; other rows are dropped.
    return max(lengths, key=lambda d: (lengths[d], d))


def _cleaning_report(tagged: DataFrame) -> CleaningReport:
    counts = {r["_drop"]: int(r["count"]) for r in tagged.groupBy("_drop").count().collect()}
    dropped = {reason: counts.get(reason, 0) for reason in DROP_REASONS}
    kept = counts.get(None, 0)
    return CleaningReport(rows_read=kept + sum(dropped.values()), rows_kept=kept, dropped=dropped)


# --- assignment ---------------------------------------------------------------------------------


def _assign(
    spark: SparkSession, clean: DataFrame, config: PrepareConfig, *, num_classes: int
) -> DataFrame:
    """``clean`` with ``_dest`` (holdout -1 or agent) and ``_slot`` (place in that file)."""
    part = F.shiftrightunsigned(F.col("_row"), _PARTITION_SHIFT).alias("_part")
    rows = clean.groupBy(part, "_label").count().collect()
    partitions = 1 + max(int(r["_part"]) for r in rows)
    per_part = np.zeros((partitions, num_classes), dtype=np.int64)
    for r in rows:
        per_part[int(r["_part"]), int(r["_label"])] = int(r["count"])
    # Rank offset of each (partition, class): that class's rows in earlier partitions.
    offsets = np.cumsum(per_part, axis=0) - per_part
    counts = per_part.sum(axis=0)
    assignment = assign_by_label(
        counts,
        agents=config.agents,
        partition=config.partition,
        alpha=config.alpha,
        holdout=config.holdout,
        seed=config.seed,
    )
    owners: dict[str, int] | None = None
    if config.partition == "users":
        users = clean.groupBy("_user").count().collect()
        owners = assign_users(
            {str(r["_user"]): int(r["count"]) for r in users}, config.agents, config.seed
        )
    shared = spark.sparkContext.broadcast((assignment, offsets, owners))
    schema = "_row long, _label long, _x array<double>, _user string, _dest int, _slot long"
    return clean.mapInArrow(_assigner(shared), schema)


def _assigner(shared: Any) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def assign(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        assignment: RowAssignment
        offsets: npt.NDArray[np.int64]
        owners: dict[str, int] | None
        assignment, offsets, owners = shared.value
        seen = np.zeros(offsets.shape[1], dtype=np.int64)  # rows of each class so far, here
        last_row = -1
        for batch in batches:
            row = batch.column("_row").to_numpy()
            label = batch.column("_label").to_numpy().astype(np.int64)
            if row.size == 0:
                continue
            if row[0] <= last_row or np.any(np.diff(row) <= 0):
                raise PipelineError("rows reached the assignment out of reading order")
            last_row = int(row[-1])
            part = int(row[0]) >> _PARTITION_SHIFT
            # The rank of each row within its class: offset of this partition + running count.
            rank = np.empty(row.shape[0], dtype=np.int64)
            for c in np.unique(label):
                members = np.flatnonzero(label == c)
                rank[members] = offsets[part, c] + seen[c] + np.arange(members.shape[0])
                seen[c] += members.shape[0]
            dest, slot = assignment.lookup(label, rank)
            if owners is not None:
                users = batch.column("_user").to_pylist()
                training = dest != HOLDOUT
                dest = dest.copy()
                dest[training] = [owners[str(users[i])] for i in np.flatnonzero(training)]
                slot = np.where(training, row, slot)
            yield pa.RecordBatch.from_arrays(
                [*batch.columns, pa.array(dest, pa.int32()), pa.array(slot, pa.int64())],
                names=[*batch.schema.names, "_dest", "_slot"],
            )

    return assign


# --- statistics ---------------------------------------------------------------------------------


def _statistics(assigned: DataFrame, method: NormalizationMethod, features: int) -> Normalization:
    training = assigned.filter(F.col("_dest") != HOLDOUT).select("_x")
    parts = [
        Moments(
            count=int(r["count"]),
            mean=np.asarray(r["mean"], dtype=np.float64),
            m2=np.asarray(r["m2"], dtype=np.float64),
            minimum=np.asarray(r["minimum"], dtype=np.float64),
            maximum=np.asarray(r["maximum"], dtype=np.float64),
        )
        for r in training.mapInArrow(_partial_moments(features), _MOMENTS_SCHEMA).collect()
    ]
    return Normalization.from_moments(merge_moments(parts), method)


def _partial_moments(
    features: int,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def moments(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        parts = [moments_of(_features_of(batch, features)) for batch in batches]
        if not parts:
            return
        total = merge_moments(parts)
        yield pa.RecordBatch.from_pylist(
            [
                {
                    "count": total.count,
                    "mean": total.mean.tolist(),
                    "m2": total.m2.tolist(),
                    "minimum": total.minimum.tolist(),
                    "maximum": total.maximum.tolist(),
                }
            ]
        )

    return moments


def _features_of(batch: pa.RecordBatch | pa.Table, features: int) -> npt.NDArray[np.float64]:
    column = batch.column("_x")
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64).reshape(len(batch), features)


# --- writing ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Written:
    dest: int
    examples: int
    sha256: str
    histogram: list[int]


def _shard_writer(
    staging: str, normalization: Normalization, features: int, num_classes: int
) -> Callable[[pa.Table], pa.Table]:
    def write(table: pa.Table) -> pa.Table:
        written = _write_destination(table, staging, normalization, features, num_classes)
        return pa.Table.from_pylist(
            [
                {
                    "dest": written.dest,
                    "examples": written.examples,
                    "sha256": written.sha256,
                    "histogram": written.histogram,
                }
            ],
            schema=_WRITTEN_ARROW,
        )

    return write


def _write_destination(
    table: pa.Table, staging: str, normalization: Normalization, features: int, num_classes: int
) -> _Written:
    """Write one destination's rows (holdout or one agent), ordered by slot, normalised."""
    dest_values = np.unique(table.column("_dest").to_numpy())
    if dest_values.shape[0] != 1:
        raise PipelineError(f"a shard group holds destinations {dest_values.tolist()}")
    dest = int(dest_values[0])
    order = np.argsort(table.column("_slot").to_numpy(), kind="stable")
    x = normalization.apply(_features_of(table, features)[order])
    y = table.column("_label").to_numpy().astype(np.int64)[order]
    path = Path(staging) / (_HOLDOUT_NAME if dest == HOLDOUT else _shard_path(dest))
    digest = write_shard(path, Shard(x=x, y=y))
    histogram = np.bincount(y, minlength=num_classes).tolist()
    return _Written(dest=dest, examples=int(y.shape[0]), sha256=digest, histogram=histogram)


def _shard_path(agent: int) -> str:
    return f"{_SHARDS_DIR}/{agent_shard_name(agent)}"


def _write_layout(
    assigned: DataFrame,
    config: PrepareConfig,
    normalization: Normalization,
    classes: tuple[str, ...],
    features: int,
    raw: Any,
    cleaning: CleaningReport,
) -> tuple[FederatedLayout, Path]:
    out_dir = Path(config.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".staging-{uuid.uuid4().hex[:12]}"
    (staging / _SHARDS_DIR).mkdir(parents=True)
    try:
        columns = assigned.select("_dest", "_slot", "_label", "_x")
        if config.writer == "executors":
            writer = _shard_writer(str(staging), normalization, features, len(classes))
            rows = columns.groupBy("_dest").applyInArrow(writer, _WRITTEN_SCHEMA).collect()
            written = [
                _Written(
                    dest=int(r["dest"]),
                    examples=int(r["examples"]),
                    sha256=str(r["sha256"]),
                    histogram=[int(v) for v in r["histogram"]],
                )
                for r in rows
            ]
        else:
            table = columns.toArrow()
            dests = table.column("_dest").to_numpy()
            written = [
                _write_destination(
                    table.filter(pa.array(dests == d)),
                    str(staging),
                    normalization,
                    features,
                    len(classes),
                )
                for d in np.unique(dests).tolist()
            ]
        by_dest = {w.dest: w for w in written}
        missing = [a for a in range(config.agents) if a not in by_dest]
        if missing:
            raise DataError(
                f"agents {missing} got no training rows (partition {config.partition!r}); "
                "use fewer agents or another partition"
            )
        if HOLDOUT not in by_dest:
            raise PipelineError("the holdout was not written")
        norm_digest = atomic_write_json(staging / NORMALIZATION_NAME, normalization.to_json())
        manifest = _manifest(
            config, by_dest, classes, features, raw, cleaning, normalization, norm_digest
        )
        layout = _move_into_place(staging, out_dir, config.agents, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "wrote %d %s shards and a holdout of %d examples to %s (%s writer)",
        config.agents,
        config.partition,
        by_dest[HOLDOUT].examples,
        out_dir,
        config.writer,
    )
    return layout, out_dir / NORMALIZATION_NAME


def _manifest(
    config: PrepareConfig,
    by_dest: dict[int, _Written],
    classes: tuple[str, ...],
    features: int,
    raw: Any,
    cleaning: CleaningReport,
    normalization: Normalization,
    norm_digest: str,
) -> dict[str, Any]:
    held = by_dest[HOLDOUT]
    return {
        "version": MANIFEST_VERSION,
        "agents": config.agents,
        "partition": config.partition,
        "alpha": config.alpha if config.partition == "dirichlet" else None,
        "holdout_fraction": config.holdout,
        "seed": config.seed,
        "num_classes": len(classes),
        "feature_shape": [features],
        "examples": cleaning.rows_kept,
        "holdout": {
            "path": _HOLDOUT_NAME,
            "examples": held.examples,
            "label_histogram": held.histogram,
            "sha256": held.sha256,
        },
        "shards": [
            {
                "agent": agent,
                "path": _shard_path(agent),
                "examples": by_dest[agent].examples,
                "label_histogram": by_dest[agent].histogram,
                "sha256": by_dest[agent].sha256,
            }
            for agent in range(config.agents)
        ],
        "features_normalized": True,
        "normalization": {
            "path": NORMALIZATION_NAME,
            "method": normalization.method,
            "sha256": norm_digest,
        },
        "classes": list(classes),
        "feature_names": list(raw.feature_names) if raw.feature_names else None,
        "source": {"path": config.input, "format": config.format, "label": config.label},
        "cleaning": cleaning.to_json(),
        "writer": config.writer,
    }


def _move_into_place(
    staging: Path, out_dir: Path, agents: int, manifest: dict[str, Any]
) -> FederatedLayout:
    """Replace the old layout with the staged one: the old manifest goes first (no reader trusts
    a half-replaced layout), the new one last."""
    (out_dir / _MANIFEST_NAME).unlink(missing_ok=True)
    shards_dir = out_dir / _SHARDS_DIR
    if shards_dir.exists():
        os.replace(shards_dir, staging / "old-shards")
    os.replace(staging / _SHARDS_DIR, shards_dir)
    os.replace(staging / _HOLDOUT_NAME, out_dir / _HOLDOUT_NAME)
    os.replace(staging / NORMALIZATION_NAME, out_dir / NORMALIZATION_NAME)
    manifest_path = out_dir / _MANIFEST_NAME
    atomic_write_json(manifest_path, manifest)
    return FederatedLayout(
        holdout=out_dir / _HOLDOUT_NAME,
        shards=[shards_dir / agent_shard_name(a) for a in range(agents)],
        manifest=manifest_path,
    )


# --- plumbing -----------------------------------------------------------------------------------


class _StageClock:
    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self._last = time.monotonic()

    def mark(self, stage: str) -> None:
        now = time.monotonic()
        self.stages[stage] = now - self._last
        self._last = now


def _check_config(config: PrepareConfig) -> None:
    if config.agents < 1:
        raise DataError(f"need at least 1 agent, got {config.agents}")
    if config.partition not in ("iid", "dirichlet", "users"):
        raise DataError(
            f"partition must be 'iid', 'dirichlet' or 'users', got {config.partition!r}"
        )
    if config.writer not in ("executors", "driver"):
        raise DataError(f"writer must be 'executors' or 'driver', got {config.writer!r}")
    if config.normalize not in ("standard", "minmax", "none"):
        raise DataError(f"normalize must be standard, minmax or none, got {config.normalize!r}")
    if not 0.0 < config.holdout < 1.0:
        raise DataError(f"holdout fraction must lie strictly between 0 and 1: {config.holdout}")
    if config.partition == "dirichlet" and not config.alpha > 0.0:
        raise DataError(f"Dirichlet alpha must be a positive number, got {config.alpha}")
    if config.seed < 0:
        raise DataError(f"seed must be non-negative, got {config.seed}")


def _ship_code(spark: SparkSession) -> None:
    """Add this package, ``link`` and ``protocol`` to the executors' Python path (once per
    session and code version), as ``spark-submit --py-files`` would."""
    import link
    import protocol

    roots = {
        "protocol": Path(protocol.__file__).parent,
        "link": Path(link.__file__).parent,
        "cloud/pipelines": Path(__file__).parent,
    }
    blob = io.BytesIO()
    with zipfile.ZipFile(blob, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("cloud/__init__.py", "")
        for prefix, root in roots.items():
            for source in sorted(root.glob("*.py")):
                archive.write(source, f"{prefix}/{source.name}")
    data = blob.getvalue()
    name = f"hyperfleet-pipelines-{hashlib.sha256(data).hexdigest()[:16]}.zip"
    context = spark.sparkContext
    if name in getattr(context, "_python_includes", []):
        return
    path = Path(tempfile.gettempdir()) / name
    if not path.exists():
        path.write_bytes(data)
    context.addPyFile(str(path))


def _data_error_inside(exc: Exception) -> str | None:
    """The message of a :class:`DataError` raised inside a Python worker, if that is what failed."""
    text = str(exc)
    marker = "cloud.pipelines.errors.DataError: "
    if marker not in text:
        return None
    return text.split(marker, 1)[1].splitlines()[0]


def _first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0] if text else "unknown error"


# --- CLI ----------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cloud.pipelines.spark_prepare",
        description="Raw data -> normalised per-agent shards, a holdout and their statistics.",
    )
    p.add_argument("--input", required=True, help="a file or directory of files")
    p.add_argument("--format", required=True, choices=["csv", "parquet", "leaf-json"])
    p.add_argument("--label", default="label", help="the label column (CSV, Parquet)")
    p.add_argument("--user-column", default=None, help="owner column for --partition users")
    p.add_argument("--agents", type=int, required=True)
    p.add_argument("--partition", default="dirichlet", choices=["iid", "dirichlet", "users"])
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--holdout", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--normalize", default="standard", choices=["standard", "minmax", "none"])
    p.add_argument("--writer", default="executors", choices=["executors", "driver"])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--master", default=None, help="only when no session exists yet")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job from the command line; prints the report as JSON. Exit 0, 2 for bad input
    or parameters (DataError), 1 when Spark fails."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    owned = SparkSession.getActiveSession() is None
    builder = SparkSession.builder.appName("hyperfleet prepare").config(
        "spark.ui.showConsoleProgress", "false"
    )
    if args.master:
        builder = builder.master(args.master)
    spark = builder.getOrCreate()
    config = PrepareConfig(
        input=args.input,
        format=args.format,
        label=args.label,
        user_column=args.user_column,
        agents=args.agents,
        partition=args.partition,
        alpha=args.alpha,
        holdout=args.holdout,
        seed=args.seed,
        normalize=args.normalize,
        writer=args.writer,
        out_dir=args.out,
    )
    try:
        report = prepare_with_spark(spark, config)
    except DataError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except PipelineError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    finally:
        if owned:
            spark.stop()
    sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
