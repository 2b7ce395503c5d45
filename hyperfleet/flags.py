"""Argument types of the CLI: where flags cross into the program, checked and made absolute.

A relative path means "relative to where the user typed the command". Subprocesses, generated
configs (Mosquitto's) and other working directories see it relative to somewhere else, so every
path flag is resolved here, once, as argparse parses it; library code only sees absolute paths.
Each raises ``argparse.ArgumentTypeError`` with a message, which argparse reports as a usage error
naming the flag (exit 64, see :mod:`.exits`).
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from protocol import ProtocolError, Topics, parse_broker_url

__all__ = ["absolute_path", "broker_url", "config_ref", "port", "require_absolute", "topic_prefix"]

_CONFIG_SUFFIX = ".toml"
_T = TypeVar("_T")


def _flag(check: Callable[[str], _T]) -> Callable[[str], _T]:
    """Report a ``ValueError`` of ``check`` with its own message (argparse hides it otherwise)."""

    @functools.wraps(check)
    def checked(text: str) -> _T:
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return checked


@_flag
def absolute_path(text: str) -> Path:
    """``text`` as an absolute path (``~`` expanded, symlinks and ``..`` resolved).

    Raises:
        argparse.ArgumentTypeError: ``text`` is empty.
    """
    if not text:
        raise ValueError("an empty path")
    return Path(text).expanduser().resolve()


@_flag
def config_ref(text: str) -> str:
    """A device class or fleet: a bare name (``mixed-50``) is kept, a path is made absolute.

    A path is anything with a directory separator or ending in ``.toml``, the rule
    ``agent.device_class`` uses to tell the two apart.
    """
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    if text.endswith(_CONFIG_SUFFIX) or any(s in text for s in separators):
        return str(absolute_path(text))
    if not text:
        raise ValueError("an empty name")
    return text


@_flag
def broker_url(text: str) -> str:
    """``text`` once it parses as ``mqtt[s]://[user:pass@]host[:port]``.

    Raises:
        argparse.ArgumentTypeError: it does not (the message says what is wrong).
    """
    parse_broker_url(text)
    return text


@_flag
def topic_prefix(text: str) -> str:
    """``text`` once it is a valid topic prefix (non-empty, no ``+``/``#``, no trailing ``/``).

    Raises:
        argparse.ArgumentTypeError: it is not.
    """
    try:
        Topics(text)
    except ProtocolError as exc:
        raise ValueError(str(exc)) from exc
    return text


@_flag
def port(text: str) -> int:
    """A TCP port, 0..65535 (0: pick a free one).

    Raises:
        argparse.ArgumentTypeError: not an integer in range.
    """
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a port number") from None
    if not 0 <= value < 65536:
        raise ValueError(f"port {value} is not in 0..65535")
    return value


def require_absolute(name: str, path: Path | None) -> None:
    """For settings records: refuse a relative path, which would mean something else in a
    subprocess or another working directory.

    Raises:
        ValueError: ``path`` is relative (a caller's bug: the CLI resolves every path flag).
    """
    if path is not None and not path.is_absolute():
        raise ValueError(f"{name} must be an absolute path, got {str(path)!r}")
