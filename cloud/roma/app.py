"""ROMA's HTTP face: the KServe v2 / Open Inference Protocol REST endpoints on aiohttp.

::

    GET  /v2/health/live | /v2/health/ready          200 true, 400 false (the spec's 4xx)
    GET  /v2                                         server metadata and extensions
    GET  /v2/models/{m}[/versions/{v}]               model metadata (inputs, outputs, versions)
    GET  /v2/models/{m}[/versions/{v}]/ready
    POST /v2/models/{m}[/versions/{v}]/infer         JSON tensors or the binary data extension
    GET  /v2/models/{m}/stats                        SLA, window percentile, counts, cores, decisions
    POST /v2/repository/index                        models and their states (with a token:
                                                     Authorization: Bearer <token>)
    POST /v2/repository/models/{m}/load | unload     Authorization: Bearer <token>
    GET  /metrics                                    Prometheus text format

Every error — ours, aiohttp's (unknown route, body over the limit, a body that does not decode
under its ``Content-Encoding``) or an unexpected one — answers the protocol's JSON
``{"error": message}`` with its status, in one middleware; one bad request never touches
another.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import numpy as np
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .errors import (
    InferenceRequestError,
    ModelNotFound,
    Overloaded,
    PayloadTooLarge,
    RomaError,
    Unauthorized,
    UnsupportedEncoding,
)
from .served import ServedModel
from .server import RomaServer
from .v2 import (
    DATATYPES,
    HEADER_LENGTH,
    InferRequest,
    Tensor,
    datatype_of,
    encode_infer_response,
    parse_infer_request,
)

__all__ = ["SERVER", "make_app"]

_log = logging.getLogger(__name__)
SERVER: Final = web.AppKey("roma_server", RomaServer)
_OFFLOAD_BYTES: Final = 64 << 10
"""Bodies above this are decoded off the event loop."""
_VERSION: Final = "0.1.0"
_ENCODINGS: Final = frozenset({"", "identity", "gzip", "deflate", "br", "zstd"})
"""``Content-Encoding`` values aiohttp decodes (``br``/``zstd`` when their library is
installed; aiohttp answers 400 otherwise). It passes any other value through undecoded."""
_VERSION_NUMBER: Final = re.compile(r"[0-9]{1,18}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Overloaded as exc:
        return _error(exc.status, str(exc), {"Retry-After": str(exc.retry_after_s)})
    except RomaError as exc:
        return _error(exc.status, str(exc))
    except web.HTTPRequestEntityTooLarge as exc:
        return _error(413, f"request body over the limit: {exc.text}")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason if not exc.text else exc.text, None)
    except asyncio.CancelledError:
        raise
    except Exception:
        _log.exception("unexpected error answering %s %s", request.method, request.path)
        return _error(500, "internal server error; see the server log")


def _server(request: web.Request) -> RomaServer:
    return request.app[SERVER]


def _version(request: web.Request) -> str | None:
    return request.match_info.get("version")


def _tensor_meta(name: str, dtype: str, shape: tuple[int, ...]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype_of(np.dtype(dtype)), "shape": list(shape)}


# ---------------------------------------------------------------------- health and metadata


async def live(request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def ready(request: web.Request) -> web.Response:
    server = _server(request)
    if not server.ready.is_set():
        return _error(400, "the server is still loading its models")
    return web.json_response({"ready": True})


async def server_metadata(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "name": "hyperfleet-roma",
            "version": _VERSION,
            "extensions": ["binary_tensor_data", "model_repository", "statistics"],
        }
    )


async def model_metadata(request: web.Request) -> web.Response:
    server = _server(request)
    name = request.match_info["model"]
    served = server.served(name, _version(request))
    return web.json_response(
        {
            "name": name,
            "versions": [str(v) for v in server.repository.versions(name)],
            "platform": served.info.runtime,
            "inputs": [
                _tensor_meta(served.config.input_name, served.info.input.dtype,
                             served.info.input.shape)
            ],
            "outputs": [
                _tensor_meta(served.config.output_name, served.info.output.dtype,
                             served.info.output.shape)
            ],
        }
    )  # fmt: skip


async def model_ready(request: web.Request) -> web.Response:
    server = _server(request)
    name = request.match_info["model"]
    try:
        server.served(name, _version(request))
    except ModelNotFound:
        raise
    except RomaError as exc:
        return _error(400, str(exc))
    return web.json_response({"name": name, "ready": True})


async def model_stats(request: web.Request) -> web.Response:
    server = _server(request)
    name = request.match_info["model"]
    entry = server.entry(name)
    served = entry.served
    body: dict[str, Any] = {"name": name, "state": entry.state, "reason": entry.reason}
    if served is not None:
        now = time.monotonic()
        c = served.counters
        cfg = served.config
        body.update(
            {
                "version": served.version,
                "previous_version": entry.previous,
                "sla_ms": cfg.sla_ms,
                "percentile": cfg.percentile,
                "window_s": cfg.window_s,
                "window_response_ms": _ms(served.window.percentile(now, cfg.percentile)),
                "window_p50_ms": _ms(served.window.percentile(now, 50)),
                "window_compute_p50_ms": _ms(served.compute_window.percentile(now, 50)),
                "window_violation_share": served.window.violation_share(now, cfg.sla_s),
                "window_requests": served.window.count(now),
                "requests": c.requests,
                "ok": c.ok,
                "shed": c.shed,
                "failed": c.failed,
                "sla_violations": c.violations,
                "batches": c.batches,
                "gpu_batches": c.gpu_batches,
                "queued": served.queued,
                "cores": served.cores,
                "active_workers": served.active_workers,
                "core_seconds": round(served.core_seconds(), 3),
                "quota": served.quota_mode,
                "throttled_s": None
                if served.cgroup is None or served.cgroup.cores is None
                else round(served.cgroup.throttled_s(), 3),
                "decisions": list(entry.decisions)[-20:],
            }
        )
    return web.json_response(body)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=_server(request).metrics.exposition(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


# ---------------------------------------------------------------------- inference


def _header_length(request: web.Request) -> int | None:
    raw = request.headers.get(HEADER_LENGTH)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InferenceRequestError(f"{HEADER_LENGTH} must be an integer, got {raw!r}") from None


def _model_input(req: InferRequest, served: ServedModel) -> np.ndarray[Any, Any]:
    cfg = served.config
    if len(req.inputs) != 1:
        raise InferenceRequestError(
            f"model {served.name} takes one input ({cfg.input_name}), got {len(req.inputs)}"
        )
    (tensor,) = req.inputs
    if tensor.name != cfg.input_name:
        raise InferenceRequestError(
            f"model {served.name} has no input {tensor.name!r}; its input is {cfg.input_name!r}"
        )
    want = datatype_of(np.dtype(served.info.input.dtype))
    if tensor.datatype != want:
        raise InferenceRequestError(
            f"input {tensor.name} of model {served.name} is {want}, got {tensor.datatype}"
        )
    features = served.info.input.shape[1:]
    shape = tensor.shape
    if len(shape) != 1 + len(features) or any(
        f >= 0 and s != f for s, f in zip(shape[1:], features, strict=True)
    ):
        raise InferenceRequestError(
            f"input {tensor.name} of model {served.name} has shape [-1, "
            f"{', '.join(map(str, features))}], got {list(shape)}"
        )
    if not 1 <= shape[0] <= cfg.max_batch:
        raise InferenceRequestError(
            f"batch of {shape[0]} rows; model {served.name} takes 1 to {cfg.max_batch} per request"
        )
    x = tensor.data
    if not np.all(np.isfinite(x)):
        raise InferenceRequestError(f"input {tensor.name} holds NaN or infinite values")
    if not cfg.normalization.identity:
        try:
            x = cfg.normalization.apply(x)
        except ValueError as exc:
            raise InferenceRequestError(str(exc)) from exc
    return np.ascontiguousarray(x, dtype=DATATYPES[want])


def _binary_outputs(req: InferRequest, served: ServedModel) -> dict[str, bool]:
    name = served.config.output_name
    if not req.outputs:
        return {name: req.binary_output}
    binary = {}
    for out in req.outputs:
        if out.name != name:
            raise InferenceRequestError(
                f"model {served.name} has no output {out.name!r}; its output is {name!r}"
            )
        binary[name] = out.binary
    return binary


async def infer(request: web.Request) -> web.Response:
    server = _server(request)
    name = request.match_info["model"]
    started = time.monotonic()
    code = 200
    try:
        served = server.served(name, _version(request))
        body = await _read_body(request)
        header_length = _header_length(request)
        if len(body) > _OFFLOAD_BYTES:
            req = await asyncio.to_thread(parse_infer_request, body, header_length=header_length)
        else:
            req = parse_infer_request(body, header_length=header_length)
        x = _model_input(req, served)
        binary = _binary_outputs(req, served)
        result = await served.infer(x)
        out = Tensor(
            name=served.config.output_name,
            datatype=datatype_of(result.outputs.dtype),
            shape=tuple(result.outputs.shape),
            data=result.outputs,
        )
        payload, headers = encode_infer_response(
            model_name=name,
            model_version=served.version,
            request_id=req.id,
            outputs=[out],
            binary=binary,
        )
        server.metrics.request.labels(name).observe(time.monotonic() - started)
        return web.Response(body=payload, headers=headers)
    except RomaError as exc:
        code = exc.status
        if isinstance(exc, Overloaded):
            server.metrics.shed.labels(name).inc()
        raise
    finally:
        if name in server.entries:
            server.metrics.requests.labels(name, str(code)).inc()


# ---------------------------------------------------------------------- repository extension


def _authorise(request: web.Request) -> None:
    token = _server(request).config.token
    if token is None:
        raise Unauthorized("repository control is off: the server was started without --token")
    # aiohttp decodes header bytes that are not UTF-8 as surrogates; encode them back, exactly.
    given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, f"Bearer {token}".encode("utf-8", "surrogateescape")):
        _log.warning("refused repository control from %s: bad or no bearer token", request.remote)
        raise Unauthorized("repository control needs Authorization: Bearer <token>")


async def _read_body(request: web.Request) -> bytes:
    """The request body, decoded under its ``Content-Encoding``; :class:`PayloadTooLarge` past
    the limit, :class:`InferenceRequestError` when it does not decode and
    :class:`UnsupportedEncoding` under a ``Content-Encoding`` that is not decoded here."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in _ENCODINGS:
        raise UnsupportedEncoding(
            f"Content-Encoding {encoding!r:.40} is not supported; use one of "
            f"{', '.join(sorted(e for e in _ENCODINGS if e))}"
        )
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        limit = _server(request).config.max_body_bytes
        raise PayloadTooLarge(f"request body over the limit of {limit} bytes") from exc
    except (web.RequestPayloadError, HttpProcessingError) as exc:
        encoding = request.headers.get("Content-Encoding", "none")
        cause = exc.__cause__ or exc
        raise InferenceRequestError(
            f"request body does not decode under Content-Encoding {encoding}: {cause}"
        ) from exc


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await _read_body(request)
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InferenceRequestError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InferenceRequestError("request body must be a JSON object")
    return doc


