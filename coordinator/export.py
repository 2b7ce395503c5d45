"""Exporting the final model: Keras (``.keras``) and TFLite (float and dynamic-range quantised),
each TFLite file checked under LiteRT against Keras on the holdout (argmax agreement).

The check is enforced: a variant that agrees with its reference on less than
``min_agreement_ratio`` (default 0.9) times the reference's agreement is *refused* — its file is
written for inspection but it is left out of :meth:`ExportReport.variants` and of the
:class:`~protocol.ModelRef` that :meth:`ExportReport.model_ref` builds, with a warning. The float
variant's reference is Keras itself (agreement 1); the dynamic-range variant's is the float one.
Every agreement travels in the ``ModelRef``'s ``metrics``, refused or not.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import numpy.typing as npt

from link import atomic_write_bytes
from protocol import Artifact, ModelRef, Normalization, Weights

from .errors import CoordinatorError
from .model import GlobalModel

__all__ = [
    "DEFAULT_MIN_AGREEMENT_RATIO",
    "ExportError",
    "ExportReport",
    "export_model",
    "litert_predict",
    "refused_variants",
]

DEFAULT_MIN_AGREEMENT_RATIO = 0.9
"""A TFLite variant is announced only if it agrees with its reference on at least this share of
what the reference itself agrees on."""

_VARIANT_NAMES = {"tflite_float": "tflite", "tflite_dynamic": "tflite_dynamic"}
"""Report kinds and their names in ``ModelRef.variants``."""

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
    refused: Mapping[str, str] = field(default_factory=dict)
    """Variants left out (``"tflite_float"``, ``"tflite_dynamic"``) and why."""

    def variants(self) -> dict[str, Path]:
        """The TFLite files fit to announce, by their ``ModelRef.variants`` name."""
        paths = {"tflite_float": self.tflite_float, "tflite_dynamic": self.tflite_dynamic}
        return {_VARIANT_NAMES[k]: p for k, p in paths.items() if k not in self.refused}

    def model_ref(
        self,
        *,
        name: str,
        version: int,
        job_id: str,
        accuracy: float,
        base_url: str | None = None,
        normalization: Normalization | None = None,
    ) -> ModelRef:
        """The ``ModelRef`` announcing this export: the Keras file, the variants not refused
        (each with its sha256 and size), and every agreement in ``metrics``.

        ``base_url`` is the artifact server's (``http://host:port``, see
        :mod:`link.artifacts`): files are then named ``{base_url}/artifacts/{file}``, which any
        host can fetch; without it, ``file://`` URLs that only this machine can open.
        ``normalization``: how the training inputs were normalised, for serving."""
        kinds = {"tflite": "tflite_float", "tflite_dynamic": "tflite_dynamic"}

        def url(path: Path) -> str:
            if base_url is None:
                return path.resolve().as_uri()
            return f"{base_url.rstrip('/')}/artifacts/{quote(path.name)}"

        return ModelRef(
            name=name,
            version=version,
            job_id=job_id,
            format="keras",
            url=url(self.keras),
            sha256=self.sha256["keras"],
            size_bytes=self.size_bytes["keras"],
            metrics={
                "accuracy": accuracy,
                "tflite_agreement": self.agreement_float,
                "tflite_dynamic_agreement": self.agreement_dynamic,
            },
            variants=tuple(
                Artifact(
                    format=fmt,
                    url=url(path),
                    sha256=self.sha256[kinds[fmt]],
                    size_bytes=self.size_bytes[kinds[fmt]],
                )
                for fmt, path in self.variants().items()
            ),
            normalization=normalization,
        )


def refused_variants(agreement: Mapping[str, float], *, min_ratio: float) -> dict[str, str]:
    """Which of ``agreement``'s variants (``tflite_float``, ``tflite_dynamic``) to refuse, and why.

    The float variant must agree with Keras on ``min_ratio`` of the holdout; the dynamic-range
    variant on ``min_ratio`` times what the float variant agrees on.
    """
    if not 0 <= min_ratio <= 1:
        raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio}")
    references = {"tflite_float": ("Keras", 1.0)}
    references["tflite_dynamic"] = ("the float TFLite model", agreement["tflite_float"])
    refused = {}
    for kind, (what, reference) in references.items():
        need = min_ratio * reference
        if agreement[kind] < need:
            refused[kind] = (
                f"agrees with Keras on {agreement[kind]:.4f} of the holdout; below "
                f"{min_ratio:g} x {reference:.4f} ({what}) = {need:.4f}"
            )
    return refused


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


def export_model(
    model: GlobalModel,
    weights: Weights,
    out_dir: Path,
    *,
    min_agreement_ratio: float = DEFAULT_MIN_AGREEMENT_RATIO,
) -> ExportReport:
    """Write the Keras and both TFLite files; check each TFLite file against Keras on the
    holdout and refuse a variant below ``min_agreement_ratio`` (see :func:`refused_variants`)."""
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
    refused = refused_variants(agreement, min_ratio=min_agreement_ratio)
    for kind, why in refused.items():
        _log.warning("export %s: %s variant refused, not announced: it %s", name, kind, why)
    return ExportReport(
        keras=keras_path,
        tflite_float=paths["tflite_float"],
        tflite_dynamic=paths["tflite_dynamic"],
        agreement_float=agreement["tflite_float"],
        agreement_dynamic=agreement["tflite_dynamic"],
        sha256=digests,
        size_bytes=sizes,
        refused=refused,
    )
