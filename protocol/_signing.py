"""What the coordinator signs for each model artifact: a canonical statement, no cryptography.

A signature over the file's sha256 alone would let anyone who can publish a ``ModelRef`` replay
an older signed file (a rollback) or a file of another model under this one's name. The
statement therefore binds the digest to the model's name, version and the file's format and
size; the key pair (Ed25519, RFC 8032) and the signing itself live in :mod:`link.signing`::

    b"hyperfleet-artifact-v1\\n" name "\\n" version "\\n" format "\\n" sha256-hex "\\n" size

Fetching then checks the bytes against the sha256 (:func:`link.artifacts.fetch_artifact`), so
signature + digest together authenticate the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ._messages import Artifact, ModelRef

__all__ = ["ARTIFACT_STATEMENT_TAG", "artifact_statement", "sign_model_ref"]

ARTIFACT_STATEMENT_TAG = b"hyperfleet-artifact-v1"


def artifact_statement(ref: ModelRef, artifact: Artifact) -> bytes:
    """The bytes signed for ``artifact`` (one of ``ref.artifacts()``); see the module doc."""
    parts = (
        ref.name,
        str(ref.version),
        artifact.format,
        artifact.sha256.lower(),
        str(artifact.size_bytes),
    )
    return b"\n".join((ARTIFACT_STATEMENT_TAG, *(p.encode() for p in parts)))


def sign_model_ref(ref: ModelRef, sign: Callable[[bytes], str]) -> ModelRef:
    """``ref`` with every artifact signed by ``sign(statement) -> signature`` (base64 text)."""
    variants = tuple(
        dataclasses.replace(a, signature=sign(artifact_statement(ref, a))) for a in ref.variants
    )
    primary = ref.artifacts()[0]
    return dataclasses.replace(
        ref, variants=variants, signature=sign(artifact_statement(ref, primary))
    )
