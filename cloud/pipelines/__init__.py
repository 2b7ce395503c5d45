"""Data preparation for federated runs: load raw data, split it into per-agent shards and a holdout.

::

    sources     load_digits, load_csv, load_idx, load_mnist_sample  ->  Shard
    partition   split_holdout, partition_iid, partition_dirichlet, label_histogram  (pure)
    federated   prepare_federated  ->  out_dir/{holdout.npz, shards/agent-NNN.npz, manifest.json}

Every bad input raises :class:`cloud.pipelines.DataError`.
"""

from __future__ import annotations

from .errors import DataError, PipelineError
from .federated import FederatedLayout, agent_shard_name, prepare_federated, read_shard_file
from .partition import label_histogram, partition_dirichlet, partition_iid, split_holdout
from .sources import load_csv, load_digits, load_idx, load_mnist_sample

__all__ = [
    "DataError",
    "FederatedLayout",
    "PipelineError",
    "agent_shard_name",
    "label_histogram",
    "load_csv",
    "load_digits",
    "load_idx",
    "load_mnist_sample",
    "partition_dirichlet",
    "partition_iid",
    "prepare_federated",
    "read_shard_file",
    "split_holdout",
]
