"""export_model on a briefly trained digits model: real Keras, the real TFLite converter, LiteRT."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import numpy.typing as npt
import pytest

from agent.numpy_trainer import NumpyTrainer
from cloud.pipelines import load_digits, split_holdout
from coordinator.export import ExportReport, export_model, litert_predict
from coordinator.job import ModelSpec
from coordinator.model import GlobalModel
from protocol import TrainConfig, Weights


@dataclass(frozen=True)
class Exported:
    model: GlobalModel
    weights: Weights
    report: ExportReport
    out_dir: Path

    @property
    def x(self) -> npt.NDArray[np.float32]:
        return self.model.holdout.x.reshape(len(self.model.holdout), -1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    rest, holdout = split_holdout(load_digits(), 0.2, seed=0)
    model = GlobalModel(ModelSpec(name="digits-export", hidden=[32]), holdout)
    fit = NumpyTrainer(rest).fit(
        model.config_json,
        list(model.initial_weights),
        TrainConfig(local_steps=150, batch_size=32, learning_rate=0.3, seed=0),
        stop_at=float("inf"),
    )
    weights = tuple(fit.weights)
    out_dir = tmp_path_factory.mktemp("export") / "model"
    return Exported(
        model=model,
        weights=weights,
        report=export_model(model, weights, out_dir),
        out_dir=out_dir,
    )


def test_the_exported_model_is_trained(exported: Exported) -> None:
    # Agreement on a model that predicts one class would prove little.
    assert exported.model.evaluate(exported.weights).accuracy > 0.8


def test_export_writes_exactly_the_three_files(exported: Exported) -> None:
    report = exported.report

    assert report.keras == exported.out_dir / "digits-export.keras"
    assert report.tflite_float == exported.out_dir / "digits-export.float.tflite"
    assert report.tflite_dynamic == exported.out_dir / "digits-export.dynamic.tflite"
    # No temporary files are left behind.
    assert sorted(p.name for p in exported.out_dir.iterdir()) == [
        "digits-export.dynamic.tflite",
        "digits-export.float.tflite",
        "digits-export.keras",
    ]


def test_the_report_describes_the_files_on_disk(exported: Exported) -> None:
    report = exported.report
    files = {
        "keras": report.keras,
        "tflite_float": report.tflite_float,
        "tflite_dynamic": report.tflite_dynamic,
    }

    assert set(report.sha256) == set(report.size_bytes) == set(files)
    for kind, path in files.items():
        data = path.read_bytes()
        assert report.sha256[kind] == hashlib.sha256(data).hexdigest(), kind
        assert report.size_bytes[kind] == len(data) > 0, kind
    assert report.sha256["tflite_float"] != report.sha256["tflite_dynamic"]


def test_tflite_agrees_with_keras(exported: Exported) -> None:
    assert exported.report.agreement_float == 1.0
    assert exported.report.agreement_dynamic >= 0.95


def test_float_tflite_matches_keras_probabilities_under_litert(exported: Exported) -> None:
    keras_probs = exported.model.predict(exported.weights, exported.x)

    tflite_probs = litert_predict(exported.report.tflite_float.read_bytes(), exported.x)

    np.testing.assert_allclose(tflite_probs, keras_probs, rtol=0, atol=1e-5)


def test_the_keras_file_reloads_with_the_exported_weights(exported: Exported) -> None:
    reloaded = keras.models.load_model(exported.report.keras)

    for got, want in zip(reloaded.get_weights(), exported.weights, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(
        np.asarray(reloaded(exported.x, training=False)),
        exported.model.predict(exported.weights, exported.x),
        rtol=0,
        atol=1e-6,
    )
