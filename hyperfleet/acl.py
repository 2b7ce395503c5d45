"""``hyperfleet acl``: a Mosquitto password file, generated passwords and a least-privilege ACL.

Files written under ``--out DIR``::

    passwd              ``user:$7$101$<salt>$<hash>``: Mosquitto 2's PBKDF2-HMAC-SHA512 format
                        (the one ``mosquitto_passwd`` writes; 12-byte salt, 64-byte hash, base64)
    credentials.toml    mode 0600: ``[users]`` name = "password", each random 192 bits; hand
                        each process its own line (in its broker URL), never the whole file
    acl                 ``acl_file`` for Mosquitto: per user, the topics of the protocol
                        (:class:`protocol.Topics`) it may read or write, and nothing else

What the ACL grants, under the prefix (default ``hf/v1``):

=============  ===========================================================================
agent ``a``    write ``agents/a/{status,hello,heartbeat,results}`` (not ``agents/a/inbox``);
               read ``agents/a/inbox``, ``agents/a/heartbeat`` (it notices a second daemon
               under its id), ``jobs/+/state``, ``models/+/latest``
coordinator    read ``agents/+/{status,hello,heartbeat,results}``; write ``agents/+/inbox``;
               read and write ``jobs/+/state`` and ``models/+/latest``
roma           read ``models/+/latest``; read and write ``serving/+/stats`` (its ServingStats)
monitor        read everything under the prefix
=============  ===========================================================================

Mosquitto drops a publish the ACL does not allow without telling the client (MQTT 3.1.1 has
no way to), and never delivers a message to a subscriber who may not read it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import secrets
from pathlib import Path

from protocol import ProtocolError, Topics, check_agent_id

from .certs import agent_ids, write_private
from .errors import UsageError
from .exits import EXIT_OK
from .flags import absolute_path, config_ref, topic_prefix

__all__ = [
    "PBKDF2_ITERATIONS",
    "acl_text",
    "add_acl_parser",
    "mosquitto_hash",
    "run_acl",
    "secure_mosquitto_config",
]

PBKDF2_ITERATIONS = 101
"""Mosquitto 2's own default. The passwords are 192 random bits, so the iteration count is
not what protects them; a low one keeps each CONNECT cheap for the broker."""


def add_acl_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "acl", help="write a Mosquitto password file, passwords and a per-agent topic ACL"
    )
    p.add_argument("--out", required=True, type=absolute_path, help="directory to write into")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--agents", default=None, help="agent ids, comma-separated")
    group.add_argument(
        "--fleet", type=config_ref, default=None, help="take the agent ids from this fleet file"
    )
    p.add_argument("--coordinator-user", default="coordinator")
    p.add_argument("--roma-user", default="roma")
    p.add_argument("--monitor-user", default="monitor")
    p.add_argument("--prefix", type=topic_prefix, default="hf/v1", help="topic prefix")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("--log-level", default="WARNING")


def mosquitto_hash(password: str, *, salt: bytes | None = None) -> str:
    """``$7$iterations$salt$hash`` of ``password`` as Mosquitto 2 stores it (PBKDF2-HMAC-SHA512,
    RFC 8018; salt and hash base64), the same as ``mosquitto_passwd -H sha512-pbkdf2``."""
    salt = secrets.token_bytes(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    b64 = base64.b64encode
    return f"$7${PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def acl_text(
    *, agents: list[str], coordinator: str, roma: str, monitor: str, topics: Topics
) -> str:
    """The Mosquitto ``acl_file`` of the module doc (one ``user`` block each, no patterns)."""
    p = topics.prefix
    lines = [
        "# Mosquitto ACL written by `hyperfleet acl` (prefix " + p + ").",
        "# Anything not granted here is denied. Regenerate rather than edit by hand.",
        "",
        f"user {coordinator}",
        f"topic read {topics.all_agents('status')}",
        f"topic read {topics.all_agents('hello')}",
        f"topic read {topics.all_agents('heartbeat')}",
        f"topic read {topics.all_agents('results')}",
        f"topic write {topics.all_agents('inbox')}",
        f"topic readwrite {topics.all_job_states()}",
        f"topic readwrite {p}/models/+/latest",
        "",
        f"user {roma}",
        f"topic read {p}/models/+/latest",
        f"topic readwrite {topics.all_serving_stats()}",
        "",
        f"user {monitor}",
        f"topic read {p}/#",
    ]
    for agent in agents:
        lines += [
            "",
            f"user {agent}",
            f"topic write {topics.status(agent)}",
            f"topic write {topics.hello(agent)}",
            f"topic write {topics.results(agent)}",
            f"topic readwrite {topics.heartbeat(agent)}",
            f"topic read {topics.inbox(agent)}",
            f"topic read {topics.all_job_states()}",
            f"topic read {p}/models/+/latest",
        ]
    return "\n".join(lines) + "\n"


def _check_user(name: str, flag: str) -> str:
    try:
        return check_agent_id(name)
    except ProtocolError as exc:
        raise UsageError(f"{flag}: {exc}") from exc


def run_acl(args: argparse.Namespace) -> int:
    """Write ``passwd``, ``credentials.toml`` and ``acl`` under ``args.out``.

    Raises:
        UsageError: bad or clashing names, or existing files without ``--force``.
    """
    agents = agent_ids(args)
    services = {
        "--coordinator-user": _check_user(args.coordinator_user, "--coordinator-user"),
        "--roma-user": _check_user(args.roma_user, "--roma-user"),
        "--monitor-user": _check_user(args.monitor_user, "--monitor-user"),
    }
    users = [*services.values(), *agents]
    if len(set(users)) != len(users):
        raise UsageError("user names must differ (an agent id equal to a service user's name?)")
    out: Path = args.out
    paths = [out / "passwd", out / "credentials.toml", out / "acl"]
    existing = [p.name for p in paths if p.exists()]
    if existing and not args.force:
        raise UsageError(f"{out} already holds {', '.join(existing)}; pass --force to replace")
    passwords = {user: secrets.token_urlsafe(24) for user in users}
    out.mkdir(parents=True, exist_ok=True)
    passwd = "".join(f"{u}:{mosquitto_hash(pw)}\n" for u, pw in passwords.items())
    write_private(out / "passwd", passwd.encode())
    creds = ["# Written by `hyperfleet acl`. Secret: hand each process its own line only.", ""]
    creds += ["[users]", *(f'"{u}" = "{pw}"' for u, pw in passwords.items())]
    write_private(out / "credentials.toml", ("\n".join(creds) + "\n").encode())
    acl = acl_text(
        agents=agents,
        coordinator=services["--coordinator-user"],
        roma=services["--roma-user"],
        monitor=services["--monitor-user"],
        topics=Topics(args.prefix),
    )
    (out / "acl").write_text(acl)
    (out / "acl").chmod(0o644)
    print(
        f"wrote passwd and acl for {len(users)} users ({len(agents)} agents) and their "
        f"passwords to {out / 'credentials.toml'} (mode 0600)"
    )
    return EXIT_OK


def secure_mosquitto_config(
    *,
    port: int,
    bind: str,
    certs: Path,
    acl_dir: Path,
    require_certificate: bool = False,
    run_as: str | None = None,
) -> str:
    """A Mosquitto 2.x configuration: one TLS listener on ``bind:port`` with the files of
    ``hyperfleet certs`` (``certs``) and ``hyperfleet acl`` (``acl_dir``), no anonymous clients.

    ``require_certificate``: clients must also show a certificate of the CA (mutual TLS; the
    password still names the user). ``run_as``: the ``user`` line (Mosquitto started as root
    drops to that user, which must be able to read the 0600 key and password files).
    """
    for path in (certs, acl_dir):
        if any(c in str(path) for c in "\r\n"):
            raise UsageError(f"{path}: a path with a newline cannot go in a config file")
    lines = [
        "# Written by hyperfleet: TLS, a password per user and a topic ACL (docs/security.md).",
        "per_listener_settings false",
        f"listener {port} {bind}",
        f"cafile {certs / 'ca.crt'}",
        f"certfile {certs / 'broker.crt'}",
        f"keyfile {certs / 'broker.key'}",
        "tls_version tlsv1.2",
        f"require_certificate {'true' if require_certificate else 'false'}",
        "allow_anonymous false",
        f"password_file {acl_dir / 'passwd'}",
        f"acl_file {acl_dir / 'acl'}",
        "max_packet_size 16777216",
        "persistence false",
        "set_tcp_nodelay true",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
    ]
    if run_as is not None:
        lines.append(f"user {run_as}")
    return "\n".join(lines) + "\n"
