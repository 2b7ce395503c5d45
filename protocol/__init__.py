"""hyperfleet's wire contract: topics, messages, the frame codec, limits and errors. No I/O.

Imported by every other package; imports nothing of ours.
"""

from ._admission import Admission, check_weights_like
from ._broker import BrokerAddress, parse_broker_url
from ._codec import DEFAULT_LIMITS, PROTOCOL_VERSION, Limits, decode, encode, new_envelope
from ._errors import (
    DuplicateMessage,
    InvalidArray,
    InvalidTopic,
    MalformedMessage,
    NonFiniteValues,
    PayloadTooLarge,
    ProtocolError,
    ShapeMismatch,
    StaleRound,
    UnknownMessageType,
    UnsupportedVersion,
)
from ._messages import (
    MESSAGE_TYPES,
    Envelope,
    Failure,
    GpuInfo,
    Heartbeat,
    Hello,
    JobState,
    Message,
    ModelRef,
    Status,
    TrainConfig,
    TrainIns,
    TrainRes,
    Weights,
)
from ._shard import Shard, decode_shard, encode_shard
from ._topics import AGENT_ID_PATTERN, Topics, check_agent_id

__all__ = [
    "AGENT_ID_PATTERN",
    "DEFAULT_LIMITS",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "Admission",
    "BrokerAddress",
    "DuplicateMessage",
    "Envelope",
    "Failure",
    "GpuInfo",
    "Heartbeat",
    "Hello",
    "InvalidArray",
    "InvalidTopic",
    "JobState",
    "Limits",
    "MalformedMessage",
    "Message",
    "ModelRef",
    "NonFiniteValues",
    "PayloadTooLarge",
    "ProtocolError",
    "Shard",
    "ShapeMismatch",
    "StaleRound",
    "Status",
    "Topics",
    "TrainConfig",
    "TrainIns",
    "TrainRes",
    "UnknownMessageType",
    "UnsupportedVersion",
    "Weights",
    "check_agent_id",
    "check_weights_like",
    "decode",
    "decode_shard",
    "encode",
    "encode_shard",
    "new_envelope",
    "parse_broker_url",
]
