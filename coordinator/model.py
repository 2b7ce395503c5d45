"""The global model: built from the job's :class:`~coordinator.job.ModelSpec` with Keras, evaluated
on the server-side holdout. TensorFlow is imported here, in the coordinator, and nowhere on the
agent's import path."""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol import Shard, Weights

from .errors import JobConfigError
from .job import ModelSpec

__all__ = ["Evaluation", "GlobalModel", "image_shape"]


def image_shape(spec: ModelSpec, input_dim: int) -> list[int]:
    """``[height, width, channels]`` a CNN reshapes its flat input to: ``spec.image_shape``, or
    a square single-channel image of ``input_dim`` pixels. Raises
    :class:`~coordinator.errors.JobConfigError` when neither fits ``input_dim``."""
    if spec.image_shape is not None:
        shape = list(spec.image_shape)
    else:
        side = math.isqrt(input_dim)
        shape = [side, side, 1]
    if math.prod(shape) != input_dim:
        raise JobConfigError(f"model.image_shape {shape} does not hold {input_dim} input features")
    return shape


class Evaluation:
    __slots__ = ("accuracy", "loss", "num_examples")

    def __init__(self, *, loss: float, accuracy: float, num_examples: int) -> None:
        self.loss = loss
        self.accuracy = accuracy
        self.num_examples = num_examples


class GlobalModel:
    """Architecture, initial weights and holdout evaluation of one job's model."""

    def __init__(self, spec: ModelSpec, holdout: Shard) -> None:
        import keras

        self.spec = spec
        self.holdout = holdout
        input_dim = spec.input_dim or int(np.prod(holdout.x.shape[1:]))
        num_classes = spec.num_classes or max(holdout.num_classes, 2)
        keras.utils.set_random_seed(spec.seed)
        layers: list[Any] = [keras.Input((input_dim,))]
        if spec.conv:
            layers.append(keras.layers.Reshape(tuple(image_shape(spec, input_dim))))
            for filters in spec.conv:
                layers.append(keras.layers.Conv2D(filters, 3, activation=spec.activation))
                layers.append(keras.layers.MaxPooling2D(2))
            layers.append(keras.layers.Flatten())
        layers += [keras.layers.Dense(h, activation=spec.activation) for h in spec.hidden]
        layers.append(keras.layers.Dense(num_classes, activation="softmax"))
        self.keras_model = keras.Sequential(layers, name=spec.name.replace("-", "_"))
        self.config_json: str = self.keras_model.to_json()
        self.initial_weights: Weights = tuple(
            np.asarray(w, dtype=np.float32) for w in self.keras_model.get_weights()
        )
        self.input_dim = input_dim
        self.num_classes = num_classes
        self._x = holdout.x.reshape(len(holdout), -1)
        self._lock = threading.Lock()

    @property
    def num_parameters(self) -> int:
        return int(sum(w.size for w in self.initial_weights))

    def predict(self, weights: Weights, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        with self._lock:  # one Keras model object: serialise set_weights + call
            self.keras_model.set_weights(list(weights))
            return np.asarray(self.keras_model(x, training=False), dtype=np.float32)

    def evaluate(self, weights: Weights) -> Evaluation:
        probs = self.predict(weights, self._x)
        y = self.holdout.y
        n = len(y)
        picked = np.clip(probs[np.arange(n), y], 1e-7, 1.0)
        return Evaluation(
            loss=float(np.mean(-np.log(picked))),
            accuracy=float(np.mean(np.argmax(probs, axis=1) == y)),
            num_examples=n,
        )
