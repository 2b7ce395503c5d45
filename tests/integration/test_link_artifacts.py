"""Artifacts over a real aiohttp server on a free port: verified fetches, refusals, no traversal."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import aiohttp
import pytest

from link import ArtifactError, IntegrityError
from link.artifacts import SHA256_HEADER, ArtifactServer, fetch_artifact

BLOB = bytes(range(256)) * 1000  # 256 kB, several chunks
DIGEST = hashlib.sha256(BLOB).hexdigest()


@pytest.fixture
def served(tmp_path: Path) -> Path:
    directory = tmp_path / "served"
    directory.mkdir()
    (directory / "model.keras").write_bytes(BLOB)
    (directory / "sub").mkdir()
    (tmp_path / "secret.txt").write_text("not for the network")
    return directory


def fetch(server: ArtifactServer, name: str, dest: Path, **kwargs: object) -> Path:
    options: dict[str, object] = {"sha256": DIGEST, "size_bytes": len(BLOB), "dest": dest}
    options.update(kwargs)
    return asyncio.run(_fetch_from(server, name, options))


async def _fetch_from(server: ArtifactServer, name: str, options: dict[str, object]) -> Path:
    async with server:
        return await fetch_artifact(server.url(name), **options)  # type: ignore[arg-type]


def test_a_good_file_arrives_verified(served: Path, tmp_path: Path) -> None:
    dest = tmp_path / "got.keras"
    assert fetch(ArtifactServer(served), "model.keras", dest) == dest
    assert dest.read_bytes() == BLOB
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_the_server_sends_length_and_sha256(served: Path) -> None:
    async def scenario() -> tuple[int, list[str]]:
        names = ("Content-Length", SHA256_HEADER, "ETag")
        async with ArtifactServer(served) as server, aiohttp.ClientSession() as http:
            response = await http.get(server.url("model.keras"))
            async with response:
                await response.read()
                return response.status, [response.headers.get(n, "") for n in names]

    status, headers = asyncio.run(scenario())
    assert status == 200
    assert headers == [str(len(BLOB)), DIGEST, f'"{DIGEST}"']


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sha256": "0" * 64}, "sha256"),
        ({"size_bytes": len(BLOB) + 10}, "announced"),  # the body is shorter: truncated
        ({"size_bytes": len(BLOB) - 10}, "announced"),  # the body is longer: oversized
    ],
    ids=["wrong-sha", "truncated", "oversized"],
)
def test_a_mismatch_is_an_integrity_error_and_leaves_nothing(
    served: Path, tmp_path: Path, kwargs: dict[str, object], match: str
) -> None:
    dest = tmp_path / "got.keras"
    dest.write_bytes(b"the previous model")
    with pytest.raises(IntegrityError, match=match):
        fetch(ArtifactServer(served), "model.keras", dest, **kwargs)
    assert dest.read_bytes() == b"the previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["got.keras", "secret.txt", "served"]


def test_a_size_above_the_limit_is_refused_before_fetching(served: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="above the limit") as caught:
        fetch(ArtifactServer(served), "model.keras", tmp_path / "got", max_bytes=1000)
    assert not isinstance(caught.value, IntegrityError)


@pytest.mark.parametrize(
    "name",
    ["missing.keras", "..%2Fsecret.txt", "%2E%2E%2Fsecret.txt", "sub", ".hidden", "a%00b"],
)
def test_unknown_and_unsafe_names_are_404(served: Path, tmp_path: Path, name: str) -> None:
    (served / ".hidden").write_bytes(BLOB)
    with pytest.raises(ArtifactError, match="HTTP 404"):
        fetch(ArtifactServer(served), name, tmp_path / "got")
    assert not (tmp_path / "got").exists()


def test_a_raw_traversal_path_never_leaves_the_directory(served: Path) -> None:
    async def scenario() -> tuple[int, bytes]:
        async with ArtifactServer(served) as server:
            reader, writer = await asyncio.open_connection(server.host, server.port)
            writer.write(
                b"GET /artifacts/../secret.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
            reply = await reader.read()
            writer.close()
            await writer.wait_closed()
            return int(reply.split()[1]), reply

    status, reply = asyncio.run(scenario())
    assert status == 404
    assert b"not for the network" not in reply


def test_file_urls_are_fetched_and_verified(served: Path, tmp_path: Path) -> None:
    url = (served / "model.keras").resolve().as_uri()
    dest = tmp_path / "copy.keras"
    got = asyncio.run(fetch_artifact(url, sha256=DIGEST, size_bytes=len(BLOB), dest=dest))
    assert got.read_bytes() == BLOB
    with pytest.raises(IntegrityError):
        asyncio.run(fetch_artifact(url, sha256="1" * 64, size_bytes=len(BLOB), dest=dest))
    missing = (served / "nope").resolve().as_uri()
    with pytest.raises(ArtifactError, match="No such file"):
        asyncio.run(fetch_artifact(missing, sha256=DIGEST, size_bytes=len(BLOB), dest=dest))


def test_unsupported_urls_and_unreachable_servers_are_artifact_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="only http"):
        asyncio.run(fetch_artifact("ftp://h/x", sha256=DIGEST, size_bytes=1, dest=tmp_path / "x"))
    with pytest.raises(ArtifactError) as caught:
        asyncio.run(
            fetch_artifact("http://127.0.0.1:9/x", sha256=DIGEST, size_bytes=1, dest=tmp_path / "x")
        )
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)


@pytest.mark.parametrize(
    "url", ["http://[::1", "http://[::1]:99999/x", "http://h:port/x", "https://\x00/x", ""]
)
def test_a_malformed_url_is_an_artifact_error(tmp_path: Path, url: str) -> None:
    """Issue 17: ``http://[::1`` raised a bare ValueError out of fetch_artifact; a ModelRef
    retained with it ended ROMA's model follower (its install loop catches RomaError only)."""
    with pytest.raises(ArtifactError):
        asyncio.run(
            fetch_artifact(url, sha256=DIGEST, size_bytes=1, dest=tmp_path / "x", timeout=5)
        )
