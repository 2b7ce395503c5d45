"""Lay a data set out on disk for a federated run: one shard per agent plus the server's holdout.

::

    out_dir/
    ├── holdout.npz             the coordinator's evaluation set
    ├── shards/agent-000.npz    one shard per agent, numbered from 0
    └── manifest.json           parameters, per-file example counts, label histograms and sha256

Every file is written to a temporary name in its own directory and then renamed, so a reader
never sees a half-written file; the manifest is written last, so its presence means the layout
is complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from link import ShardError, atomic_write_json, read_shard, write_shard
from protocol import Shard

from .errors import DataError
from .partition import label_histogram, partition_dirichlet, partition_iid, split_holdout

__all__ = ["FederatedLayout", "agent_shard_name", "prepare_federated", "read_shard_file"]

logger = logging.getLogger(__name__)

Partition = Literal["iid", "dirichlet"]

MANIFEST_VERSION: Final = 1
_HOLDOUT_NAME: Final = "holdout.npz"
_SHARDS_DIR: Final = "shards"
_MANIFEST_NAME: Final = "manifest.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class FederatedLayout:
    """Where :func:`prepare_federated` put things; ``shards[i]`` belongs to agent ``i``."""

    holdout: Path
    shards: list[Path]
    manifest: Path


def agent_shard_name(index: int) -> str:
    """The file name of agent ``index``'s shard: ``agent-000.npz``, ``agent-001.npz``, ..."""
    return f"agent-{index:03d}.npz"


def prepare_federated(
    source: Shard,
    *,
    agents: int,
    partition: Partition = "dirichlet",
    alpha: float = 0.5,
    holdout: float = 0.2,
    seed: int = 0,
    out_dir: Path,
) -> FederatedLayout:
    """Split ``source`` into a holdout and ``agents`` shards and write them under ``out_dir``.

    ``partition="dirichlet"`` gives the label-skewed non-IID split with concentration ``alpha``
    (ignored for ``"iid"``). Shard files left over from an earlier run with more agents are
    removed. Raises :class:`DataError` for parameters the data cannot satisfy, and ``OSError``
    when ``out_dir`` cannot be written.
    """
    if partition not in ("iid", "dirichlet"):
        raise DataError(f"partition must be 'iid' or 'dirichlet', got {partition!r}")
    num_classes = source.num_classes
    rest, held = split_holdout(source, holdout, seed)
    if partition == "iid":
        parts = partition_iid(rest, agents, seed)
    else:
        parts = partition_dirichlet(rest, agents, alpha, seed)

    out_dir = Path(out_dir)
    shards_dir = out_dir / _SHARDS_DIR
    shards_dir.mkdir(parents=True, exist_ok=True)
    holdout_path = out_dir / _HOLDOUT_NAME
    holdout_digest = write_shard(holdout_path, held)
    shard_paths: list[Path] = []
    shard_entries: list[dict[str, Any]] = []
    histograms = label_histogram(parts, num_classes)
    for index, (part, histogram) in enumerate(zip(parts, histograms, strict=True)):
        path = shards_dir / agent_shard_name(index)
        digest = write_shard(path, part)
        shard_paths.append(path)
        shard_entries.append(
            {
                "agent": index,
                "path": path.relative_to(out_dir).as_posix(),
                "examples": len(part),
                "label_histogram": histogram.tolist(),
                "sha256": digest,
            }
        )
    _remove_stale_shards(shards_dir, keep={path.name for path in shard_paths})

    manifest = {
        "version": MANIFEST_VERSION,
        "agents": agents,
        "partition": partition,
        "alpha": alpha if partition == "dirichlet" else None,
        "holdout_fraction": holdout,
        "seed": seed,
        "num_classes": num_classes,
        "feature_shape": list(source.x.shape[1:]),
        "examples": len(source),
        "holdout": {
            "path": _HOLDOUT_NAME,
            "examples": len(held),
            "label_histogram": label_histogram([held], num_classes)[0].tolist(),
            "sha256": holdout_digest,
        },
        "shards": shard_entries,
    }
    manifest_path = out_dir / _MANIFEST_NAME
    atomic_write_json(manifest_path, manifest)
    logger.info(
        "wrote %d %s shards and a holdout of %d examples to %s",
        agents,
        partition,
        len(held),
        out_dir,
    )
    return FederatedLayout(holdout=holdout_path, shards=shard_paths, manifest=manifest_path)


def read_shard_file(path: Path) -> Shard:
    """Read a shard file written by :func:`prepare_federated` (or any ``encode_shard`` output);
    :class:`DataError` when it is missing or not a shard."""
    try:
        return read_shard(Path(path))
    except ShardError as exc:
        raise DataError(str(exc)) from exc


def _remove_stale_shards(shards_dir: Path, *, keep: set[str]) -> None:
    for stale in shards_dir.glob("agent-*.npz"):
        if stale.name not in keep:
            logger.info("removing stale shard %s", stale)
            stale.unlink()
