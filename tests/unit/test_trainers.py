"""The trainer port: one contract suite run against both trainers, then cross-checks between them.

Both trainers train the same Keras JSON config (a digits MLP from
:class:`~coordinator.model.GlobalModel`) on the same real shard of scikit-learn's digits. The
cross-checks compare the NumPy trainer's forward pass and gradients with TensorFlow's, number for
number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pytest

from agent.errors import TrainingError
from agent.keras_trainer import KerasTrainer
from agent.numpy_trainer import NumpyTrainer, parse_dense_model
from agent.trainer import FitResult, Trainer, planned_steps, score_probabilities
from cloud.pipelines import load_digits, partition_dirichlet, split_holdout
from coordinator.job import ModelSpec
from coordinator.model import GlobalModel
from protocol import Shard, TrainConfig, Weights

FOREVER = math.inf
Arrays = Weights


@dataclass(frozen=True)
class Digits:
    shard: Shard
    """One agent's shard (about 300 examples)."""
    model: GlobalModel
    """The job's model; its ``evaluate`` scores weights on the server-side holdout."""

    @property
    def config(self) -> str:
        return self.model.config_json

    @property
    def initial(self) -> Arrays:
        return tuple(w.copy() for w in self.model.initial_weights)


@pytest.fixture(scope="module")
def digits() -> Digits:
    rest, holdout = split_holdout(load_digits(), 0.2, seed=0)
    shard = partition_dirichlet(rest, 5, alpha=100.0, seed=0)[0]
    assert 250 <= len(shard) <= 350
    return Digits(shard=shard, model=GlobalModel(ModelSpec(hidden=[32, 16]), holdout))


@pytest.fixture(scope="module")
def keras_trainer(digits: Digits) -> KerasTrainer:
    return KerasTrainer(digits.shard)


@pytest.fixture(scope="module")
def numpy_trainer(digits: Digits) -> NumpyTrainer:
    return NumpyTrainer(digits.shard)


@pytest.fixture(params=["keras", "numpy"])
def trainer(request: pytest.FixtureRequest) -> Trainer:
    found: Trainer = request.getfixturevalue(f"{request.param}_trainer")
    assert found.name == request.param
    return found


def fit(trainer: Trainer, digits: Digits, weights: Arrays, **config: Any) -> FitResult:
    return trainer.fit(digits.config, weights, TrainConfig(**config), stop_at=FOREVER)


def distance(a: Arrays, b: Arrays) -> float:
    """L2 distance between two weight lists, all arrays together."""
    return math.sqrt(sum(float(np.sum((x - y) ** 2)) for x, y in zip(a, b, strict=True)))


