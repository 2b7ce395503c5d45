"""Test support: a real Mosquitto with TLS, a password per user and the ACL of ``hyperfleet acl``.

``secure_broker(tmp, agents=[...])`` runs ``hyperfleet certs`` and ``hyperfleet acl`` (the real
commands), writes :func:`hyperfleet.acl.secure_mosquitto_config` for a free port and starts
``mosquitto`` on it; the yielded :class:`SecureBroker` hands out each user's URL and TLS files.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hyperfleet.acl import secure_mosquitto_config
from hyperfleet.broker import find_mosquitto
from hyperfleet.cli import main
from link.mqtt import TlsFiles


@dataclass(frozen=True, slots=True)
class SecureBroker:
    port: int
    certs: Path
    acl_dir: Path
    passwords: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    def url(self, user: str | None, password: str | None = None) -> str:
        """``mqtts://user:password@localhost:port`` (``user`` ``None``: anonymous)."""
        if user is None:
            return f"mqtts://localhost:{self.port}"
        return f"mqtts://{user}:{password or self.passwords[user]}@localhost:{self.port}"

    def tls(self, client: str | None = None, *, ca: Path | None = None) -> TlsFiles:
        """The CA (or ``ca``) and, with ``client``, its certificate and key."""
        if client is None:
            return TlsFiles(ca_file=ca or self.certs / "ca.crt")
        stem = self.certs / (client if client in ("coordinator", "roma", "monitor")
                             else f"agents/{client}")  # fmt: skip
        return TlsFiles(
            ca_file=ca or self.certs / "ca.crt",
            cert_file=stem.with_suffix(".crt"),
            key_file=stem.with_suffix(".key"),
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def secure_broker(
    tmp: Path, *, agents: list[str], prefix: str = "hf/v1", require_certificate: bool = False
) -> Iterator[SecureBroker]:
    binary = find_mosquitto()
    if binary is None:
        import pytest

        pytest.skip("mosquitto is not installed")
    certs, acl_dir = tmp / "certs", tmp / "acl"
    ids = ",".join(agents)
    assert main(["certs", "--out", str(certs), "--agents", ids]) == 0
    assert main(["acl", "--out", str(acl_dir), "--agents", ids, "--prefix", prefix]) == 0
    passwords = tomllib.loads((acl_dir / "credentials.toml").read_text())["users"]
    port = _free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        secure_mosquitto_config(
            port=port,
            bind="127.0.0.1",
            certs=certs,
            acl_dir=acl_dir,
            require_certificate=require_certificate,
            run_as=getpass.getuser() if os.geteuid() == 0 else None,
        )
    )
    log = tmp / "mosquitto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT, process_group=0
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, f"mosquitto exited: {log.read_text()}"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            assert time.monotonic() < deadline, f"mosquitto not listening: {log.read_text()}"
            time.sleep(0.05)
        yield SecureBroker(port, certs, acl_dir, passwords, process, log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
