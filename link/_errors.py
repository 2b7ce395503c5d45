"""Errors of the I/O edge.

Third-party errors (aiomqtt, paho, aiohttp, the file system) are translated into these once, in
this package, with ``raise ... from``; nothing above ``link`` sees an aiomqtt or aiohttp error.
Each class also subclasses the built-in it refines, so ``except TimeoutError`` still works::

    LinkError (OSError)                          the edge failed; the caller may retry later
    ├── BrokerUnavailable (ConnectionError)      connecting to the broker failed
    ├── ConnectionLost (ConnectionError)         an open connection dropped mid-operation
    ├── PublishTimeout (TimeoutError)            no connection, or no acknowledgement, in time
    ├── ShardError                               a shard file that is missing or not a shard
    └── ArtifactError                            an artifact that cannot be fetched or served
        └── IntegrityError                       fetched bytes differ from the announced size/sha256
            └── SignatureError                   unsigned, or signed by another key, when a
                                                 verify key is configured
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "BrokerUnavailable",
    "ConnectionLost",
    "IntegrityError",
    "LinkError",
    "PublishTimeout",
    "ShardError",
    "SignatureError",
]


class LinkError(OSError):
    """Root of the edge's errors: an I/O operation with the outside world failed."""


class BrokerUnavailable(LinkError, ConnectionError):
    """The broker refused or could not be reached (TCP, TLS or CONNACK); retry with backoff."""


class ConnectionLost(LinkError, ConnectionError):
    """The connection to the broker dropped while an operation was in flight."""


class PublishTimeout(LinkError, TimeoutError):
    """A publish found no connection, or got no acknowledgement, within its timeout."""


class ShardError(LinkError):
    """A shard file that cannot be used: missing, unreadable or not a shard (see ``__cause__``)."""


class ArtifactError(LinkError):
    """An artifact that cannot be fetched or served: HTTP error status, refused URL, I/O error."""


class IntegrityError(ArtifactError):
    """Fetched bytes whose size or sha256 differ from what the reference announced."""


class SignatureError(IntegrityError):
    """An artifact whose signature is missing or does not verify with the configured key."""
