"""Local training of dense networks in NumPy: the same Keras model config, no TensorFlow.

Reads a Keras ``Sequential`` JSON config made of ``InputLayer``/``Dense``/``Dropout`` layers (the
models hyperfleet's jobs build for tabular and image-vector data), keeps weights in Keras order
(kernel, bias per layer) and trains with the same objective as :mod:`agent.keras_trainer`: sparse
categorical cross-entropy, plain SGD, and FedProx's proximal term. It lets a small device, or fifty
emulated agents in one process, train without paying TensorFlow's memory.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from protocol import Shard, TrainConfig, Weights

from .errors import TrainingError
from .trainer import EvalResult, FitResult, batch_schedule, score_probabilities

__all__ = ["DenseSpec", "NumpyTrainer", "parse_dense_model"]

_ACTIVATIONS = ("linear", "relu", "softmax", "tanh", "sigmoid")
Array = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class DenseSpec:
    """The parts of a Keras config this trainer needs: layer widths and activations."""

    input_dim: int
    units: tuple[int, ...]
    activations: tuple[str, ...]
    use_bias: tuple[bool, ...]


@functools.lru_cache(maxsize=8)
def parse_dense_model(model_json: str) -> DenseSpec:
    try:
        cfg = json.loads(model_json)
        if cfg["class_name"] != "Sequential":
            raise TrainingError(
                f"the NumPy trainer runs Sequential models, not {cfg['class_name']}"
            )
        layers = cfg["config"]["layers"]
        input_dim: int | None = None
        units: list[int] = []
        acts: list[str] = []
        biases: list[bool] = []
        for layer in layers:
            kind, lc = layer["class_name"], layer["config"]
            if kind == "InputLayer":
                shape = lc.get("batch_shape") or lc.get("batch_input_shape")
                if not shape or len(shape) != 2:
                    raise TrainingError(f"the NumPy trainer needs a flat input, got {shape}")
                input_dim = int(shape[1])
            elif kind == "Dense":
                act = lc.get("activation", "linear")
                if act not in _ACTIVATIONS:
                    raise TrainingError(f"activation {act!r} is not supported by the NumPy trainer")
                units.append(int(lc["units"]))
                acts.append(act)
                biases.append(bool(lc.get("use_bias", True)))
            elif kind == "Dropout":
                continue  # identity at the rates used here; documented limitation
            else:
                raise TrainingError(f"layer {kind} is not supported by the NumPy trainer")
    except (KeyError, TypeError, ValueError) as exc:
        raise TrainingError(f"not a Keras model config: {exc}") from exc
    if input_dim is None or not units or acts[-1] != "softmax":
        raise TrainingError(
            "the NumPy trainer needs an InputLayer, Dense layers and a softmax output"
        )
    return DenseSpec(input_dim, tuple(units), tuple(acts), tuple(biases))


def _act(name: str, z: Array) -> Array:
    if name == "relu":
        return np.maximum(z, 0)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    if name == "softmax":
        e: Array = np.exp(z - z.max(axis=1, keepdims=True))
        return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float32)
    return z


def _act_grad(name: str, a: Array) -> Array:
    """Derivative with respect to the pre-activation, given the activation ``a``."""
    if name == "relu":
        return (a > 0).astype(np.float32)
    if name == "tanh":
        return 1.0 - a * a
    if name == "sigmoid":
        return a * (1.0 - a)
    return np.ones_like(a)


class _Net:
    def __init__(self, spec: DenseSpec, weights: Weights) -> None:
        self.spec = spec
        self.kernels: list[Array] = []
        self.biases: list[Array | None] = []
        it = iter(weights)
        fan_in = spec.input_dim
        try:
            for units, bias in zip(spec.units, spec.use_bias, strict=True):
                k = np.array(next(it), dtype=np.float32)
                if k.shape != (fan_in, units):
                    raise TrainingError(
                        f"kernel of shape {k.shape}, the model needs {(fan_in, units)}"
                    )
                self.kernels.append(k)
                b = np.array(next(it), dtype=np.float32) if bias else None
                if b is not None and b.shape != (units,):
                    raise TrainingError(f"bias of shape {b.shape}, the model needs {(units,)}")
                self.biases.append(b)
                fan_in = units
        except StopIteration as exc:
            raise TrainingError("too few weight arrays for the model") from exc
        if next(it, None) is not None:
            raise TrainingError("more weight arrays than the model has")

    def weights(self) -> list[Array]:
        out: list[Array] = []
        for k, b in zip(self.kernels, self.biases, strict=True):
            out.append(k.copy())
            if b is not None:
                out.append(b.copy())
        return out

    def forward(self, x: Array) -> list[Array]:
        acts = [x]
        for k, b, name in zip(self.kernels, self.biases, self.spec.activations, strict=True):
            z = acts[-1] @ k
            if b is not None:
                z = z + b
            acts.append(_act(name, z))
        return acts

    def step(
        self, x: Array, y: npt.NDArray[np.int64], lr: float, mu: float, anchor: list[Array]
    ) -> float:
        acts = self.forward(x)
        probs = acts[-1]
        n = len(y)
        loss = float(np.mean(-np.log(np.clip(probs[np.arange(n), y], 1e-7, 1.0))))
        delta = probs.copy()
        delta[np.arange(n), y] -= 1.0
        delta /= n  # d(mean CE)/d(logits) for a softmax output
        params = [
            p for pair in zip(self.kernels, self.biases, strict=True) for p in pair if p is not None
        ]
        prox = (
            0.5 * mu * sum(float(np.sum((p - a) ** 2)) for p, a in zip(params, anchor, strict=True))
        )
        grads: list[tuple[Array, Array | None]] = []
        for i in range(len(self.kernels) - 1, -1, -1):
            gk = acts[i].T @ delta
            gb = delta.sum(axis=0) if self.biases[i] is not None else None
            grads.append((gk, gb))
            if i > 0:
                delta = (delta @ self.kernels[i].T) * _act_grad(
                    self.spec.activations[i - 1], acts[i]
                )
        grads.reverse()
        j = 0
        for i, (gk, gb) in enumerate(grads):
            self.kernels[i] -= lr * (gk + mu * (self.kernels[i] - anchor[j]))
            j += 1
            b = self.biases[i]
            if b is not None and gb is not None:
                b -= lr * (gb + mu * (b - anchor[j]))
                j += 1
        return loss + prox


class NumpyTrainer:
    """Dense networks in NumPy; the same contract as the Keras trainer."""

    name = "numpy"

    def __init__(self, shard: Shard) -> None:
        self._shard = shard

    def fit(
        self, model: str, weights: Weights, config: TrainConfig, *, stop_at: float
    ) -> FitResult:
        net = _Net(parse_dense_model(model), weights)
        anchor = net.weights()
        started = time.perf_counter()
        steps, seen, total = 0, 0, 0.0
        for xb, yb in batch_schedule(self._shard, config, stop_at=stop_at):
            total += net.step(xb, yb, config.learning_rate, config.proximal_mu, anchor)
            steps += 1
            seen += len(yb)
        return FitResult(
            weights=tuple(net.weights()),
            steps=steps,
            num_examples=seen,
            loss=total / steps if steps else float("nan"),
            train_s=time.perf_counter() - started,
        )

    def evaluate(self, model: str, weights: Weights) -> EvalResult:
        net = _Net(parse_dense_model(model), weights)
        if len(self._shard) == 0:
            return score_probabilities(np.zeros((0, 1)), self._shard.y)
        probs = net.forward(self._shard.x)[-1]
        return score_probabilities(probs, self._shard.y)