async def repository_index(request: web.Request) -> web.Response:
    server = _server(request)
    if server.config.token is not None:
        _authorise(request)
    rows = []
    for name in sorted(set(server.repository.models()) | set(server.entries)):
        entry = server.entries.get(name)
        rows.append(
            {
                "name": name,
                "version": entry.served.version if entry and entry.served else None,
                "state": entry.state if entry else "UNAVAILABLE",
                "reason": entry.reason if entry else "not loaded",
            }
        )
    return web.json_response(rows)


async def repository_load(request: web.Request) -> web.Response:
    _authorise(request)
    doc = await _json_body(request)
    params = doc.get("parameters", {})
    version: int | None = None
    if isinstance(params, dict) and "version" in params:
        raw = params["version"]
        # ASCII digits only: str.isdigit() takes '²', which int() refuses; and int() refuses
        # strings of over 4300 digits.
        if isinstance(raw, bool) or not (
            (isinstance(raw, int) and 0 <= raw < 10**18)
            or (isinstance(raw, str) and _VERSION_NUMBER.fullmatch(raw))
        ):
            raise InferenceRequestError(
                f"parameters.version must be a version number, got {raw!r:.40}"
            )
        version = int(raw)
    served = await _server(request).load(request.match_info["model"], version)
    return web.json_response({"name": served.name, "version": served.version, "state": "READY"})


async def repository_unload(request: web.Request) -> web.Response:
    _authorise(request)
    await _server(request).unload(request.match_info["model"])
    return web.json_response({"name": request.match_info["model"], "state": "UNAVAILABLE"})


def make_app(server: RomaServer) -> web.Application:
    """The aiohttp application of ``server`` (bodies limited to ``max_body_bytes``)."""
    app = web.Application(client_max_size=server.config.max_body_bytes, middlewares=[_errors])
    app[SERVER] = server
    r = app.router
    r.add_get("/v2/health/live", live)
    r.add_get("/v2/health/ready", ready)
    r.add_get("/v2", server_metadata)
    for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        r.add_get(base, model_metadata)
        r.add_get(base + "/ready", model_ready)
        r.add_post(base + "/infer", infer)
    r.add_get("/v2/models/{model}/stats", model_stats)
    r.add_post("/v2/repository/index", repository_index)
    r.add_post("/v2/repository/models/{model}/load", repository_load)
    r.add_post("/v2/repository/models/{model}/unload", repository_unload)
    r.add_get("/metrics", metrics)
    return app
