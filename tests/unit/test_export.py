"""export_model on a briefly trained digits model: real Keras, the real TFLite converter, LiteRT."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import numpy.typing as npt
import pytest

from agent.numpy_trainer import NumpyTrainer
from cloud.pipelines import load_digits, split_holdout
from coordinator.export import (
    DEFAULT_MIN_AGREEMENT_RATIO,
    ExportReport,
    export_model,
    litert_predict,
    refused_variants,
)
from coordinator.job import ModelSpec
from coordinator.model import GlobalModel
from protocol import ModelRef, Normalization, TrainConfig, Weights, decode, encode, new_envelope


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
        model.initial_weights,
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


def test_variants_that_agree_are_announced_with_their_agreements(exported: Exported) -> None:
    report = exported.report
    assert report.refused == {}
    assert report.variants() == {
        "tflite": report.tflite_float,
        "tflite_dynamic": report.tflite_dynamic,
    }
    ref = report.model_ref(name="digits-export", version=3, job_id="job", accuracy=0.9)
    assert ref.version == 3
    assert ref.url == report.keras.resolve().as_uri()
    assert ref.sha256 == report.sha256["keras"]
    assert {a.format for a in ref.variants} == {"tflite", "tflite_dynamic"}
    for artifact, kind in ((ref.artifact("tflite"), "tflite_float"),
                           (ref.artifact("tflite_dynamic"), "tflite_dynamic")):  # fmt: skip
        assert artifact is not None
        assert artifact.sha256 == report.sha256[kind]
        assert artifact.size_bytes == report.size_bytes[kind]
    served = report.model_ref(
        name="digits-export", version=3, job_id="job", accuracy=0.9, base_url="http://h:81/"
    )
    assert served.url == f"http://h:81/artifacts/{report.keras.name}"
    assert [a.url for a in served.variants] == [
        f"http://h:81/artifacts/{report.tflite_float.name}",
        f"http://h:81/artifacts/{report.tflite_dynamic.name}",
    ]
    assert ref.metrics["tflite_agreement"] == report.agreement_float
    assert ref.metrics["tflite_dynamic_agreement"] == report.agreement_dynamic
    assert decode(encode(new_envelope(ref, sender="coordinator"))).body == ref
    assert ref.normalization is None
    stats = Normalization(offset=(0.0,) * 64, scale=(0.0625,) * 64)
    shipped = report.model_ref(
        name="digits-export", version=3, job_id="job", accuracy=0.9, normalization=stats
    )
    body = decode(encode(new_envelope(shipped, sender="coordinator"))).body
    assert isinstance(body, ModelRef)
    assert body.normalization == stats


def test_a_dynamic_variant_far_below_the_float_one_is_refused(exported: Exported) -> None:
    """Issue 13: a dynamic-range variant agreeing on 11% (float: 100%) was announced."""
    agreement = {"tflite_float": 1.0, "tflite_dynamic": 0.11}
    refused = refused_variants(agreement, min_ratio=DEFAULT_MIN_AGREEMENT_RATIO)
    assert set(refused) == {"tflite_dynamic"}
    assert "0.1100" in refused["tflite_dynamic"]
    report = dataclasses.replace(exported.report, agreement_dynamic=0.11, refused=refused)
    ref = report.model_ref(name="digits-export", version=1, job_id="job", accuracy=0.9)
    assert [a.format for a in ref.variants] == ["tflite"]
    assert ref.metrics["tflite_dynamic_agreement"] == 0.11  # the evidence still travels


@pytest.mark.parametrize(
    ("float_", "dynamic", "ratio", "refused"),
    [
        (1.0, 0.9, 0.9, set()),  # exactly at the threshold
        (1.0, 0.89, 0.9, {"tflite_dynamic"}),
        (0.8, 0.75, 0.9, {"tflite_float"}),  # measured against the float one, not Keras
        (0.5, 0.1, 0.9, {"tflite_float", "tflite_dynamic"}),
        (0.5, 0.1, 0.0, set()),  # 0 turns the check off
    ],
)
def test_refusal_thresholds(float_: float, dynamic: float, ratio: float, refused: set[str]) -> None:
    agreement = {"tflite_float": float_, "tflite_dynamic": dynamic}
    assert set(refused_variants(agreement, min_ratio=ratio)) == refused


def test_the_threshold_must_be_a_share() -> None:
    with pytest.raises(ValueError, match="min_ratio"):
        refused_variants({"tflite_float": 1.0, "tflite_dynamic": 1.0}, min_ratio=1.5)
