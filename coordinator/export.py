"""Exporting the final model: Keras (``.keras``) and TFLite (float and dynamic-range quantised),
each TFLite file checked under LiteRT against Keras on the holdout (argmax agreement)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from link import atomic_write_bytes
from protocol import Weights

from .errors import CoordinatorError
from .model import GlobalModel

__all__ = ["ExportError", "ExportReport", "export_model", "litert_predict"]

_log = logging.getLogger(__name__)


class ExportError(CoordinatorError):
    """The model could not be exported or its TFLite form disagrees with Keras."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportReport:
    keras: Path
    tflite_float: Path
    tflite_dynamic: Path
    agreement_float: float
    agreement_dynamic: float
    sha256: dict[str, str]
    size_bytes: dict[str, int]


def litert_predict(model_bytes: bytes, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Run a TFLite model under LiteRT (``ai_edge_litert``) on a batch."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x.astype(np.float32))
    interpreter.invoke()
    return np.asarray(interpreter.get_tensor(out["index"]), dtype=np.float32)


def _convert(keras_model: Any, *, quantize: bool) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    with contextlib.redirect_stdout(
        io.StringIO()
    ):  # the converter prints its SavedModel's signature
        return bytes(converter.convert())


def export_model(model: GlobalModel, weights: Weights, out_dir: Path) -> ExportReport:
    name = model.spec.name
    out_dir.mkdir(parents=True, exist_ok=True)
    x = model.holdout.x.reshape(len(model.holdout), -1).astype(np.float32)
    reference = np.argmax(model.predict(weights, x), axis=1)
    try:
        keras_path = out_dir / f"{name}.keras"
        tmp = out_dir / f".{name}.tmp.keras"
        model.keras_model.save(tmp)
        os.replace(tmp, keras_path)
        blobs = {
            "tflite_float": _convert(model.keras_model, quantize=False),
            "tflite_dynamic": _convert(model.keras_model, quantize=True),
        }
    except Exception as exc:  # TensorFlow's converter raises many types
        raise ExportError(f"cannot export model {name}: {exc}") from exc
    paths = {"keras": keras_path}
    agreement: dict[str, float] = {}
    for kind, blob in blobs.items():
        path = out_dir / f"{name}.{'float' if kind == 'tflite_float' else 'dynamic'}.tflite"
        atomic_write_bytes(path, blob)
        paths[kind] = path
        agreement[kind] = float(np.mean(np.argmax(litert_predict(blob, x), axis=1) == reference))
    digests = {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in paths.items()}
    sizes = {k: p.stat().st_size for k, p in paths.items()}
    _log.info(
        "exported %s: TFLite/Keras agreement %.4f (float), %.4f (dynamic range)",
        name,
        agreement["tflite_float"],
        agreement["tflite_dynamic"],
    )
    return ExportReport(
        keras=keras_path,
        tflite_float=paths["tflite_float"],
        tflite_dynamic=paths["tflite_dynamic"],
        agreement_float=agreement["tflite_float"],
        agreement_dynamic=agreement["tflite_dynamic"],
        sha256=digests,
        size_bytes=sizes,
    )
