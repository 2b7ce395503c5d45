"""Broker addresses: ``mqtt://[user[:password]@]host[:port]`` (``mqtts://`` for TLS)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

__all__ = ["BrokerAddress", "parse_broker_url", "redact_url"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in logs

    @property
    def url(self) -> str:
        """The address without credentials, safe to log."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def redact_url(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***``, for logs
    and error messages; any other text comes back unchanged."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{hostport}{slash}{tail}"


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse a broker URL; ``ValueError`` with the reason when it is not one (the message
    never holds the password)."""
    shown = redact_url(url)
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "mqtts", "tcp"):
        raise ValueError(f"broker URL {shown!r}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"broker URL {shown!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"broker URL {shown!r} must not have a path or query")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"broker URL {shown!r} has a bad port") from exc
    if port is None:
        port = 8883 if tls else 1883
    elif port == 0:
        raise ValueError(f"broker URL {shown!r} has a bad port")
    return BrokerAddress(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
