"""Model runtimes: a ``.tflite`` file under LiteRT or a ``.keras`` file under TensorFlow, behind
one small interface. Runs inside a worker process (:mod:`cloud.roma.worker`), never on the
server's event loop.

ROMA serves models with one input and one output tensor whose first dimension is the batch
(the models hyperfleet trains: ``[batch, features] → [batch, classes]``); a model file with more
tensors is refused with :class:`~cloud.roma.errors.ModelLoadError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from .errors import ModelLoadError

__all__ = ["RUNTIME_SUFFIXES", "Runtime", "RuntimeName", "TensorSpec", "load_runtime"]

RuntimeName = Literal["litert", "keras"]
RUNTIME_SUFFIXES: dict[str, RuntimeName] = {".tflite": "litert", ".keras": "keras"}


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorSpec:
    """One tensor of a model: NumPy dtype name and shape, ``-1`` for the batch dimension."""

    dtype: str
    shape: tuple[int, ...]


class Runtime(Protocol):
    name: RuntimeName
    input: TensorSpec
    output: TensorSpec

    def predict(self, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """``x`` is ``[batch, *input.shape[1:]]``; the result ``[batch, *output.shape[1:]]``."""
        ...


class _LiteRT:
    name: RuntimeName = "litert"

    def __init__(self, path: Path, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(
                f"{path.name}: {len(inputs)} inputs and {len(outputs)} outputs; ROMA serves "
                "models with one of each"
            )
        self._in = inputs[0]
        self._out = outputs[0]
        self.input = TensorSpec(
            dtype=np.dtype(self._in["dtype"]).name,
            shape=(-1, *(int(d) for d in self._in["shape"][1:])),
        )
        self.output = TensorSpec(
            dtype=np.dtype(self._out["dtype"]).name,
            shape=(-1, *(int(d) for d in self._out["shape"][1:])),
        )
        self._batch = -1

    def predict(self, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        interpreter = self._interpreter
        if x.shape[0] != self._batch:
            interpreter.resize_tensor_input(self._in["index"], list(x.shape))
            interpreter.allocate_tensors()
            self._batch = x.shape[0]
        interpreter.set_tensor(self._in["index"], np.ascontiguousarray(x))
        interpreter.invoke()
        return np.array(interpreter.get_tensor(self._out["index"]))


class _Keras:
    name: RuntimeName = "keras"

    def __init__(self, path: Path, threads: int) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        import keras

        self._model = keras.saving.load_model(path, compile=False)
        if len(self._model.inputs) != 1 or len(self._model.outputs) != 1:
            raise ModelLoadError(f"{path.name}: ROMA serves models with one input and one output")
        (inp,) = self._model.inputs
        (out,) = self._model.outputs
        self.input = TensorSpec(
            dtype=np.dtype(inp.dtype).name, shape=(-1, *(int(d or -1) for d in inp.shape[1:]))
        )
        self.output = TensorSpec(
            dtype=np.dtype(out.dtype).name, shape=(-1, *(int(d or -1) for d in out.shape[1:]))
        )

    def predict(self, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return np.asarray(self._model(x, training=False))


def load_runtime(path: Path, *, threads: int = 1) -> Runtime:
    """Load the model file at ``path`` (its suffix picks the runtime) with ``threads`` compute
    threads. Raises :class:`ModelLoadError` for an unknown suffix, a file the runtime cannot
    read, or a model with more than one input or output."""
    path = Path(path)
    kind = RUNTIME_SUFFIXES.get(path.suffix)
    if kind is None:
        raise ModelLoadError(f"{path.name}: not a model file ({', '.join(RUNTIME_SUFFIXES)})")
    try:
        return _LiteRT(path, threads) if kind == "litert" else _Keras(path, threads)
    except ModelLoadError:
        raise
    except Exception as exc:  # each runtime raises its own zoo (RuntimeError, ValueError, ...)
        raise ModelLoadError(f"{path.name}: cannot load under {kind}: {exc}") from exc
