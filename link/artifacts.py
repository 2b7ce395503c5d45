"""Artifacts over HTTP: serve files from a directory, fetch them back verified by size and sha256.

MQTT carries control, HTTP carries bulk: a :class:`~protocol.ModelRef` names a URL, a size and a
sha256, and :func:`fetch_artifact` refuses anything else. ::

    ArtifactServer(directory)        GET /artifacts/{name}   200 + Content-Length + ETag (sha256)
                                                             404 for unknown or unsafe names
    fetch_artifact(url, sha256=…, size_bytes=…, dest=…)     http(s):// or file://; streams to a
                                                             temporary file, verifies, renames

Errors: :class:`ArtifactError` for HTTP errors, bad URLs and I/O; :class:`IntegrityError` when
the bytes differ from the announced size or sha256 (nothing is left at ``dest`` then).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import AsyncGenerator
from pathlib import Path
from types import TracebackType
from typing import Final, Self
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import aiohttp
from aiohttp import web

from ._errors import ArtifactError, IntegrityError

__all__ = [
    "ARTIFACT_ROUTE",
    "SHA256_HEADER",
    "ArtifactServer",
    "add_artifact_routes",
    "fetch_artifact",
    "sha256_file",
]

_log = logging.getLogger(__name__)
ARTIFACT_ROUTE: Final = "/artifacts/{name}"
SHA256_HEADER: Final = "X-Content-SHA256"
_CHUNK = 1 << 16
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_DIRECTORY = web.AppKey("artifact_directory", Path)


def sha256_file(path: Path) -> str:
    """The sha256 (hex) of the file at ``path``; ``OSError`` when it cannot be read."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------- serving


def add_artifact_routes(app: web.Application, directory: Path) -> None:
    """Serve the regular files directly in ``directory`` at ``GET /artifacts/{name}``.

    Names are single path components of letters, digits, ``.``, ``_`` and ``-`` (no leading
    dot); anything else, missing files and sub-directories answer 404.
    """
    app[_DIRECTORY] = Path(directory).resolve()
    app.router.add_get(ARTIFACT_ROUTE, _serve_artifact, allow_head=False)


async def _serve_artifact(request: web.Request) -> web.StreamResponse:
    directory = request.app[_DIRECTORY]
    name = request.match_info["name"]
    if not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise web.HTTPNotFound(text="no such artifact")
    path = directory / name
    if path.resolve().parent != directory or not path.is_file():
        raise web.HTTPNotFound(text="no such artifact")
    size = path.stat().st_size
    digest = await asyncio.to_thread(sha256_file, path)
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/octet-stream",
            "ETag": f'"{digest}"',
            SHA256_HEADER: digest,
        }
    )
    response.content_length = size
    await response.prepare(request)
    with path.open("rb") as stream:
        while chunk := await asyncio.to_thread(stream.read, _CHUNK):
            await response.write(chunk)
    await response.write_eof()
    return response


class ArtifactServer:
    """An aiohttp server for ``directory`` on ``host:port`` (0: a free port), for the
    ``async with`` block. :meth:`url` gives the URL of a file in it."""

    def __init__(self, directory: Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.directory = Path(directory)
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        app = web.Application()
        add_artifact_routes(app, self.directory)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ArtifactError(
                f"cannot serve artifacts on {self.host}:{self.port}: {exc}"
            ) from exc
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, name: str) -> str:
        """The URL of ``directory/name``."""
        return f"{self.base_url}/artifacts/{name}"


# ---------------------------------------------------------------------- fetching


async def fetch_artifact(
    url: str,
    *,
    sha256: str,
    size_bytes: int,
    dest: Path,
    max_bytes: int | None = None,
    timeout: float = 60.0,
    session: aiohttp.ClientSession | None = None,
) -> Path:
    """Fetch ``url`` (``http``, ``https`` or ``file``) to ``dest``, verified; return ``dest``.

    The bytes stream to a temporary file beside ``dest``; only when there are exactly
    ``size_bytes`` of them and their sha256 (hex) is ``sha256`` does the file replace ``dest``.
    ``timeout`` (seconds) bounds the whole transfer. Raises :class:`ArtifactError` for an
    unsupported URL, an announced size above ``max_bytes``, an HTTP error status, a network or
    file error or a timeout, and :class:`IntegrityError` for a size or sha256 mismatch.
    """
    dest = Path(dest)
    if max_bytes is not None and size_bytes > max_bytes:
        raise ArtifactError(f"{url}: announced {size_bytes} bytes, above the limit of {max_bytes}")
    try:
        scheme = urlsplit(url).scheme
    except ValueError as exc:  # "http://[::1": an unclosed IPv6 bracket
        raise ArtifactError(f"{url!r:.200}: not a URL: {exc}") from exc
    if scheme == "file":
        source = _file_path(url)
        chunks = _file_chunks(source)
    elif scheme in ("http", "https"):
        chunks = _http_chunks(url, size_bytes, session)
    else:
        raise ArtifactError(f"{url}: only http, https and file URLs can be fetched")
    try:
        async with asyncio.timeout(timeout):
            await _store(url, chunks, dest, sha256=sha256.lower(), size_bytes=size_bytes)
    except TimeoutError as exc:
        raise ArtifactError(f"{url}: not fetched within {timeout}s") from exc
    except aiohttp.ClientError as exc:
        raise ArtifactError(f"{url}: {exc}") from exc
    except OSError as exc:
        if isinstance(exc, ArtifactError):
            raise
        raise ArtifactError(f"{url}: {exc}") from exc
    _log.info("fetched %s (%d bytes, sha256 %s) to %s", url, size_bytes, sha256[:12], dest)
    return dest


async def _store(
    url: str, chunks: AsyncGenerator[bytes, None], dest: Path, *, sha256: str, size_bytes: int
) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    digest = hashlib.sha256()
    received = 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in chunks:
                received += len(chunk)
                if received > size_bytes:
                    raise IntegrityError(f"{url}: more than the announced {size_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if received != size_bytes:
            raise IntegrityError(f"{url}: {received} bytes, the reference announced {size_bytes}")
        if digest.hexdigest() != sha256:
            raise IntegrityError(f"{url}: sha256 {digest.hexdigest()}, expected {sha256}")
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        await chunks.aclose()


def _file_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ArtifactError(f"{url}: a file URL must name a local path")
    return Path(url2pathname(unquote(parts.path)))


async def _file_chunks(path: Path) -> AsyncGenerator[bytes, None]:
    stream = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(stream.read, _CHUNK):
            yield chunk
    finally:
        stream.close()


async def _http_chunks(
    url: str, size_bytes: int, session: aiohttp.ClientSession | None
) -> AsyncGenerator[bytes, None]:
    own = session is None
    client = aiohttp.ClientSession() if session is None else session
    try:
        async with client.get(url) as response:
            if response.status != 200:
                raise ArtifactError(f"{url}: HTTP {response.status} {response.reason}")
            if response.content_length is not None and response.content_length > size_bytes:
                raise IntegrityError(
                    f"{url}: {response.content_length} bytes, the reference announced {size_bytes}"
                )
            async for chunk in response.content.iter_chunked(_CHUNK):
                yield chunk
    finally:
        if own:
            await client.close()