def examples_seen(n: int, batch: int, steps: int) -> int:
    """Examples in ``steps`` batches of ``batch`` drawn epoch by epoch from ``n`` examples.

    Each epoch is ``n // batch`` full batches plus one short batch of ``n % batch`` when that is
    not zero; epochs repeat until the steps run out.
    """
    epoch = [batch] * (n // batch) + ([n % batch] if n % batch else [])
    return sum(epoch[i % len(epoch)] for i in range(steps))


def assert_weights_close(a: Arrays, b: Arrays, atol: float) -> None:
    assert [x.shape for x in a] == [y.shape for y in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=atol)


# --- the contract both trainers honour ----------------------------------------------------


def test_training_lowers_holdout_loss_and_returns_finite_float32_weights(
    trainer: Trainer, digits: Digits
) -> None:
    start = digits.initial
    before = digits.model.evaluate(tuple(start)).loss

    result = fit(trainer, digits, start, local_steps=60, batch_size=32, learning_rate=0.1)

    after = digits.model.evaluate(tuple(result.weights)).loss
    assert result.steps == 60
    assert after < before - 0.2, f"holdout loss went from {before:.4f} to {after:.4f}"
    assert [w.shape for w in result.weights] == [w.shape for w in start]
    assert all(w.dtype == np.float32 for w in result.weights)
    assert all(np.isfinite(w).all() for w in result.weights)
    assert math.isfinite(result.loss)
    assert result.loss > 0
    # The caller's arrays are the starting point, not a scratch buffer.
    assert_weights_close(start, digits.initial, atol=0)


@pytest.mark.parametrize(
    ("local_steps", "batch_size"),
    [(7, 32), (12, 32), (3, 1000)],
    ids=["within-one-epoch", "across-an-epoch-boundary", "batch-larger-than-shard"],
)
def test_local_steps_bound_the_work_exactly(
    trainer: Trainer, digits: Digits, local_steps: int, batch_size: int
) -> None:
    n = len(digits.shard)

    result = fit(trainer, digits, digits.initial, local_steps=local_steps, batch_size=batch_size)

    assert result.steps == local_steps
    assert result.num_examples == examples_seen(n, min(batch_size, n), local_steps)


def test_local_steps_of_seven_batches_of_32_see_224_examples(
    trainer: Trainer, digits: Digits
) -> None:
    result = fit(trainer, digits, digits.initial, local_steps=7, batch_size=32)

    assert (result.steps, result.num_examples) == (7, 224)


def test_epochs_without_local_steps_run_whole_epochs(trainer: Trainer, digits: Digits) -> None:
    n = len(digits.shard)

    result = fit(trainer, digits, digits.initial, epochs=2, local_steps=None, batch_size=32)

    assert result.steps == 2 * math.ceil(n / 32)
    assert result.num_examples == 2 * n


def test_same_seed_gives_the_same_weights_and_another_seed_does_not(
    trainer: Trainer, digits: Digits
) -> None:
    first = fit(trainer, digits, digits.initial, local_steps=5, batch_size=16, seed=3)
    again = fit(trainer, digits, digits.initial, local_steps=5, batch_size=16, seed=3)
    other = fit(trainer, digits, digits.initial, local_steps=5, batch_size=16, seed=4)

    assert_weights_close(first.weights, again.weights, atol=0)
    assert distance(first.weights, other.weights) > 1e-3


def test_a_deadline_already_past_trains_nothing(trainer: Trainer, digits: Digits) -> None:
    start = digits.initial

    result = trainer.fit(digits.config, start, TrainConfig(local_steps=50), stop_at=-1.0)

    assert (result.steps, result.num_examples) == (0, 0)
    assert math.isnan(result.loss)
    assert_weights_close(result.weights, start, atol=0)


def test_proximal_term_keeps_weights_near_the_start(trainer: Trainer, digits: Digits) -> None:
    start = digits.initial
    config = {"local_steps": 60, "batch_size": 32, "learning_rate": 0.1, "seed": 1}

    free = fit(trainer, digits, start, proximal_mu=0.0, **config)
    held = fit(trainer, digits, start, proximal_mu=10.0, **config)

    free_drift, held_drift = distance(free.weights, start), distance(held.weights, start)
    assert free_drift > 0.5
    assert held_drift < 0.2 * free_drift, f"mu=10 drifted {held_drift:.4f}, mu=0 {free_drift:.4f}"


def _transposed_first_kernel(w: Arrays) -> Arrays:
    return (w[0].T.copy(), *w[1:])


def _missing_last_bias(w: Arrays) -> Arrays:
    return w[:-1]


def _extra_array(w: Arrays) -> Arrays:
    return (*w, np.zeros(3, dtype=np.float32))


@pytest.mark.parametrize("damage", [_transposed_first_kernel, _missing_last_bias, _extra_array])
def test_weights_that_do_not_fit_the_model_raise_training_error(
    trainer: Trainer, digits: Digits, damage: Any
) -> None:
    bad = damage(digits.initial)

    with pytest.raises(TrainingError):
        fit(trainer, digits, bad, local_steps=1)
    with pytest.raises(TrainingError):
        trainer.evaluate(digits.config, bad)


def test_a_model_config_that_is_not_json_raises_training_error(
    trainer: Trainer, digits: Digits
) -> None:
    with pytest.raises(TrainingError):
        trainer.evaluate("{not a keras config", digits.initial)


def test_evaluate_scores_the_whole_shard(trainer: Trainer, digits: Digits) -> None:
    weights = fit(trainer, digits, digits.initial, local_steps=20, batch_size=32).weights

    result = trainer.evaluate(digits.config, weights)

    assert result.num_examples == len(digits.shard)
    assert 0.0 <= result.accuracy <= 1.0
    # Keras' own forward pass (the GlobalModel's), scored by score_probabilities.
    probs = digits.model.predict(tuple(weights), digits.shard.x)
    expected = score_probabilities(probs, digits.shard.y)
    assert result.loss == pytest.approx(expected.loss, abs=1e-5)
    assert result.accuracy == pytest.approx(expected.accuracy, abs=1e-9)


# --- cross-checks: NumPy computes what TensorFlow computes --------------------------------


@pytest.mark.parametrize("trained", [False, True], ids=["initial", "trained"])
def test_both_trainers_evaluate_the_same_weights_alike(
    keras_trainer: KerasTrainer, numpy_trainer: NumpyTrainer, digits: Digits, trained: bool
) -> None:
    weights = digits.initial
    if trained:
        weights = fit(numpy_trainer, digits, weights, local_steps=40, batch_size=32).weights

    by_keras = keras_trainer.evaluate(digits.config, weights)
    by_numpy = numpy_trainer.evaluate(digits.config, weights)

    assert by_numpy.loss == pytest.approx(by_keras.loss, abs=1e-4)
    assert by_numpy.accuracy == pytest.approx(by_keras.accuracy, abs=1e-4)
    assert by_numpy.num_examples == by_keras.num_examples == len(digits.shard)


def test_one_full_batch_sgd_step_gives_the_same_weights(
    keras_trainer: KerasTrainer, numpy_trainer: NumpyTrainer, digits: Digits
) -> None:
    config = {
        "local_steps": 1,
        "batch_size": len(digits.shard),
        "learning_rate": 0.5,
        "seed": 0,
    }

    by_keras = fit(keras_trainer, digits, digits.initial, **config)
    by_numpy = fit(numpy_trainer, digits, digits.initial, **config)

    assert distance(by_keras.weights, digits.initial) > 1e-2  # the step moved the weights
    assert_weights_close(by_numpy.weights, by_keras.weights, atol=1e-4)
    assert by_numpy.loss == pytest.approx(by_keras.loss, abs=1e-4)


def test_proximal_steps_give_the_same_weights(
    keras_trainer: KerasTrainer, numpy_trainer: NumpyTrainer, digits: Digits
) -> None:
    # The anchor is the starting point, so the proximal gradient is zero on the first step;
    # it acts from the second step on.
    config = {"local_steps": 3, "batch_size": 64, "learning_rate": 0.5, "seed": 3}

    by_keras = fit(keras_trainer, digits, digits.initial, proximal_mu=1.0, **config)
    by_numpy = fit(numpy_trainer, digits, digits.initial, proximal_mu=1.0, **config)
    without_prox = fit(numpy_trainer, digits, digits.initial, proximal_mu=0.0, **config)

    assert_weights_close(by_numpy.weights, by_keras.weights, atol=1e-3)
    assert by_numpy.loss == pytest.approx(by_keras.loss, abs=1e-4)
    # The proximal term changed the result by far more than the tolerance above.
    worst = max(
        float(np.abs(a - b).max())
        for a, b in zip(by_numpy.weights, without_prox.weights, strict=True)
    )
    assert worst > 1e-2


# --- what the NumPy trainer reads from a Keras config ----------------------------------------


def test_parse_dense_model_reads_the_job_model(digits: Digits) -> None:
    spec = parse_dense_model(digits.config)

    assert spec.input_dim == 64
    assert spec.units == (32, 16, 10)
    assert spec.activations == ("relu", "relu", "softmax")
    assert spec.use_bias == (True, True, True)


def _conv_model() -> str:
    return str(
        keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(4, 3),
                keras.layers.Flatten(),
                keras.layers.Dense(10, activation="softmax"),
            ]
        ).to_json()
    )


