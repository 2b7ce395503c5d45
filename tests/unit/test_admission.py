"""Admission: the checks that need memory of earlier messages, and weights that must fit the model."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from protocol import (
    Admission,
    DuplicateMessage,
    Envelope,
    OutOfRange,
    ShapeMismatch,
    StaleRound,
    Status,
    check_update_norm,
    check_weights_like,
)


def env(msg_id: str, *, job_id: str = "job-1", round: int = 3) -> Envelope:
    return Envelope(
        body=Status(state="online"),
        msg_id=msg_id,
        sender="agent-1",
        job_id=job_id,
        round=round,
        ts=1.0,
    )


def test_new_messages_are_admitted() -> None:
    admission = Admission()
    admission.admit(env("a"), job_id="job-1", round=3)
    admission.admit(env("b"), job_id="job-1", round=3)
    admission.admit(env("c", job_id="other", round=9))  # no job or round asked: not checked


def test_duplicate_id_is_refused() -> None:
    admission = Admission()
    admission.admit(env("a"))
    with pytest.raises(DuplicateMessage, match="a"):
        admission.admit(env("a"))
    # a repeat is a repeat whatever else it carries
    with pytest.raises(DuplicateMessage):
        admission.admit(env("a", job_id="job-2", round=4), job_id="job-2", round=4)


def test_other_round_is_stale() -> None:
    admission = Admission()
    with pytest.raises(StaleRound, match="round 2"):
        admission.admit(env("a", round=2), job_id="job-1", round=3)
    with pytest.raises(StaleRound):
        admission.admit(env("b", round=4), round=3)


def test_other_job_is_stale() -> None:
    admission = Admission()
    with pytest.raises(StaleRound, match="job-0"):
        admission.admit(env("a", job_id="job-0"), job_id="job-1", round=3)
    with pytest.raises(StaleRound):
        admission.admit(env("b", job_id=""), job_id="job-1")


def test_round_zero_is_checked_not_skipped() -> None:
    admission = Admission()
    with pytest.raises(StaleRound):
        admission.admit(env("a", round=1), round=0)
    admission.admit(env("b", round=0), round=0)


def test_window_evicts_the_oldest_id() -> None:
    admission = Admission(window=2)
    admission.admit(env("a"))
    admission.admit(env("b"))
    with pytest.raises(DuplicateMessage):
        admission.admit(env("a"))  # still remembered: the window holds two
    admission.admit(env("c"))  # evicts "a"
    admission.admit(env("a"))  # admissible again; evicts "b"
    with pytest.raises(DuplicateMessage):
        admission.admit(env("c"))
    admission.admit(env("b"))


@pytest.mark.parametrize("window", [0, -1])
def test_window_must_be_positive(window: int) -> None:
    with pytest.raises(ValueError, match="window"):
        Admission(window=window)


def model() -> list[npt.NDArray[Any]]:
    return [np.zeros((3, 2), np.float32), np.zeros(2, np.float32)]


def test_weights_like_the_model_pass() -> None:
    check_weights_like(model(), model())
    check_weights_like([np.ones((3, 2), np.float32), np.ones(2, np.float32)], model())
    check_weights_like([], [])


def test_wrong_weight_count() -> None:
    with pytest.raises(ShapeMismatch, match="1 weight arrays"):
        check_weights_like(model()[:1], model())
    with pytest.raises(ShapeMismatch):
        check_weights_like([*model(), np.zeros(1, np.float32)], model())


@pytest.mark.parametrize(
    "bad", [np.zeros((2, 3), np.float32), np.zeros(6, np.float32), np.zeros((3, 2, 1), np.float32)]
)
def test_wrong_weight_shape(bad: npt.NDArray[Any]) -> None:
    with pytest.raises(ShapeMismatch, match="weight 0"):
        check_weights_like([bad, np.zeros(2, np.float32)], model())


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_])
def test_non_float_weights(dtype: type[np.generic]) -> None:
    with pytest.raises(ShapeMismatch, match="weight 1"):
        check_weights_like([np.zeros((3, 2), np.float32), np.zeros(2, dtype)], model())


# ------------------------------------------------------------------ update norm


MODEL = (np.full((2, 2), 3.0, dtype=np.float32), np.full(1, 4.0, dtype=np.float32))  # norm 7.21


def shifted(by: float, dtype: str = "float32") -> tuple[npt.NDArray[Any], ...]:
    return tuple((w + by).astype(dtype) for w in MODEL)


def test_an_update_near_the_model_passes_with_its_distance() -> None:
    assert check_update_norm(shifted(1.0), MODEL) == pytest.approx(math.sqrt(5))
    assert check_update_norm(MODEL, MODEL) == 0.0


def test_an_update_far_from_the_model_is_out_of_range() -> None:
    norm = math.sqrt(4 * 3.0**2 + 4.0**2)
    limit = 10 * norm
    step = limit / math.sqrt(5)  # every one of the 5 values moved by this
    assert check_update_norm(shifted(step * 0.99), MODEL, max_ratio=10) < limit
    with pytest.raises(OutOfRange, match="update norm") as info:
        check_update_norm(shifted(step * 1.01), MODEL, max_ratio=10)
    assert info.value.code == "out_of_range"


@pytest.mark.parametrize("value", [1e30, 3e38, -3e38])
def test_huge_finite_updates_are_out_of_range_also_when_their_square_overflows(
    value: float,
) -> None:
    huge = tuple(np.full_like(w, value) for w in MODEL)
    with pytest.raises(OutOfRange):
        check_update_norm(huge, MODEL)
    with pytest.raises(OutOfRange):
        check_update_norm(tuple(w.astype(np.float64) * 1e200 for w in huge), MODEL)


def test_a_model_at_zero_is_measured_against_the_floor() -> None:
    zeros = tuple(np.zeros_like(w) for w in MODEL)
    ones = tuple(np.ones_like(w) for w in MODEL)  # distance sqrt(5) from zeros
    assert check_update_norm(ones, zeros, max_ratio=3) == pytest.approx(math.sqrt(5))
    with pytest.raises(OutOfRange):
        check_update_norm(ones, zeros, max_ratio=2)
    assert check_update_norm(ones, zeros, max_ratio=2, min_norm=2.0) == pytest.approx(math.sqrt(5))


def test_update_norm_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        check_update_norm(MODEL, MODEL, max_ratio=0)
    with pytest.raises(ValueError, match="positive"):
        check_update_norm(MODEL, MODEL, min_norm=-1)
