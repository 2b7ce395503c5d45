"""Admission: the checks that need memory of earlier messages, and weights that must fit the model."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from protocol import (
    Admission,
    DuplicateMessage,
    Envelope,
    ShapeMismatch,
    StaleRound,
    Status,
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
