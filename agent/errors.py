"""Errors of the edge agent, named by what the caller should do.

::

    AgentError (Exception)         the agent cannot go on as asked; the message says why
    └── ConfigError (ValueError)   a device class or fleet file is missing or wrong: fix the file

Third-party errors met while reading configuration (``tomllib.TOMLDecodeError``,
``pydantic.ValidationError``, ``OSError``) are translated into :class:`ConfigError` once, at the
boundary, with ``raise ... from`` so the original stays on ``__cause__``.
"""

from __future__ import annotations

__all__ = ["AgentError", "ConfigError", "TrainingError"]


class AgentError(Exception):
    """Root of the agent's errors."""


class ConfigError(AgentError, ValueError):
    """A configuration file (device class, fleet) cannot be read or is invalid."""


class TrainingError(AgentError):
    """An instruction cannot be carried out (model config or weights unusable); reported as a Failure."""
