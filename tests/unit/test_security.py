"""Identity pieces without a broker: artifact signatures, the wire's optional signature field,
redacted broker URLs, and the files of ``hyperfleet certs`` and ``hyperfleet acl``."""

from __future__ import annotations

import base64
import dataclasses
import stat
import tomllib
from pathlib import Path

import msgpack
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from hyperfleet.acl import mosquitto_hash
from hyperfleet.cli import main
from hyperfleet.exits import EXIT_USAGE
from link import ArtifactError, SignatureError
from link.signing import ArtifactSigner, ArtifactVerifier, generate_signing_key
from protocol import (
    Artifact,
    ModelRef,
    Topics,
    decode,
    encode,
    new_envelope,
    parse_broker_url,
    redact_url,
)


def _ref() -> ModelRef:
    return ModelRef(
        name="digits",
        version=3,
        job_id="job",
        format="keras",
        url="http://h/artifacts/model.keras",
        sha256="ab" * 32,
        size_bytes=1000,
        variants=(
            Artifact(format="tflite", url="http://h/artifacts/m.tflite", sha256="cd" * 32,
                     size_bytes=500),
        ),
    )  # fmt: skip


def _keys(tmp_path: Path, name: str) -> tuple[ArtifactSigner, ArtifactVerifier]:
    private, public = generate_signing_key()
    (tmp_path / f"{name}.key").write_bytes(private)
    (tmp_path / f"{name}.pub").write_bytes(public)
    return (
        ArtifactSigner.load(tmp_path / f"{name}.key"),
        ArtifactVerifier.load(tmp_path / f"{name}.pub"),
    )


def test_a_signed_ref_verifies_and_every_change_is_refused(tmp_path: Path) -> None:
    signer, verifier = _keys(tmp_path, "ours")
    _, stranger = _keys(tmp_path, "theirs")
    signed = signer.sign_ref(_ref())
    assert signed.signature
    assert all(a.signature for a in signed.variants)
    verifier.check_all(signed)
    with pytest.raises(SignatureError, match="does not verify"):
        stranger.check_all(signed)
    tflite = signed.variants[0]
    tampered = {
        "sha256": dataclasses.replace(signed, sha256="00" * 32),
        "rollback": dataclasses.replace(signed, version=2),
        "other model": dataclasses.replace(signed, name="mnist"),
        "size": dataclasses.replace(signed, size_bytes=999),
        "variant sha256": dataclasses.replace(
            signed, variants=(dataclasses.replace(tflite, sha256="11" * 32),)
        ),
        "swapped signatures": dataclasses.replace(
            signed,
            signature=tflite.signature,
            variants=(dataclasses.replace(tflite, signature=signed.signature),),
        ),
    }
    for ref in tampered.values():
        with pytest.raises(SignatureError, match="does not verify"):
            verifier.check_all(ref)
    with pytest.raises(SignatureError, match="unsigned"):
        verifier.check_all(_ref())
    with pytest.raises(SignatureError, match="base64"):
        verifier.check_all(dataclasses.replace(signed, signature="not base64!"))


def test_key_files_that_are_not_ed25519_keys_are_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.pub").write_text("hello")
    with pytest.raises(ArtifactError, match="not a PEM public key"):
        ArtifactVerifier.load(tmp_path / "junk.pub")
    with pytest.raises(ArtifactError, match="cannot read"):
        ArtifactSigner.load(tmp_path / "missing.key")
    assert main(["certs", "--out", str(tmp_path / "c"), "--agents", "a1"]) == 0
    with pytest.raises(ArtifactError, match="not an Ed25519 key"):
        ArtifactSigner.load(tmp_path / "c" / "ca.key")  # an ECDSA key


def test_signatures_travel_on_the_wire_and_unsigned_frames_stay_as_before(
    tmp_path: Path,
) -> None:
    signer, verifier = _keys(tmp_path, "k")
    signed = signer.sign_ref(_ref())
    back = decode(encode(new_envelope(signed, sender="coordinator"))).body
    assert back == signed
    assert isinstance(back, ModelRef)
    verifier.check_all(back)
    # An unsigned reference carries no signature field at all, so receivers that predate the
    # field (they refuse unknown fields) still read it; one without the field decodes as None.
    frame = encode(new_envelope(_ref(), sender="coordinator"))
    assert b"signature" not in frame
    unsigned = decode(frame).body
    assert isinstance(unsigned, ModelRef)
    assert unsigned.signature is None
    assert msgpack.packb("signature") in encode(new_envelope(signed, sender="c"))


def test_passwords_never_show_in_broker_urls_or_their_errors() -> None:
    assert redact_url("mqtts://agent:s3cret@host:8883") == "mqtts://agent:***@host:8883"
    assert redact_url("mqtt://host:1883") == "mqtt://host:1883"
    assert redact_url("mqtt://user@host") == "mqtt://user@host"
    address = parse_broker_url("mqtts://agent:s3cret@host:8883")
    assert address.password == "s3cret"
    assert "s3cret" not in address.url
    assert "s3cret" not in repr(address)
    with pytest.raises(ValueError, match="bad port") as err:
        parse_broker_url("mqtt://agent:s3cret@host:99999")
    assert "s3cret" not in str(err.value)
    with pytest.raises(ValueError, match="scheme") as err:
        parse_broker_url("http://agent:s3cret@host")
    assert "s3cret" not in str(err.value)


