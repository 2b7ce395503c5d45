"""Fetching a published model onto the device, authenticated: the agent's side of a ``ModelRef``.

An agent that deploys the newest global model (``models/{name}/latest``, which its ACL lets it
read) gets the file of the format its runtime runs (``tflite`` under LiteRT, ``keras``) with
:func:`fetch_model`: with a verify key the artifact's Ed25519 signature is checked *before* a
byte is fetched (:mod:`link.signing`), then the size and sha256 while fetching
(:func:`link.artifacts.fetch_artifact`). A refused model never replaces the file in place.
"""

from __future__ import annotations

import logging
from pathlib import Path

from link import ArtifactError
from link.artifacts import fetch_artifact
from link.signing import ArtifactVerifier
from protocol import ModelRef

__all__ = ["fetch_model"]

_log = logging.getLogger(__name__)


async def fetch_model(
    ref: ModelRef,
    *,
    format: str,
    dest: Path,
    verifier: ArtifactVerifier | None = None,
    max_bytes: int | None = None,
    timeout_s: float = 60.0,
) -> Path:
    """Fetch ``ref``'s artifact of ``format`` to ``dest`` (replaced only when it verifies).

    Raises:
        ArtifactError: ``ref`` has no file of ``format``, or the fetch failed.
        SignatureError: ``verifier`` is set and the artifact is unsigned or not signed by its
            key (``dest`` untouched).
        IntegrityError: the bytes differ from the announced size or sha256 (``dest``
            untouched).
    """
    artifact = ref.artifact(format)
    if artifact is None:
        raise ArtifactError(f"model {ref.name} version {ref.version} has no {format} file")
    if verifier is not None:
        verifier.check(ref, artifact)
    path = await fetch_artifact(
        artifact.url,
        sha256=artifact.sha256,
        size_bytes=artifact.size_bytes,
        dest=dest,
        max_bytes=max_bytes,
        timeout=timeout_s,
    )
    _log.info("model %s version %d (%s) installed at %s%s", ref.name, ref.version, format, dest,
              " (signature verified)" if verifier is not None else "")  # fmt: skip
    return path
