"""ROMA's errors, one root, each named by what the caller should do.

::

    RomaError
    ├── InferenceRequestError     the request is wrong: fix it (HTTP 400)
    │   ├── PayloadTooLarge       the body is over the server's limit (HTTP 413)
    │   └── UnsupportedEncoding   a Content-Encoding the server does not decode (HTTP 415)
    ├── ModelNotFound             no such model or version (HTTP 404)
    ├── ModelUnavailable          known but not ready to serve (HTTP 503)
    ├── Overloaded                shed: retry after ``retry_after_s`` (HTTP 429)
    ├── Unauthorized              repository control without the token (HTTP 401)
    └── RepositoryError           a model in the repository cannot be read or loaded
        ├── ModelLoadError        a model file would not load or warm up
        └── ServeConfigError      a config file names an unknown key or a value out of range

``status`` is the HTTP status each error answers with; the server turns every one into the
protocol's ``{"error": message}`` body in one place.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "InferenceRequestError",
    "ModelLoadError",
    "ModelNotFound",
    "ModelUnavailable",
    "Overloaded",
    "PayloadTooLarge",
    "RepositoryError",
    "RomaError",
    "ServeConfigError",
    "Unauthorized",
    "UnsupportedEncoding",
]


class RomaError(Exception):
    """Root of ROMA's errors."""

    status: ClassVar[int] = 500


class InferenceRequestError(RomaError, ValueError):
    """The request does not follow the inference protocol or does not fit the model."""

    status = 400


class PayloadTooLarge(InferenceRequestError):
    status = 413


class UnsupportedEncoding(InferenceRequestError):
    """A request body under a ``Content-Encoding`` the server does not decode."""

    status = 415


class ModelNotFound(RomaError, LookupError):
    status = 404


class ModelUnavailable(RomaError):
    status = 503


class Overloaded(RomaError):
    """The request was shed: it could not meet its SLA and the queue is full."""

    status = 429

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unauthorized(RomaError, PermissionError):
    status = 401


class RepositoryError(RomaError):
    status = 400


class ModelLoadError(RepositoryError):
    status = 400


class ServeConfigError(RepositoryError, ValueError):
    """A configuration file or setting names an unknown key or a value out of range."""
