"""The deployment's broker configuration run for real: Mosquitto with ``docker/mosquitto/
mosquitto.conf`` (only its paths and port moved into a temporary folder), a CA and broker
certificate made with ``openssl``, a password file made with ``mosquitto_passwd`` and an ACL in
the one-pattern shape the protocol allows. Then the clients the way the compose file and the
systemd unit configure them: a real ``hyperfleet agent`` and ``hyperfleet watch`` with an
``mqtts://user:password@host`` URL and ``SSL_CERT_FILE`` naming the CA, nothing else.

This is where TLS brokers belong (tests/faults/, not ``make test``): each test starts processes.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from link import write_shard
from protocol import Shard

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "docker" / "mosquitto" / "mosquitto.conf"
PASSWORDS = {"coordinator": "pw-coordinator", "agent-1": "pw-agent-1", "agent-2": "pw-agent-2"}
ACL = """\
user coordinator
topic readwrite hf/v1/#

pattern readwrite hf/v1/agents/%u/#
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsBroker:
    port: int
    ca: Path
    folder: Path

    def url(self, user: str, password: str | None = None) -> str:
        return f"mqtts://{user}:{password or PASSWORDS[user]}@localhost:{self.port}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def _make_certs(folder: Path) -> None:
    """A CA and a broker certificate for localhost / 127.0.0.1, signed by it."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "2", "-subj", "/CN=hyperfleet test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out",
             "broker.csr", "-subj", "/CN=localhost", cwd=folder)  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "broker.crt", "-days", "2", "-extfile", "san.ext",
             cwd=folder)  # fmt: skip
    for key in ("ca.key", "broker.key"):
        (folder / key).chmod(0o600)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    pytest.fail(f"mosquitto did not listen on {port}: {log.read_text()}")


@pytest.fixture
def tls_broker(tmp_path: Path, mosquitto_binary: str) -> Iterator[TlsBroker]:
    for tool in ("openssl", "mosquitto_passwd"):
        if shutil.which(tool) is None and not Path(f"/usr/bin/{tool}").exists():
            pytest.skip(f"{tool} is not installed (it comes with openssl / mosquitto)")
    certs, mqtt, data = tmp_path / "certs", tmp_path / "mqtt", tmp_path / "data"
    for d in (certs, mqtt, data):
        d.mkdir()
    _make_certs(certs)
    passwd = mqtt / "passwd"
    for i, (user, password) in enumerate(PASSWORDS.items()):
        flags = ["-c", "-b"] if i == 0 else ["-b"]
        subprocess.run(["mosquitto_passwd", *flags, str(passwd), user, password],
                       check=True, capture_output=True, timeout=30)  # fmt: skip
    (mqtt / "acl").write_text(ACL)
    for f in (passwd, mqtt / "acl"):
        f.chmod(0o600)
    port = _free_port()
    conf = (
        CONF.read_text()
        .replace("/mosquitto/secrets/certs/", f"{certs}/")
        .replace("/mosquitto/secrets/mqtt/", f"{mqtt}/")
        .replace("/mosquitto/data/", f"{data}/")
        .replace("\nlistener 8883\n", f"\nlistener {port} 127.0.0.1\n")
    )
    assert str(certs) in conf  # the shipped file's paths and port moved
    assert f"listener {port}" in conf
    # As root, Mosquitto drops to the `mosquitto` user, which cannot read this folder.
    conf += f"\nuser {pwd.getpwuid(os.geteuid()).pw_name}\n"
    (tmp_path / "mosquitto.conf").write_text(conf)
    log = tmp_path / "mosquitto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([mosquitto_binary, "-c", str(tmp_path / "mosquitto.conf")],
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        _wait_for_port(port, proc, log)
        yield TlsBroker(port=port, ca=certs / "ca.crt", folder=tmp_path)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _env(broker: TlsBroker, user: str) -> dict[str, str]:
    return {**os.environ, "HYPERFLEET_BROKER": broker.url(user), "SSL_CERT_FILE": str(broker.ca),
            "PYTHONPATH": str(ROOT)}  # fmt: skip


def _connect(broker: TlsBroker, user: str | None, password: str | None, *,
             ca: Path | None) -> tuple[paho.Client, threading.Event, list[object]]:  # fmt: skip
    """A paho client over TLS; returns it with an event set on CONNACK and the reason codes."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.tls_set(ca_certs=str(ca) if ca else None)
    if user is not None:
        client.username_pw_set(user, password)
    done = threading.Event()
    codes: list[object] = []

    def on_connect(c: paho.Client, userdata: object, flags: object, rc: object,
                   props: object = None) -> None:  # fmt: skip
        codes.append(rc)
        done.set()

    client.on_connect = on_connect
    client.connect("localhost", broker.port)
    client.loop_start()
    return client, done, codes


