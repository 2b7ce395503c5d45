"""Pure functions that split one :class:`~protocol.Shard` into many.

All of them are deterministic for a given ``seed`` and never copy an example twice: every example of
the input lands in exactly one output. Bad parameters raise :class:`~cloud.pipelines.DataError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from protocol import Shard

from .errors import DataError

__all__ = [
    "dirichlet_indices",
    "holdout_indices",
    "iid_indices",
    "label_histogram",
    "partition_dirichlet",
    "partition_iid",
    "split_holdout",
]

Indices = npt.NDArray[np.intp]

#: How many Dirichlet draws :func:`partition_dirichlet` tries before it gives up.
MAX_DIRICHLET_DRAWS: Final = 1000
#: The fewest examples :func:`partition_dirichlet` gives an agent unless told otherwise.
DEFAULT_MIN_EXAMPLES: Final = 8


def split_holdout(shard: Shard, fraction: float, seed: int) -> tuple[Shard, Shard]:
    """Split off ``fraction`` of the examples as a holdout; returns ``(rest, holdout)``.

    The split is stratified: each class contributes to the holdout in proportion to its size
    (largest-remainder rounding), and the holdout has ``round(fraction * n)`` examples, at least
    one, while the rest keeps at least one. The indices are :func:`holdout_indices`'.
    """
    rest, holdout = holdout_indices(shard.y, fraction, seed)
    return _take(shard, rest), _take(shard, holdout)


def holdout_indices(
    labels: npt.NDArray[np.int64], fraction: float, seed: int
) -> tuple[Indices, Indices]:
    """The row indices :func:`split_holdout` keeps and holds out: ``(rest, holdout)``, each in the
    order the split leaves them. Depends on ``labels`` only through each class's positions, so
    two label arrays with the same classes in the same order split the same way."""
    if not (math.isfinite(fraction) and 0.0 < fraction < 1.0):
        raise DataError(f"holdout fraction must lie strictly between 0 and 1, got {fraction}")
    total = int(labels.shape[0])
    if total < 2:
        raise DataError(f"cannot split a holdout from {total} example(s); need at least 2")
    rng = _rng(seed)
    wanted = min(max(round(fraction * total), 1), total - 1)
    classes, counts = np.unique(labels, return_counts=True)
    shares = np.asarray(counts * (wanted / total), dtype=np.float64)
    quotas = _largest_remainder(shares, wanted)
    held: list[Indices] = []
    kept: list[Indices] = []
    for label, quota in zip(classes, quotas, strict=True):
        members = rng.permutation(np.flatnonzero(labels == label))
        held.append(members[:quota])
        kept.append(members[quota:])
    rest = rng.permutation(np.concatenate(kept))
    holdout = rng.permutation(np.concatenate(held))
    return rest, holdout


def partition_iid(shard: Shard, n: int, seed: int) -> list[Shard]:
    """Shuffle and deal the examples to ``n`` agents; sizes differ by at most one."""
    return [_take(shard, part) for part in iid_indices(len(shard), n, seed)]


def iid_indices(examples: int, n: int, seed: int) -> list[Indices]:
    """The row indices :func:`partition_iid` gives each of ``n`` agents, in shard order."""
    _check_agents(examples, n)
    order = _rng(seed).permutation(examples)
    return list(np.array_split(order, n))


def partition_dirichlet(
    shard: Shard, n: int, alpha: float, seed: int, min_examples: int | None = None
) -> list[Shard]:
    """The label-Dirichlet non-IID split (Hsu et al. 2019; as implemented in NIID-Bench).

    For each class, draw agent proportions ``p ~ Dir(alpha)`` and cut that class's shuffled
    examples at the cumulative proportions. Agents already holding more than ``len(shard) / n``
    examples get no more, which keeps sizes within reach of each other. The whole draw is repeated
    until every agent holds at least ``min_examples``. Left out, that floor is
    :data:`DEFAULT_MIN_EXAMPLES`, capped at a quarter of the fair share ``len(shard) / n`` (and at
    least 1) so that small data sets split over many agents remain feasible. Small ``alpha`` gives
    each agent few classes; large ``alpha`` approaches an IID split.
    """
    return [_take(shard, part) for part in dirichlet_indices(shard.y, n, alpha, seed, min_examples)]


def dirichlet_indices(
    labels: npt.NDArray[np.int64],
    n: int,
    alpha: float,
    seed: int,
    min_examples: int | None = None,
) -> list[Indices]:
    """The row indices :func:`partition_dirichlet` gives each of ``n`` agents, in shard order;
    like :func:`holdout_indices`, a function of each class's positions only."""
    _check_agents(int(labels.shape[0]), n)
    if not (math.isfinite(alpha) and alpha > 0.0):
        raise DataError(f"Dirichlet alpha must be a positive number, got {alpha}")
    total = int(labels.shape[0])
    if min_examples is None:
        floor = max(1, min(DEFAULT_MIN_EXAMPLES, total // (4 * n)))
    elif min_examples < 1:
        raise DataError(f"min_examples must be at least 1, got {min_examples}")
    elif min_examples * n > total:
        raise DataError(
            f"cannot give each of {n} agents {min_examples} examples from {total} examples"
        )
    else:
        floor = min_examples
    rng = _rng(seed)
    by_class = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    for _ in range(MAX_DIRICHLET_DRAWS):
        parts = _dirichlet_draw(by_class, n, alpha, total, rng)
        if min(len(part) for part in parts) >= floor:
            return [rng.permutation(part) for part in parts]
    raise DataError(
        f"no Dirichlet(alpha={alpha}) split of {total} examples over {n} agents gave every agent "
        f"{floor} examples in {MAX_DIRICHLET_DRAWS} draws; raise alpha, lower min_examples or "
        "use fewer agents"
    )


def label_histogram(shards: Sequence[Shard], num_classes: int) -> npt.NDArray[np.int64]:
    """Count each label in each shard: ``[len(shards), num_classes]``, int64."""
    if num_classes < 1:
        raise DataError(f"num_classes must be at least 1, got {num_classes}")
    histogram = np.zeros((len(shards), num_classes), dtype=np.int64)
    for row, shard in enumerate(shards):
        if len(shard) and int(shard.y.max()) >= num_classes:
            raise DataError(
                f"shard {row} has label {int(shard.y.max())}, outside 0..{num_classes - 1}"
            )
        histogram[row] = np.bincount(shard.y, minlength=num_classes)
    return histogram


def _dirichlet_draw(
    by_class: list[Indices], n: int, alpha: float, total: int, rng: np.random.Generator
) -> list[Indices]:
    parts: list[list[Indices]] = [[] for _ in range(n)]
    sizes = np.zeros(n, dtype=np.int64)
    for members in by_class:
        shuffled = rng.permutation(members)
        proportions = rng.dirichlet(np.full(n, alpha))
        open_agents = proportions * (sizes < total / n)
        if open_agents.sum() > 0.0:
            proportions = open_agents / open_agents.sum()
        cuts = (np.cumsum(proportions) * len(shuffled)).astype(np.intp)[:-1]
        for agent, piece in enumerate(np.split(shuffled, cuts)):
            parts[agent].append(piece)
            sizes[agent] += len(piece)
    return [np.concatenate(pieces) for pieces in parts]


def _largest_remainder(shares: npt.NDArray[np.float64], total: int) -> npt.NDArray[np.intp]:
    quotas = np.floor(shares).astype(np.intp)
    short = total - int(quotas.sum())
    if short > 0:
        by_remainder = np.argsort(-(shares - quotas), kind="stable")
        quotas[by_remainder[:short]] += 1
    return quotas


def _check_agents(examples: int, n: int) -> None:
    if n < 1:
        raise DataError(f"need at least 1 agent, got {n}")
    if n > examples:
        raise DataError(f"cannot give {n} agents an example each from {examples} examples")


def _rng(seed: int) -> np.random.Generator:
    if seed < 0:
        raise DataError(f"seed must be non-negative, got {seed}")
    return np.random.default_rng(seed)


def _take(shard: Shard, indices: Indices) -> Shard:
    return Shard(x=shard.x[indices], y=shard.y[indices])
