"""Data preparation for federated runs: load raw data, split it into per-agent shards and a holdout.

::

    sources        load_digits, load_csv, load_idx, load_mnist_sample  ->  Shard
    raw            write_csv, write_parquet, write_leaf_json, export_raw  (raw files for Spark)
    partition      split_holdout, partition_iid, partition_dirichlet, label_histogram  (pure)
                   holdout_indices, iid_indices, dirichlet_indices: the same splits as indices
    assignment     assign_by_label, assign_users: row -> holdout/agent from class counts (pure)
    normalization  Moments, merge_moments, Normalization: (x - offset) * scale  (pure)
    federated      prepare_federated  ->  out_dir/{holdout.npz, shards/agent-NNN.npz, manifest.json}
    spark_prepare  the same layout (plus normalization.json) as a Spark job; a module of its own,
                   imported on demand, as it needs pyspark (docs/pipelines.md)

Every bad input raises :class:`cloud.pipelines.DataError`.
"""

from __future__ import annotations

from .assignment import HOLDOUT, RowAssignment, assign_by_label, assign_users
from .errors import DataError, PipelineError
from .federated import FederatedLayout, agent_shard_name, prepare_federated, read_shard_file
from .normalization import (
    Moments,
    Normalization,
    merge_moments,
    moments_of,
    normalization_from_json,
)
from .partition import (
    dirichlet_indices,
    holdout_indices,
    iid_indices,
    label_histogram,
    partition_dirichlet,
    partition_iid,
    split_holdout,
)
from .raw import export_raw, write_csv, write_leaf_json, write_parquet
from .sources import load_csv, load_digits, load_idx, load_mnist_sample

__all__ = [
    "HOLDOUT",
    "DataError",
    "FederatedLayout",
    "Moments",
    "Normalization",
    "PipelineError",
    "RowAssignment",
    "agent_shard_name",
    "assign_by_label",
    "assign_users",
    "dirichlet_indices",
    "export_raw",
    "holdout_indices",
    "iid_indices",
    "label_histogram",
    "load_csv",
    "load_digits",
    "load_idx",
    "load_mnist_sample",
    "merge_moments",
    "moments_of",
    "normalization_from_json",
    "partition_dirichlet",
    "partition_iid",
    "prepare_federated",
    "read_shard_file",
    "split_holdout",
    "write_csv",
    "write_leaf_json",
    "write_parquet",
]
