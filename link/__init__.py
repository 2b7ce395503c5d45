"""hyperfleet's shared I/O edge: MQTT sessions, the inbound gate, artifacts, atomic and shard files.

Imports :mod:`protocol` only. Third-party errors are translated here, once, into
:class:`LinkError` and its subclasses (the tree is drawn in ``link._errors``).

This package's face holds what needs no third-party client; the two network pieces are public
modules of their own, so a process pays only for the client it uses:

- :mod:`link.mqtt` (needs ``aiomqtt``): :class:`~link.mqtt.MqttSession`, the reconnecting
  session, and :func:`~link.mqtt.mqtt_client` for one-shot tools.
- :mod:`link.artifacts` (needs ``aiohttp``): :class:`~link.artifacts.ArtifactServer` and
  :func:`~link.artifacts.fetch_artifact`.
- :mod:`link.signing` (needs ``cryptography``): Ed25519 artifact signatures, :class:`~link.signing.ArtifactSigner` and
  :class:`~link.signing.ArtifactVerifier`.
"""

from ._backoff import Backoff
from ._errors import (
    ArtifactError,
    BrokerUnavailable,
    ConnectionLost,
    IntegrityError,
    LinkError,
    PublishTimeout,
    ShardError,
    SignatureError,
)
from ._files import atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text
from ._gate import AdmissionScope, InboundGate, SpoofedSender
from ._shards import read_shard, write_shard

__all__ = [
    "AdmissionScope",
    "ArtifactError",
    "Backoff",
    "BrokerUnavailable",
    "ConnectionLost",
    "InboundGate",
    "IntegrityError",
    "LinkError",
    "PublishTimeout",
    "ShardError",
    "SignatureError",
    "SpoofedSender",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "read_shard",
    "write_shard",
]