def test_mosquitto_hash_matches_mosquitto_passwd() -> None:
    # Written by `mosquitto_passwd -c -b f alice secret` (Mosquitto 2.0.11).
    made = (
        "$7$101$4MvLvXkEeXEylxvU$6luIAkdDWj67OCh0gj4XC7pFy90ygNjYTPb2AgkpngB1WV2wvGSdghqnrKYSN15j"
        "y1+4xWoCAU0AeN/+Q/tcdQ=="
    )
    salt = base64.b64decode(made.split("$")[3])
    assert mosquitto_hash("secret", salt=salt) == made
    assert mosquitto_hash("secret") != mosquitto_hash("secret")  # a fresh salt each time


def test_certs_writes_the_file_contract_and_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    args = ["certs", "--out", str(out), "--agents", "a1,a2", "--hosts", "broker.lan",
            "--hosts", "10.1.2.3"]  # fmt: skip
    assert main(args) == 0
    expected = ["ca", "broker", "coordinator", "agents/a1", "agents/a2"]
    for stem in expected:
        for ext, mode in (("crt", 0o644), ("key", 0o600)):
            path = out / f"{stem}.{ext}"
            assert stat.S_IMODE(path.stat().st_mode) == mode, path
    assert stat.S_IMODE((out / "signing.key").stat().st_mode) == 0o600
    ArtifactVerifier.load(out / "signing.pub")
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    broker = x509.load_pem_x509_certificate((out / "broker.crt").read_bytes())
    agent = x509.load_pem_x509_certificate((out / "agents/a2.crt").read_bytes())
    for cert in (broker, agent):
        cert.verify_directly_issued_by(ca)
    sans = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", "broker.lan"}
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "10.1.2.3",
    }
    cn = agent.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    assert cn == "a2"
    assert isinstance(agent.public_key(), ec.EllipticCurvePublicKey)
    before = (out / "ca.key").read_bytes()
    assert main(args) == EXIT_USAGE
    assert (out / "ca.key").read_bytes() == before
    assert main([*args, "--force"]) == 0
    assert (out / "ca.key").read_bytes() != before
    assert main(["certs", "--out", str(tmp_path / "x"), "--agents", "a1,a1"]) == EXIT_USAGE
    assert main(["certs", "--out", str(tmp_path / "x"), "--agents", "a/b"]) == EXIT_USAGE
    bad_host = ["certs", "--out", str(tmp_path / "x"), "--agents", "a", "--hosts", "a b"]
    assert main(bad_host) == EXIT_USAGE
    assert not (tmp_path / "x").exists()


def test_acl_confines_each_agent_and_keeps_passwords_private(tmp_path: Path) -> None:
    out = tmp_path / "acl"
    assert main(["acl", "--out", str(out), "--agents", "a1,a2", "--prefix", "p/q"]) == 0
    creds = tomllib.loads((out / "credentials.toml").read_text())["users"]
    assert set(creds) == {"coordinator", "roma", "monitor", "a1", "a2"}
    assert len(set(creds.values())) == 5
    assert stat.S_IMODE((out / "credentials.toml").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "passwd").stat().st_mode) == 0o600
    passwd = dict(line.split(":", 1) for line in (out / "passwd").read_text().splitlines())
    assert set(passwd) == set(creds)
    assert all(h.startswith("$7$101$") for h in passwd.values())
    assert not any(pw in (out / "passwd").read_text() for pw in creds.values())
    blocks = {
        block.splitlines()[0].removeprefix("user "): set(block.splitlines()[1:])
        for block in (out / "acl").read_text().split("\n\n")[1:]
    }
    assert blocks["a1"] == {
        "topic write p/q/agents/a1/status",
        "topic write p/q/agents/a1/hello",
        "topic write p/q/agents/a1/results",
        "topic readwrite p/q/agents/a1/heartbeat",
        "topic read p/q/agents/a1/inbox",
        "topic read p/q/jobs/+/state",
        "topic read p/q/models/+/latest",
    }
    assert "topic read p/q/#" in blocks["monitor"]
    assert "pattern" not in (out / "acl").read_text()
    assert main(["acl", "--out", str(out), "--agents", "a1"]) == EXIT_USAGE
    assert main(["acl", "--out", str(tmp_path / "y"), "--agents", "roma"]) == EXIT_USAGE


def test_the_coordinator_refuses_a_bad_signing_key_before_it_connects(tmp_path: Path) -> None:
    import asyncio

    from support import digits_split

    from coordinator.job import JobSpec
    from hyperfleet.commands import CoordinatorRun, run_coordinator
    from protocol import encode_shard

    _, holdout = digits_split(1)
    (tmp_path / "holdout.npz").write_bytes(encode_shard(holdout))
    (tmp_path / "bad.key").write_text("not a key")
    spec = JobSpec.model_validate(
        {
            "job_id": "j",
            "holdout": str(tmp_path / "holdout.npz"),
            "constraints": {"target_accuracy": 0.9, "time_budget_s": 10},
        }
    )
    run = CoordinatorRun(
        spec=spec,
        broker=parse_broker_url("mqtt://127.0.0.1:1"),  # never reached
        topics=Topics(),
        state_dir=tmp_path / "state",
        out_dir=tmp_path / "out",
        signing_key=tmp_path / "bad.key",
    )
    with pytest.raises(ArtifactError, match="not an unencrypted PEM private key"):
        asyncio.run(run_coordinator(run))