def test_an_agent_and_a_watcher_meet_over_tls_with_passwords(tls_broker: TlsBroker) -> None:
    shard = tls_broker.folder / "shard.npz"
    rng = np.random.default_rng(0)
    write_shard(shard, Shard(x=rng.random((40, 64), dtype=np.float32),
                             y=rng.integers(0, 10, 40).astype(np.int64)))  # fmt: skip
    agent = subprocess.Popen(
        [sys.executable, "-m", "hyperfleet", "agent", "--id", "agent-1", "--data", str(shard),
         "--device-class", "raspberry-pi-5", "--runtime", "numpy"],
        env=_env(tls_broker, "agent-1"), cwd=tls_broker.folder,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        watch = subprocess.run(
            [sys.executable, "-m", "hyperfleet", "watch", "--count", "2"],
            env=_env(tls_broker, "coordinator"), cwd=tls_broker.folder,
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
    finally:
        agent.terminate()
        agent_out = agent.communicate(timeout=30)[0].decode()
    assert watch.returncode == 0, watch.stderr[-3000:]
    topics = {line.split()[0] for line in watch.stdout.splitlines() if line.startswith("hf/v1/")}
    # Retained hello and online status of agent-1, read by the coordinator's user over TLS.
    assert topics & {"hf/v1/agents/agent-1/hello", "hf/v1/agents/agent-1/status"}, watch.stdout
    assert "online at mqtts://" in agent_out, agent_out[-3000:]
    assert "pw-agent-1" not in agent_out  # the password stays out of the log


@pytest.mark.parametrize(
    ("user", "password"),
    [("agent-1", "wrong"), (None, None), ("stranger", "pw-agent-1")],
    ids=["wrong-password", "anonymous", "unknown-user"],
)
def test_the_broker_refuses_clients_without_valid_credentials(
    tls_broker: TlsBroker, user: str | None, password: str | None
) -> None:
    client, done, codes = _connect(tls_broker, user, password, ca=tls_broker.ca)
    try:
        assert done.wait(15)
        assert codes[0] != 0  # paho's ReasonCode: "Not authorized" / "Bad user name or password"
        assert str(codes[0]) != "Success"
    finally:
        client.loop_stop()
        client.disconnect()


def test_a_client_that_does_not_trust_the_ca_cannot_connect(tls_broker: TlsBroker) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.tls_set()  # the system's CAs, which never signed the broker's certificate
    client.username_pw_set("agent-1", PASSWORDS["agent-1"])
    with pytest.raises(ssl.SSLCertVerificationError):
        client.connect("localhost", tls_broker.port)


def test_plain_mqtt_is_not_served_on_the_tls_port(tls_broker: TlsBroker) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.username_pw_set("agent-1", PASSWORDS["agent-1"])
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.connect("localhost", tls_broker.port)
    client.loop_start()
    try:
        assert not connected.wait(3)
    finally:
        client.loop_stop()


def test_the_acl_keeps_an_agent_in_its_own_subtree(tls_broker: TlsBroker) -> None:
    coordinator, done, codes = _connect(tls_broker, "coordinator", PASSWORDS["coordinator"],
                                        ca=tls_broker.ca)  # fmt: skip
    agent, agent_done, agent_codes = _connect(tls_broker, "agent-1", PASSWORDS["agent-1"],
                                              ca=tls_broker.ca)  # fmt: skip
    received: list[str] = []
    marker = threading.Event()

    def on_message(c: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        received.append(msg.topic)
        if msg.topic.endswith("/marker"):
            marker.set()

    coordinator.on_message = on_message
    try:
        assert done.wait(15)
        assert agent_done.wait(15)
        assert str(codes[0]) == "Success"
        assert str(agent_codes[0]) == "Success"
        subscribed = threading.Event()
        coordinator.on_subscribe = lambda *a: subscribed.set()
        coordinator.subscribe("hf/v1/agents/#", qos=1)
        assert subscribed.wait(10)
        # Into another agent's subtree (denied, silently under MQTT 3.1.1), then its own.
        agent.publish("hf/v1/agents/agent-2/results", b"spoof", qos=1).wait_for_publish(10)
        agent.publish("hf/v1/agents/agent-1/results", b"mine", qos=1).wait_for_publish(10)
        agent.publish("hf/v1/agents/agent-1/marker", b"", qos=1).wait_for_publish(10)
        assert marker.wait(10)
        assert received == ["hf/v1/agents/agent-1/results", "hf/v1/agents/agent-1/marker"]
    finally:
        for c in (coordinator, agent):
            c.loop_stop()
            c.disconnect()
