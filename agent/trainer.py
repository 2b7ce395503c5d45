"""The local trainer port: fit and evaluate a model on this agent's shard.

Two implementations pass the same contract tests: :class:`~agent.keras_trainer.KerasTrainer`
(TensorFlow, imported lazily) and :class:`~agent.numpy_trainer.NumpyTrainer` (dense networks in
NumPy, for devices and emulated fleets without TensorFlow). Both are synchronous and CPU-bound:
the daemon runs them in a worker thread, never on the event loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from protocol import Shard, TrainConfig, Weights

__all__ = [
    "EvalResult",
    "FitResult",
    "Trainer",
    "batch_schedule",
    "planned_steps",
    "score_probabilities",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class FitResult:
    weights: Weights
    """float32, one array per model tensor (:data:`protocol.Weights`)."""
    steps: int
    num_examples: int
    """Examples processed (steps × batch, the last batch of an epoch may be short)."""
    loss: float
    """Mean training loss over the steps taken (the objective, proximal term included)."""
    train_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalResult:
    loss: float
    accuracy: float
    num_examples: int


class Trainer(Protocol):
    name: str

    def fit(
        self,
        model: str,
        weights: Weights,
        config: TrainConfig,
        *,
        stop_at: float,
    ) -> FitResult:
        """Train from ``weights``; stop after the planned steps or when ``time.monotonic()``
        reaches ``stop_at``, whichever is first."""
        ...

    def evaluate(self, model: str, weights: Weights) -> EvalResult: ...


def planned_steps(config: TrainConfig, num_examples: int) -> int:
    """Steps an instruction asks for: ``local_steps`` when set, else whole epochs."""
    if config.local_steps is not None:
        return max(0, config.local_steps)
    return max(0, config.epochs) * math.ceil(num_examples / max(1, config.batch_size))


def batch_schedule(
    shard: Shard, config: TrainConfig, *, stop_at: float
) -> Iterator[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]]:
    """Yield mini-batches in seeded epoch order until the planned steps or ``stop_at``."""
    n = len(shard)
    if n == 0:
        return
    steps = planned_steps(config, n)
    batch = max(1, min(config.batch_size, n))
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(n)
    pos = 0
    for _ in range(steps):
        if time.monotonic() >= stop_at:
            return
        if pos >= n:
            order = rng.permutation(n)
            pos = 0
        idx = order[pos : pos + batch]
        pos += batch
        yield shard.x[idx], shard.y[idx]


def score_probabilities(probs: npt.NDArray[Any], labels: npt.NDArray[np.int64]) -> EvalResult:
    """Cross-entropy and accuracy of class probabilities ``probs`` against ``labels``."""
    n = len(labels)
    if n == 0:
        return EvalResult(loss=float("nan"), accuracy=0.0, num_examples=0)
    picked = np.clip(probs[np.arange(n), labels], 1e-7, 1.0)
    return EvalResult(
        loss=float(np.mean(-np.log(picked))),
        accuracy=float(np.mean(np.argmax(probs, axis=1) == labels)),
        num_examples=n,
    )
