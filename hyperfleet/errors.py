"""Errors of the ``hyperfleet`` CLI and launchers, named by what the caller should do.

::

    HyperfleetError (Exception)        the command cannot go on; the message says why
    ├── BrokerError                    the MQTT broker could not be started or found: read the
    │                                  message (it carries the broker's log tail), fix, run again
    └── UsageError (ValueError)        the command line or settings are wrong: fix them

Third-party errors met while launching things (``OSError`` from ``subprocess``) are translated
into these once, at the boundary, with ``raise ... from`` so the original stays on ``__cause__``.
"""

from __future__ import annotations

__all__ = ["BrokerError", "HyperfleetError", "UsageError"]


class HyperfleetError(Exception):
    """Root of the ``hyperfleet`` package's errors."""


class BrokerError(HyperfleetError):
    """A broker could not be started (binary missing, bad config, port taken, early exit)."""


class UsageError(HyperfleetError, ValueError):
    """A CLI flag, argument or setting is invalid; the message says which and why."""
