"""Errors of the wire contract.

Every way a message can be refused is a subclass of :class:`ProtocolError`, whose ``code`` names
the counter a receiver bumps when it drops the message::

    ProtocolError (ValueError)           reject the message; never retry it as is
    ├── MalformedMessage     "malformed"     bytes that are not a hyperfleet frame or envelope
    ├── UnsupportedVersion   "version"       a protocol version this build does not speak
    ├── UnknownMessageType   "unknown_type"  a type name this build does not know
    ├── PayloadTooLarge      "oversize"      a frame or a part of it above the configured limits
    ├── InvalidArray         "bad_array"     an array whose dtype, shape or byte count is wrong
    ├── NonFiniteValues      "non_finite"    NaN or Inf in a float array
    ├── OutOfRange           "out_of_range"  a number outside its field's bounds (protocol._bounds),
    │                                        or an update too far from the model it updates
    ├── ShapeMismatch        "shape"         weights that do not fit the model they claim to update
    ├── StaleRound           "stale_round"   a reply for a job or round that is not the current one
    ├── DuplicateMessage     "duplicate"     a message id already seen
    └── InvalidTopic         "bad_topic"     a topic outside the contract, or a bad agent id
"""

from __future__ import annotations

from typing import ClassVar


class ProtocolError(ValueError):
    """A message that must be dropped. Receivers log it, count it under ``code`` and go on."""

    code: ClassVar[str] = "protocol"


class MalformedMessage(ProtocolError):
    code = "malformed"


class UnsupportedVersion(ProtocolError):
    code = "version"


class UnknownMessageType(ProtocolError):
    code = "unknown_type"


class PayloadTooLarge(ProtocolError):
    code = "oversize"


class InvalidArray(ProtocolError):
    code = "bad_array"


class NonFiniteValues(ProtocolError):
    code = "non_finite"


class OutOfRange(ProtocolError):
    code = "out_of_range"


class ShapeMismatch(ProtocolError):
    code = "shape"


class StaleRound(ProtocolError):
    code = "stale_round"


class DuplicateMessage(ProtocolError):
    code = "duplicate"


class InvalidTopic(ProtocolError):
    code = "bad_topic"