def _flat_model_with_a_conv_layer() -> str:
    return str(
        keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Reshape((8, 8, 1)),
                keras.layers.Conv2D(4, 3),
                keras.layers.Flatten(),
                keras.layers.Dense(10, activation="softmax"),
            ]
        ).to_json()
    )


def _functional_model() -> str:
    inputs = keras.Input((64,))
    outputs = keras.layers.Dense(10, activation="softmax")(inputs)
    return str(keras.Model(inputs, outputs).to_json())


def _sigmoid_output() -> str:
    return str(
        keras.Sequential(
            [keras.Input((64,)), keras.layers.Dense(10, activation="sigmoid")]
        ).to_json()
    )


def _unsupported_activation() -> str:
    return str(
        keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(8, activation="gelu"),
                keras.layers.Dense(10, activation="softmax"),
            ]
        ).to_json()
    )


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_conv_model, "flat input"),
        (_flat_model_with_a_conv_layer, "Reshape"),
        (_functional_model, "Sequential"),
        (_sigmoid_output, "softmax"),
        (_unsupported_activation, "gelu"),
    ],
    ids=["conv2d", "reshape-conv2d", "functional", "sigmoid-output", "gelu"],
)
def test_parse_dense_model_rejects_what_it_cannot_train(make: Any, reason: str) -> None:
    with pytest.raises(TrainingError, match=reason):
        parse_dense_model(make())


def test_numpy_trainer_refuses_a_functional_model(
    numpy_trainer: NumpyTrainer, digits: Digits
) -> None:
    config = _functional_model()

    with pytest.raises(TrainingError, match="Sequential"):
        numpy_trainer.fit(config, digits.initial, TrainConfig(local_steps=1), stop_at=FOREVER)
    with pytest.raises(TrainingError, match="Sequential"):
        numpy_trainer.evaluate(config, digits.initial)


# --- the pure helpers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "n", "expected"),
    [
        (TrainConfig(local_steps=5, epochs=9), 100, 5),
        (TrainConfig(local_steps=0), 100, 0),
        (TrainConfig(epochs=3, batch_size=32), 100, 12),  # 3 * ceil(100 / 32) = 3 * 4
        (TrainConfig(epochs=1, batch_size=1000), 100, 1),
        (TrainConfig(epochs=2, batch_size=10), 0, 0),
    ],
)
def test_planned_steps(config: TrainConfig, n: int, expected: int) -> None:
    assert planned_steps(config, n) == expected


def test_score_probabilities_by_hand() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [1.0, 0.0]], dtype=np.float32)
    labels = np.array([0, 1, 1, 1], dtype=np.int64)

    result = score_probabilities(probs, labels)

    # -(ln 0.9 + ln 0.8 + ln 0.4 + ln 1e-7) / 4: the zero probability is clipped to 1e-7.
    assert result.loss == pytest.approx(
        -(math.log(0.9) + math.log(0.8) + math.log(0.4) + math.log(1e-7)) / 4, rel=1e-6
    )
    assert result.accuracy == pytest.approx(0.5)  # rows 0 and 1 right, rows 2 and 3 wrong
    assert result.num_examples == 4


def test_score_probabilities_of_nothing() -> None:
    result = score_probabilities(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))

    assert math.isnan(result.loss)
    assert (result.accuracy, result.num_examples) == (0.0, 0)
