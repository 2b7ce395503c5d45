"""Where each row goes (the holdout or an agent, and its place in that file), computed from
per-class counts alone, so a distributed job can decide on its driver and join the answer back.

A row is named by its class and its *rank* within that class (0 for the class's first row in
reading order). :func:`holdout_indices`, :func:`iid_indices` and :func:`dirichlet_indices` depend
on the labels only through each class's positions, so running them on the class-sorted label
vector ``[0]*n0 + [1]*n1 + ...`` and mapping position ``start[c] + rank`` back gives exactly the
split :func:`~cloud.pipelines.prepare_federated` makes of the same rows in the same order.

The ``users`` partition keeps a natural owner per row (a LEAF user): the holdout is taken by label
as above and every other row goes to its user's agent; users are dealt to agents by
:func:`assign_users`. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from .errors import DataError
from .partition import dirichlet_indices, holdout_indices, iid_indices

__all__ = ["HOLDOUT", "PartitionKind", "RowAssignment", "assign_by_label", "assign_users"]

PartitionKind = Literal["iid", "dirichlet", "users"]

#: The destination of a holdout row; agents are numbered from 0.
HOLDOUT: Final = -1


@dataclass(frozen=True, slots=True, kw_only=True)
class RowAssignment:
    """Destination and slot of every row, in class-sorted order.

    Row ``rank`` of class ``c`` sits at ``starts[c] + rank``; ``dest`` is :data:`HOLDOUT` or an
    agent, ``slot`` the row's position in its destination's file (``-1`` under the ``users``
    partition, where a shard keeps reading order).
    """

    starts: npt.NDArray[np.int64]
    dest: npt.NDArray[np.int32]
    slot: npt.NDArray[np.int64]

    def lookup(
        self, labels: npt.NDArray[np.int64], ranks: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
        """``(dest, slot)`` of rows given by class and rank; :class:`DataError` when a rank lies
        past its class's count (the counts were taken from other data)."""
        labels = np.asarray(labels, dtype=np.int64)
        ranks = np.asarray(ranks, dtype=np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= self.starts.shape[0] - 1):
            raise DataError("a row's label lies outside the counted classes")
        positions = self.starts[labels] + ranks
        if ranks.size and (ranks.min() < 0 or np.any(positions >= self.starts[labels + 1])):
            raise DataError("a row's rank lies past its class's count; the data changed")
        return self.dest[positions], self.slot[positions]


def assign_by_label(
    counts: Sequence[int] | npt.NDArray[np.int64],
    *,
    agents: int,
    partition: PartitionKind,
    alpha: float,
    holdout: float,
    seed: int,
    min_examples: int | None = None,
) -> RowAssignment:
    """The split of rows with ``counts[c]`` examples of class ``c``: a stratified holdout of
    ``holdout`` of them, then ``iid`` or ``dirichlet(alpha)`` over ``agents`` (the seeded
    functions of :mod:`cloud.pipelines.partition`, the same seed for both steps, as
    :func:`~cloud.pipelines.prepare_federated` does). Under ``users`` only the holdout is decided
    here. :class:`DataError` for parameters the data cannot satisfy."""
    per_class = np.asarray(counts, dtype=np.int64)
    if per_class.ndim != 1 or per_class.size == 0 or per_class.min() < 0:
        raise DataError(f"class counts must be a non-empty list of counts, got {counts!r}")
    if partition not in ("iid", "dirichlet", "users"):
        raise DataError(f"partition must be 'iid', 'dirichlet' or 'users', got {partition!r}")
    starts = np.concatenate([[0], np.cumsum(per_class)]).astype(np.int64)
    labels = np.repeat(np.arange(per_class.size, dtype=np.int64), per_class)
    total = int(labels.shape[0])
    rest, held = holdout_indices(labels, holdout, seed)
    dest = np.full(total, HOLDOUT, dtype=np.int32)
    slot = np.full(total, -1, dtype=np.int64)
    slot[held] = np.arange(held.shape[0], dtype=np.int64)
    if partition == "users":
        dest[rest] = 0  # the user's agent, filled in where the user is known
        return RowAssignment(starts=starts, dest=dest, slot=slot)
    if partition == "iid":
        parts = iid_indices(int(rest.shape[0]), agents, seed)
    else:
        parts = dirichlet_indices(labels[rest], agents, alpha, seed, min_examples)
    for agent, part in enumerate(parts):
        rows = rest[part]
        dest[rows] = agent
        slot[rows] = np.arange(rows.shape[0], dtype=np.int64)
    return RowAssignment(starts=starts, dest=dest, slot=slot)


def assign_users(examples: Mapping[str, int], agents: int, seed: int) -> dict[str, int]:
    """Deal users (with their example counts) to ``agents`` agents: users in name order are
    shuffled with ``seed``, then each goes to the agent holding the fewest examples so far (ties
    to the lowest index). Every agent gets at least one user; :class:`DataError` when there are
    fewer users than agents."""
    if agents < 1:
        raise DataError(f"need at least 1 agent, got {agents}")
    if len(examples) < agents:
        raise DataError(f"cannot give {agents} agents a user each from {len(examples)} users")
    if seed < 0:
        raise DataError(f"seed must be non-negative, got {seed}")
    names = sorted(examples)
    order = np.random.default_rng(seed).permutation(len(names))
    load = np.zeros(agents, dtype=np.int64)
    owner: dict[str, int] = {}
    for position, index in enumerate(order):
        name = names[int(index)]
        # The first `agents` users seed one agent each, so no agent stays empty.
        agent = position if position < agents else int(np.argmin(load))
        owner[name] = agent
        load[agent] += int(examples[name])
    return owner
