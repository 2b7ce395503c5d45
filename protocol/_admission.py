"""Admission of decoded messages: the checks that need memory of what came before.

The codec checks a message on its own; :class:`Admission` checks it against the conversation: a
message id seen before is a :class:`DuplicateMessage` (QoS 1 may deliver twice), and a reply for
another job or round than the one being collected is a :class:`StaleRound`.
:func:`check_weights_like` refuses updates that do not fit the model.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy.typing as npt

from ._errors import DuplicateMessage, ShapeMismatch, StaleRound
from ._messages import Envelope

__all__ = ["Admission", "check_weights_like"]


class Admission:
    """Remembers the last ``window`` message ids; refuses repeats and replies for other rounds."""

    def __init__(self, *, window: int = 65536) -> None:
        if window < 1:
            raise ValueError("window must be positive")
        self._window = window
        self._seen: OrderedDict[str, None] = OrderedDict()

    def recent(self, count: int | None = None) -> list[str]:
        """The newest ``count`` message ids admitted (all when ``None``), oldest first, to save
        with a checkpoint so the duplicate window survives a restart."""
        ids = list(self._seen)
        return ids if count is None else ids[-count:] if count > 0 else []

    def remember(self, msg_ids: list[str]) -> None:
        """Treat ``msg_ids`` (as :meth:`recent` returned them) as seen."""
        for msg_id in msg_ids:
            self._seen[msg_id] = None
            self._seen.move_to_end(msg_id)
        while len(self._seen) > self._window:
            self._seen.popitem(last=False)

    def admit(
        self, envelope: Envelope, *, job_id: str | None = None, round: int | None = None
    ) -> None:
        """Raise unless ``envelope`` is new and (when given) for ``job_id`` and ``round``."""
        if envelope.msg_id in self._seen:
            raise DuplicateMessage(f"message {envelope.msg_id} from {envelope.sender} seen before")
        if job_id is not None and envelope.job_id != job_id:
            raise StaleRound(
                f"{envelope.type} from {envelope.sender} is for job {envelope.job_id!r}"
            )
        if round is not None and envelope.round != round:
            raise StaleRound(
                f"{envelope.type} from {envelope.sender} is for round {envelope.round}, "
                f"the current round is {round}"
            )
        self._seen[envelope.msg_id] = None
        if len(self._seen) > self._window:
            self._seen.popitem(last=False)


def check_weights_like(
    weights: Sequence[npt.NDArray[Any]], reference: Sequence[npt.NDArray[Any]]
) -> None:
    """Raise :class:`ShapeMismatch` unless ``weights`` has the layout of ``reference``."""
    if len(weights) != len(reference):
        raise ShapeMismatch(f"{len(weights)} weight arrays, the model has {len(reference)}")
    for i, (got, want) in enumerate(zip(weights, reference, strict=True)):
        if got.shape != want.shape:
            raise ShapeMismatch(f"weight {i} has shape {got.shape}, the model needs {want.shape}")
        if got.dtype.kind != "f":  # np.issubdtype(dtype, np.floating), without its overhead
            raise ShapeMismatch(f"weight {i} has dtype {got.dtype}, the model needs floats")
