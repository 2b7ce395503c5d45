"""Ed25519 signatures of model artifacts (RFC 8032, through ``cryptography``).

The coordinator signs, for every file of an exported model, the statement of
:func:`protocol.artifact_statement` (name, version, format, sha256, size; not the file itself,
whose bytes the sha256 then pins when it is fetched). Whoever installs a model checks the
signature *before* fetching and the sha256 while fetching, so a file whose bytes, digest, name
or version were changed after signing is refused. ::

    ArtifactSigner.load(signing.key)     PEM PKCS#8 Ed25519 private key (coordinator only)
    └── sign_ref(ref) -> ModelRef        every artifact's ``signature`` set (base64, 64 bytes)
    ArtifactVerifier.load(signing.pub)   PEM SubjectPublicKeyInfo Ed25519 public key
    └── check(ref, artifact)             :class:`~link.SignatureError` if unsigned or forged
    generate_signing_key() -> (private PEM, public PEM)

Key files that cannot be read or are not Ed25519 keys raise :class:`~link.ArtifactError`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol import Artifact, ModelRef, artifact_statement, sign_model_ref

from ._errors import ArtifactError, SignatureError

__all__ = ["ArtifactSigner", "ArtifactVerifier", "generate_signing_key"]


def generate_signing_key() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair as ``(private PEM (PKCS#8, unencrypted), public PEM)``."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read the {what} {path}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class ArtifactSigner:
    """Signs with one Ed25519 private key; :meth:`load` it from a PEM file."""

    key: Ed25519PrivateKey

    @classmethod
    def load(cls, path: Path) -> ArtifactSigner:
        data = _read(path, "signing key")
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ArtifactError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ArtifactError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
        return cls(key)

    def sign(self, statement: bytes) -> str:
        """The signature of ``statement``, base64 (88 characters)."""
        return base64.b64encode(self.key.sign(statement)).decode("ascii")

    def sign_ref(self, ref: ModelRef) -> ModelRef:
        """``ref`` with every artifact signed (see :func:`protocol.sign_model_ref`)."""
        return sign_model_ref(ref, self.sign)


@dataclass(frozen=True, slots=True)
class ArtifactVerifier:
    """Checks signatures with one Ed25519 public key; :meth:`load` it from a PEM file."""

    key: Ed25519PublicKey

    @classmethod
    def load(cls, path: Path) -> ArtifactVerifier:
        data = _read(path, "verify key")
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise ArtifactError(f"{path} is not a PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ArtifactError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
        return cls(key)

    def check(self, ref: ModelRef, artifact: Artifact) -> None:
        """Return if ``artifact`` (one of ``ref.artifacts()``) carries a signature of this key
        over its statement; raise :class:`~link.SignatureError` (unsigned, malformed, or not
        made by this key) otherwise."""
        what = f"model {ref.name} version {ref.version} ({artifact.format})"
        if not artifact.signature:
            raise SignatureError(f"{what} is unsigned and a verify key is configured; refused")
        try:
            raw = base64.b64decode(artifact.signature, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SignatureError(f"{what}: the signature is not base64; refused") from exc
        try:
            self.key.verify(raw, artifact_statement(ref, artifact))
        except InvalidSignature as exc:
            raise SignatureError(
                f"{what}: the signature does not verify with the configured key (tampered "
                "reference or another signer); refused"
            ) from exc

    def check_all(self, ref: ModelRef) -> None:
        """:meth:`check` every artifact of ``ref``."""
        for artifact in ref.artifacts():
            self.check(ref, artifact)
