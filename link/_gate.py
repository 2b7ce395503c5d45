"""The inbound gate: every received frame passes it before anything acts on it.

::

    payload ─► decode ─► sender matches the topic ─► admission ─► handler
                 │               │                      │            │
                 └───────────────┴──── ProtocolError ───┴────────────┘
                                  counted in ``dropped[code]``, logged, never raised

The handler may raise :class:`~protocol.ProtocolError` too (a reply that does not fit the round);
it is counted the same way. Anything else it raises is a bug and propagates.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from protocol import (
    DEFAULT_LIMITS,
    Admission,
    Envelope,
    Limits,
    MalformedMessage,
    ProtocolError,
    decode,
)

__all__ = ["AdmissionScope", "InboundGate", "SpoofedSender"]

_log = logging.getLogger(__name__)


class SpoofedSender(ProtocolError):
    """A message whose envelope names another sender than the topic it arrived on."""

    code = "spoofed"


@dataclass(frozen=True, slots=True, kw_only=True)
class AdmissionScope:
    """What :class:`protocol.Admission` checks a message against; ``None`` fields match any."""

    job_id: str | None = None
    round: int | None = None


ANY = AdmissionScope()


def _admit_all(topic: str, envelope: Envelope) -> AdmissionScope | None:
    return ANY


class InboundGate:
    """Decode, check and admit inbound frames, then call ``handler(topic, envelope, nbytes)``
    (``nbytes``: the frame's size on the wire).

    ``sender_of(topic)`` names the sender a topic belongs to (``None``: anyone may send there) and
    may raise :class:`~protocol.InvalidTopic`. ``scope(topic, envelope)`` says what to admit the
    message against, or ``None`` for messages exempt from admission (retained state, delivered
    again on every subscribe). Drops are counted in :attr:`dropped` by ``ProtocolError.code``.
    """

    def __init__(
        self,
        *,
        name: str,
        handler: Callable[[str, Envelope, int], None],
        sender_of: Callable[[str], str | None] | None = None,
        scope: Callable[[str, Envelope], AdmissionScope | None] = _admit_all,
        admission: Admission | None = None,
        limits: Limits = DEFAULT_LIMITS,
        logger: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.dropped: Counter[str] = Counter()
        self.admission = admission if admission is not None else Admission()
        self._handler = handler
        self._sender_of = sender_of
        self._scope = scope
        self._limits = limits
        self._log = logger or _log

    def __call__(self, topic: str, payload: object) -> None:
        """Pass one frame through the gate; never raises :class:`~protocol.ProtocolError`."""
        try:
            self._pass(topic, payload)
        except ProtocolError as exc:
            self.drop(exc, topic)

    def drop(self, error: ProtocolError, topic: str) -> None:
        """Count and log a refused message (for refusals found before the gate)."""
        self.dropped[error.code] += 1
        self._log.warning(
            "%s: dropped a message on %s (%s): %s", self.name, topic, error.code, error
        )

    def _pass(self, topic: str, payload: object) -> None:
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise MalformedMessage(f"payload on {topic} is not bytes")
        expected = self._sender_of(topic) if self._sender_of is not None else None
        envelope = decode(payload, limits=self._limits)
        if expected is not None and envelope.sender != expected:
            raise SpoofedSender(f"message from {envelope.sender!r} on {expected!r}'s topic")
        scope = self._scope(topic, envelope)
        if scope is not None:
            self.admission.admit(envelope, job_id=scope.job_id, round=scope.round)
        self._handler(topic, envelope, len(payload))
