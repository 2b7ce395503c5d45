"""The security flags every MQTT role shares: TLS files, and the artifact signing keys.

::

    --tls-ca FILE     env HYPERFLEET_TLS_CA      CA bundle the broker's certificate must chain to
    --tls-cert FILE   env HYPERFLEET_TLS_CERT    this client's certificate (mutual TLS)
    --tls-key FILE    env HYPERFLEET_TLS_KEY     its private key

They apply to ``mqtts://`` brokers; credentials travel in the URL
(``mqtts://user:password@host:8883``, or ``HYPERFLEET_BROKER`` to keep them off the command
line). A TLS flag given with a plain ``mqtt://`` broker is a usage error; TLS variables in the
environment are ignored then (a demo's own local broker is plain).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from protocol import parse_broker_url

from .errors import UsageError
from .flags import absolute_path

if TYPE_CHECKING:  # the parser is built for every command; the MQTT client only when used
    from link.mqtt import TlsFiles

__all__ = ["add_tls_flags", "add_verify_key_flag", "tls_env", "tls_files"]

_TLS = (("ca", "CA bundle (PEM) the broker's certificate must chain to"),
        ("cert", "this client's certificate (PEM), for brokers that require one"),
        ("key", "the private key (PEM) of --tls-cert"))  # fmt: skip


def add_tls_flags(p: argparse.ArgumentParser) -> None:
    """``--tls-ca``, ``--tls-cert``, ``--tls-key`` (defaults from ``HYPERFLEET_TLS_*``)."""
    for name, text in _TLS:
        p.add_argument(
            f"--tls-{name}",
            type=absolute_path,
            default=None,
            metavar="FILE",
            help=f"{text}; mqtts:// brokers only (env HYPERFLEET_TLS_{name.upper()})",
        )


def add_verify_key_flag(p: argparse.ArgumentParser, *, who: str) -> None:
    """``--verify-key FILE`` (default ``HYPERFLEET_VERIFY_KEY``): the Ed25519 public key."""
    p.add_argument(
        "--verify-key",
        type=absolute_path,
        default=_env_path("VERIFY_KEY"),
        metavar="FILE",
        help=f"Ed25519 public key (signing.pub of `hyperfleet certs`): {who} refuses model "
        "artifacts not signed by it (env HYPERFLEET_VERIFY_KEY)",
    )


def _env_path(name: str) -> Path | None:
    value = os.environ.get(f"HYPERFLEET_{name}")
    return Path(value).expanduser().resolve() if value else None


def tls_files(args: argparse.Namespace, broker: str | None) -> TlsFiles | None:
    """The TLS files of ``args`` (flags over environment) for the broker URL ``broker``.

    ``None`` for a plain broker, or a TLS one with no files (the system's CA bundle is used).

    Raises:
        UsageError: a TLS flag with a plain ``mqtt://`` broker, a key without a certificate (or
            the other way round), or a named file that does not exist.
    """
    given = {name: getattr(args, f"tls_{name}", None) for name, _ in _TLS}
    if broker is None or not parse_broker_url(broker).tls:
        flags = [f"--tls-{n}" for n, v in given.items() if v is not None]
        if flags and broker is not None:
            raise UsageError(f"{', '.join(flags)} need an mqtts:// broker URL")
        return None
    files = {n: v if v is not None else _env_path(f"TLS_{n.upper()}") for n, v in given.items()}
    if (files["cert"] is None) != (files["key"] is None):
        raise UsageError("--tls-cert and --tls-key go together")
    for name, path in files.items():
        if path is not None and not path.is_file():
            raise UsageError(f"--tls-{name} {path}: no such file")
    if all(v is None for v in files.values()):
        return None
    from link.mqtt import TlsFiles

    return TlsFiles(ca_file=files["ca"], cert_file=files["cert"], key_file=files["key"])


def tls_env(tls: TlsFiles | None) -> dict[str, str]:
    """``HYPERFLEET_TLS_*`` variables that hand ``tls`` to a child process."""
    if tls is None:
        return {}
    pairs = (("CA", tls.ca_file), ("CERT", tls.cert_file), ("KEY", tls.key_file))
    return {f"HYPERFLEET_TLS_{k}": str(v) for k, v in pairs if v is not None}
