"""Local training with Keras 3 on TensorFlow. TensorFlow is imported on first use, not at import."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from protocol import Shard, TrainConfig, Weights

from .errors import TrainingError
from .trainer import EvalResult, FitResult, batch_schedule, score_probabilities

__all__ = ["KerasTrainer"]


class _Compiled:
    """A model built from its JSON config, with its traced training step."""

    def __init__(self, model_json: str) -> None:
        import keras
        import tensorflow as tf

        try:
            self.model = keras.models.model_from_json(model_json)
        except Exception as exc:  # Keras raises many types for a bad config
            raise TrainingError(f"cannot build the model from its config: {exc}") from exc
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy()
        self.optimizer = keras.optimizers.SGD(learning_rate=0.1)
        variables = self.model.trainable_variables

        @tf.function(reduce_retracing=True)  # type: ignore[untyped-decorator]
        def step(x: Any, y: Any, mu: Any, anchors: list[Any]) -> Any:
            with tf.GradientTape() as tape:
                loss = self.loss_fn(y, self.model(x, training=True))
                prox = tf.add_n(
                    [
                        tf.reduce_sum(tf.square(v - a))
                        for v, a in zip(variables, anchors, strict=True)
                    ]
                )
                objective = loss + 0.5 * mu * prox
            grads = tape.gradient(objective, variables)
            self.optimizer.apply_gradients(zip(grads, variables, strict=True))
            return objective

        self.step: Callable[..., Any] = step


class KerasTrainer:
    """Trains the instructed Keras model on ``shard``; one model cache per distinct config."""

    name = "keras"

    def __init__(self, shard: Shard, *, threads: int | None = None) -> None:
        self._shard = shard
        self._threads = threads
        self._cache: dict[str, _Compiled] = {}
        self._lock = threading.Lock()

    def _compiled(self, model_json: str) -> _Compiled:
        key = hashlib.sha256(model_json.encode()).hexdigest()
        with self._lock:
            if key not in self._cache:
                _configure_threads(self._threads)
                self._cache.clear()  # one job's model at a time keeps memory flat
                self._cache[key] = _Compiled(model_json)
            return self._cache[key]

    def _load(self, c: _Compiled, weights: Weights) -> None:
        try:
            c.model.set_weights(list(weights))
        except ValueError as exc:
            raise TrainingError(f"weights do not fit the model: {exc}") from exc

    def fit(
        self, model: str, weights: Weights, config: TrainConfig, *, stop_at: float
    ) -> FitResult:
        import tensorflow as tf

        c = self._compiled(model)
        self._load(c, weights)
        c.optimizer.learning_rate.assign(config.learning_rate)
        anchors = [tf.constant(v.numpy()) for v in c.model.trainable_variables]
        mu = tf.constant(config.proximal_mu, dtype=tf.float32)
        started = time.perf_counter()
        steps, seen, total = 0, 0, 0.0
        for xb, yb in batch_schedule(self._shard, config, stop_at=stop_at):
            total += float(c.step(tf.constant(xb), tf.constant(yb), mu, anchors))
            steps += 1
            seen += len(yb)
        return FitResult(
            weights=tuple(np.asarray(w, dtype=np.float32) for w in c.model.get_weights()),
            steps=steps,
            num_examples=seen,
            loss=total / steps if steps else float("nan"),
            train_s=time.perf_counter() - started,
        )

    def evaluate(self, model: str, weights: Weights) -> EvalResult:
        c = self._compiled(model)
        self._load(c, weights)
        if len(self._shard) == 0:
            return score_probabilities(np.zeros((0, 1)), self._shard.y)
        probs = np.asarray(c.model(self._shard.x, training=False))
        return score_probabilities(probs, self._shard.y)


_threads_set = False


def _configure_threads(threads: int | None) -> None:
    """Cap TensorFlow's thread pools once per process (it refuses after first use)."""
    global _threads_set
    if threads is None or _threads_set:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, threads // 2))
    except RuntimeError:
        pass  # already initialised by another agent in this process: keep its setting
    _threads_set = True
