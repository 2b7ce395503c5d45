"""Writing the Spark preparation job's layout: one shard file per destination (by the executors
or the driver) into a staging directory, then moved into place with the manifest last, so a
reader never sees half a layout. Part of :mod:`cloud.pipelines.spark_prepare`."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
from pyspark.sql import DataFrame

from link import atomic_write_json, write_shard
from protocol import Shard

from .assignment import HOLDOUT
from .errors import DataError, PipelineError
from .federated import MANIFEST_VERSION, FederatedLayout, agent_shard_name
from .normalization import Normalization

if TYPE_CHECKING:
    from .spark_prepare import CleaningReport, PrepareConfig

__all__: list[str] = []

logger = logging.getLogger(__name__)

NORMALIZATION_NAME: Final = "normalization.json"
HOLDOUT_NAME: Final = "holdout.npz"
SHARDS_DIR: Final = "shards"
MANIFEST_NAME: Final = "manifest.json"
WRITTEN_SCHEMA: Final = "dest int, examples long, sha256 string, histogram array<long>"
WRITTEN_ARROW: Final = pa.schema(
    [
        ("dest", pa.int32()),
        ("examples", pa.int64()),
        ("sha256", pa.string()),
        ("histogram", pa.list_(pa.int64())),
    ]
)


def features_of(batch: pa.RecordBatch | pa.Table, features: int) -> npt.NDArray[np.float64]:
    column = batch.column("_x")
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64).reshape(len(batch), features)


@dataclass(frozen=True, slots=True, kw_only=True)
class Written:
    dest: int
    examples: int
    sha256: str
    histogram: list[int]


def shard_writer(
    staging: str, normalization: Normalization, features: int, num_classes: int
) -> Callable[[pa.Table], pa.Table]:
    def write(table: pa.Table) -> pa.Table:
        written = write_destination(table, staging, normalization, features, num_classes)
        return pa.Table.from_pylist(
            [
                {
                    "dest": written.dest,
                    "examples": written.examples,
                    "sha256": written.sha256,
                    "histogram": written.histogram,
                }
            ],
            schema=WRITTEN_ARROW,
        )

    return write


def write_destination(
    table: pa.Table, staging: str, normalization: Normalization, features: int, num_classes: int
) -> Written:
    """Write one destination's rows (holdout or one agent), ordered by slot, normalised."""
    dest_values = np.unique(table.column("_dest").to_numpy())
    if dest_values.shape[0] != 1:
        raise PipelineError(f"a shard group holds destinations {dest_values.tolist()}")
    dest = int(dest_values[0])
    order = np.argsort(table.column("_slot").to_numpy(), kind="stable")
    x = normalization.apply(features_of(table, features)[order])
    y = table.column("_label").to_numpy().astype(np.int64)[order]
    path = Path(staging) / (HOLDOUT_NAME if dest == HOLDOUT else shard_path(dest))
    digest = write_shard(path, Shard(x=x, y=y))
    histogram = np.bincount(y, minlength=num_classes).tolist()
    return Written(dest=dest, examples=int(y.shape[0]), sha256=digest, histogram=histogram)


def shard_path(agent: int) -> str:
    return f"{SHARDS_DIR}/{agent_shard_name(agent)}"


def write_layout(
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
    (staging / SHARDS_DIR).mkdir(parents=True)
    try:
        columns = assigned.select("_dest", "_slot", "_label", "_x")
        if config.writer == "executors":
            writer = shard_writer(str(staging), normalization, features, len(classes))
            rows = columns.groupBy("_dest").applyInArrow(writer, WRITTEN_SCHEMA).collect()
            written = [
                Written(
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
                write_destination(
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
        manifest = manifest_of(
            config, by_dest, classes, features, raw, cleaning, normalization, norm_digest
        )
        layout = move_into_place(staging, out_dir, config.agents, manifest)
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


def manifest_of(
    config: PrepareConfig,
    by_dest: dict[int, Written],
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
            "path": HOLDOUT_NAME,
            "examples": held.examples,
            "label_histogram": held.histogram,
            "sha256": held.sha256,
        },
        "shards": [
            {
                "agent": agent,
                "path": shard_path(agent),
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


def move_into_place(
    staging: Path, out_dir: Path, agents: int, manifest: dict[str, Any]
) -> FederatedLayout:
    """Replace the old layout with the staged one: the old manifest goes first (no reader trusts
    a half-replaced layout), the new one last."""
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    shards_dir = out_dir / SHARDS_DIR
    if shards_dir.exists():
        os.replace(shards_dir, staging / "old-shards")
    os.replace(staging / SHARDS_DIR, shards_dir)
    os.replace(staging / HOLDOUT_NAME, out_dir / HOLDOUT_NAME)
    os.replace(staging / NORMALIZATION_NAME, out_dir / NORMALIZATION_NAME)
    manifest_path = out_dir / MANIFEST_NAME
    atomic_write_json(manifest_path, manifest)
    return FederatedLayout(
        holdout=out_dir / HOLDOUT_NAME,
        shards=[shards_dir / agent_shard_name(a) for a in range(agents)],
        manifest=manifest_path,
    )
