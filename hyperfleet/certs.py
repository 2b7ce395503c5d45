"""``hyperfleet certs``: a private CA and every certificate and key a TLS fleet needs.

Files written under ``--out DIR`` (the contract ``docker/`` and ``docs/security.md`` rely on)::

    ca.crt  ca.key                      the CA; everything valid --days (default 825)
    broker.crt  broker.key              server cert; SANs localhost, 127.0.0.1 and --hosts
    coordinator.crt  coordinator.key    client cert, CN=coordinator
    roma.crt  roma.key                  client cert, CN=roma
    monitor.crt  monitor.key            client cert, CN=monitor
    agents/<agent_id>.crt|.key          client cert per agent, CN=<agent_id>
    signing.key  signing.pub            Ed25519 pair that signs model artifacts (coordinator
                                        only keeps signing.key; the rest get signing.pub)

Keys are ECDSA P-256 (Ed25519 for signing), unencrypted PEM, mode 0600; certificates 0644.
Nothing is overwritten without ``--force``: the command checks every path first and writes
none when one exists. A client certificate's CN is the identity a broker configured with
``use_identity_as_username`` sees, so it matches the ACL of ``hyperfleet acl``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.device_class import load_fleet
from link.signing import generate_signing_key
from protocol import ProtocolError, check_agent_id

from .errors import UsageError
from .exits import EXIT_OK
from .flags import absolute_path, config_ref

__all__ = ["add_certs_parser", "agent_ids", "run_certs", "write_private"]

_HOST = re.compile(r"[A-Za-z0-9*][A-Za-z0-9.\-]{0,252}|[0-9A-Fa-f:.]{2,45}")
SERVICE_CLIENTS = ("coordinator", "roma", "monitor")
"""Client certificates made beside the agents' (CN = the name)."""


def add_certs_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "certs",
        help="make a CA, broker/coordinator/agent certificates and the artifact signing key",
    )
    p.add_argument("--out", required=True, type=absolute_path, help="directory to write into")
    _agent_flags(p)
    p.add_argument("--days", type=int, default=825, help="certificate validity (default 825)")
    p.add_argument(
        "--hosts",
        action="append",
        default=[],
        help="more names/addresses of the broker, comma-separated or repeated (SANs beside "
        "localhost, 127.0.0.1)",
    )
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("--log-level", default="WARNING")


def _agent_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--agents", default=None, help="agent ids, comma-separated")
    group.add_argument(
        "--fleet", type=config_ref, default=None, help="take the agent ids from this fleet file"
    )


def agent_ids(args: argparse.Namespace) -> list[str]:
    """The agent ids of ``--agents`` or ``--fleet``, checked and without duplicates.

    Raises:
        UsageError: an invalid or repeated id, or an empty list.
        ConfigError: the fleet file cannot be read.
    """
    if args.fleet is not None:
        ids = [agent_id for agent_id, _ in load_fleet(args.fleet).expand()]
    else:
        ids = [a.strip() for a in str(args.agents).split(",") if a.strip()]
    if not ids:
        raise UsageError("no agent ids given")
    seen: set[str] = set()
    for agent_id in ids:
        try:
            check_agent_id(agent_id)
        except ProtocolError as exc:
            raise UsageError(str(exc)) from exc
        if agent_id in seen:
            raise UsageError(f"agent id {agent_id!r} given twice")
        seen.add(agent_id)
    return ids


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` created with mode 0600 (never readable by others, even for a
    moment); replaces an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o644)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hyperfleet"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _sans(hosts: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for host in ["localhost", "127.0.0.1", *hosts]:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


class _Authority:
    def __init__(self, days: int) -> None:
        self.key = _key()
        self.days = days
        now = dt.datetime.now(dt.UTC)
        self.not_before = now - dt.timedelta(minutes=5)  # tolerate small clock skew
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("hyperfleet CA"))
            .issuer_name(_name("hyperfleet CA"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.not_before)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )

    def issue(
        self, cn: str, *, server: bool, sans: list[x509.GeneralName] | None = None
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = _key()
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.not_before)
            .not_valid_after(self.not_before + dt.timedelta(days=self.days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key


def run_certs(args: argparse.Namespace) -> int:
    """Write the files of the module doc under ``args.out``; print what was written.

    Raises:
        UsageError: bad ids, ``--days`` < 1, or existing files without ``--force``.
    """
    ids = agent_ids(args)
    if args.days < 1:
        raise UsageError("--days must be at least 1")
    hosts = [h.strip() for given in args.hosts for h in given.split(",") if h.strip()]
    for host in hosts:
        if not _HOST.fullmatch(host):
            raise UsageError(f"--hosts: {host!r} is not a host name or IP address")
    out: Path = args.out
    clients = [*SERVICE_CLIENTS, *(f"agents/{a}" for a in ids)]
    names = ["ca", "broker", *clients]
    paths = [out / f"{n}.{ext}" for n in names for ext in ("crt", "key")]
    paths += [out / "signing.key", out / "signing.pub"]
    existing = [p for p in paths if p.exists()]
    if existing and not args.force:
        shown = ", ".join(str(p.relative_to(out)) for p in existing[:5])
        more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
        raise UsageError(f"{out} already holds {shown}{more}; pass --force to replace them")
    ca = _Authority(args.days)
    pem = serialization.Encoding.PEM
    _write_public(out / "ca.crt", ca.cert.public_bytes(pem))
    write_private(out / "ca.key", _key_pem(ca.key))
    issued = [("broker", "broker", True)] + [(c, c.split("/")[-1], False) for c in clients]
    for stem, cn, server in issued:
        cert, key = ca.issue(cn, server=server, sans=_sans(hosts) if server else None)
        _write_public(out / f"{stem}.crt", cert.public_bytes(pem))
        write_private(out / f"{stem}.key", _key_pem(key))
    private, public = generate_signing_key()
    write_private(out / "signing.key", private)
    _write_public(out / "signing.pub", public)
    print(
        f"wrote a CA, broker (SANs localhost, 127.0.0.1{''.join(', ' + h for h in hosts)}), "
        f"{', '.join(SERVICE_CLIENTS)} and {len(ids)} agent certificates, and the artifact "
        f"signing key pair to {out} (keys mode 0600; keep ca.key and signing.key offline or "
        "with the coordinator only)"
    )
    return EXIT_OK
