"""Malformed HTTP against a real ``hyperfleet serve`` process (issue 17 §5): every request below
gets a 4xx, never a 5xx, and the server answers ``/v2/health/ready`` and a real inference
correctly after each one. About a minute (a request and a check per case), so it runs in
``make test-faults``; ``tests/roma/test_protocol.py`` keeps the common cases in ``make test``.

The cases are data: ``(method, path, body, headers)`` rows in :data:`CASES`, plus raw byte
strings written to a socket in :data:`RAW`. To run them against another aiohttp service (the
dashboard, say), point :func:`_request` at its base URL, keep the rows that apply (methods,
paths, bodies, headers are generic) and use its own health route in :func:`_healthy`.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

import numpy as np
import pytest
from roma.conftest import ServerProcess, TrainedModels

TOKEN = "test-token"  # conftest.start_server's
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}
ROW = [0.0] * 64


def _doc(*, shape: Any = None, data: Any = None, datatype: Any = "FP32", **extra: Any) -> bytes:
    tensor: dict[str, Any] = {"name": "input", "shape": [1, 64] if shape is None else shape}
    tensor["datatype"] = datatype
    tensor["data"] = ROW if data is None else data
    return json.dumps({"inputs": [tensor], **extra}).encode()


def _binary(size: Any, raw: bytes, *, header_length: Any = None) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 64],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    ).encode()
    length = len(head) if header_length is None else header_length
    return head + raw, {"Inference-Header-Content-Length": str(length)}


_F32 = np.zeros(64, "<f4").tobytes()
INFER = "/v2/models/digits/infer"

CASES: dict[str, tuple[str, str, bytes, dict[str, str]]] = {
    # wrong methods
    "GET infer": ("GET", INFER, b"", {}),
    "PUT infer": ("PUT", INFER, _doc(), JSON),
    "DELETE a model": ("DELETE", "/v2/models/digits", b"", {}),
    "POST health": ("POST", "/v2/health/ready", b"{}", JSON),
    "PATCH metrics": ("PATCH", "/metrics", b"", {}),
    "GET repository index": ("GET", "/v2/repository/index", b"", {}),
    "GET load": ("GET", "/v2/repository/models/digits/load", b"", {}),
    "made-up method": ("BREW", "/v2", b"", {}),
    # garbage paths
    "root": ("GET", "/", b"", {}),
    "v3": ("GET", "/v3/models/digits", b"", {}),
    "empty model": ("POST", "/v2/models//infer", _doc(), JSON),
    "dot-dot model": ("POST", "/v2/models/..%2F..%2Fetc%2Fpasswd/infer", _doc(), JSON),
    "NUL in model": ("GET", "/v2/models/dig%00its", b"", {}),
    "TAB in model": ("GET", "/v2/models/dig%09its/ready", b"", {}),
    "non-ASCII model": ("GET", "/v2/models/d%C3%AFgits/stats", b"", {}),
    "invalid UTF-8 in path": ("GET", "/v2/models/%FF%FE", b"", {}),
    "long path": ("GET", "/v2/models/" + "a" * 4000, b"", {}),
    "unknown model": ("POST", "/v2/models/nope/infer", _doc(), JSON),
    "unknown model stats": ("GET", "/v2/models/nope/stats", b"", {}),
    "unknown model ready": ("GET", "/v2/models/nope/ready", b"", {}),
    "unknown version": ("POST", "/v2/models/digits/versions/9/infer", _doc(), JSON),
    "version not a number": ("GET", "/v2/models/digits/versions/abc", b"", {}),
    "negative version": ("GET", "/v2/models/digits/versions/-1/ready", b"", {}),
    "huge version": ("POST", "/v2/models/digits/versions/" + "9" * 400 + "/infer", _doc(), JSON),
    # bodies that are not an infer request
    "empty body": ("POST", INFER, b"", JSON),
    "null": ("POST", INFER, b"null", JSON),
    "a list": ("POST", INFER, b"[]", JSON),
    "a string": ("POST", INFER, b'"inputs"', JSON),
    "empty object": ("POST", INFER, b"{}", JSON),
    "invalid UTF-8": ("POST", INFER, b'{"inputs": "\xff\xfe"}', JSON),
    "UTF-8 BOM": ("POST", INFER, b"\xef\xbb\xbf" + _doc(), JSON),
    "UTF-16": ("POST", INFER, _doc().decode().encode("utf-16"), JSON),
    "trailing garbage": ("POST", INFER, _doc() + b"}}", JSON),
    "inputs null": ("POST", INFER, b'{"inputs": null}', JSON),
    "inputs empty": ("POST", INFER, b'{"inputs": []}', JSON),
    "input null": ("POST", INFER, b'{"inputs": [null]}', JSON),
    "input name a number": ("POST", INFER, b'{"inputs": [{"name": 1}]}', JSON),
    "two inputs": (
        "POST",
        INFER,
        json.dumps({"inputs": [json.loads(_doc())["inputs"][0]] * 2}).encode(),
        JSON,
    ),
    # shapes
    "shape a string": ("POST", INFER, _doc(shape="1x64"), JSON),
    "shape negative": ("POST", INFER, _doc(shape=[-1, 64]), JSON),
    "shape of floats": ("POST", INFER, _doc(shape=[1.0, 64.0]), JSON),
    "shape of booleans": ("POST", INFER, _doc(shape=[True, 64]), JSON),
    "shape huge": ("POST", INFER, _doc(shape=[2**62, 64]), JSON),
    "shape beyond int64": ("POST", INFER, _doc(shape=[2**70, 64]), JSON),
    "shape zero times huge": ("POST", INFER, _doc(shape=[0, 2**62], data=[]), JSON),
    "shape zero rows": ("POST", INFER, _doc(shape=[0, 64], data=[]), JSON),
    "shape nine dims": ("POST", INFER, _doc(shape=[1] * 9), JSON),
    "shape 3-d": ("POST", INFER, _doc(shape=[1, 8, 8]), JSON),
    "rows over max_batch": ("POST", INFER, _doc(shape=[17, 64], data=ROW * 17), JSON),
    # data and datatypes
    "data a string": ("POST", INFER, _doc(data="zeros"), JSON),
    "data of strings": ("POST", INFER, _doc(data=["0"] * 64), JSON),
    "data ragged": ("POST", INFER, _doc(data=[[0.0] * 63, [0.0]]), JSON),
    "data of objects": ("POST", INFER, _doc(data=[{}] * 64), JSON),
    "data too deep": ("POST", INFER, _doc(data=json.loads("[" * 900 + "0" + "]" * 900)), JSON),
    "data of nulls": ("POST", INFER, _doc(data=[None] * 64), JSON),
    "data short": ("POST", INFER, _doc(data=ROW[:-1]), JSON),
    "data 1e400": ("POST", INFER, _doc().replace(b"0.0", b"1e400", 1), JSON),
    "datatype unknown": ("POST", INFER, _doc(datatype="BF16"), JSON),
    "datatype BYTES": ("POST", INFER, _doc(datatype="BYTES", data=["a"] * 64), JSON),
    "datatype a list": ("POST", INFER, _doc(datatype=["FP32"]), JSON),
    "datatype lower case": ("POST", INFER, _doc(datatype="fp32"), JSON),
    "datatype INT8 out of range": ("POST", INFER, _doc(datatype="INT8", data=[300] * 64), JSON),
    "datatype FP16 overflow": ("POST", INFER, _doc(datatype="FP16", data=[1e10] * 64), JSON),
    "id an object": ("POST", INFER, _doc(id={"a": 1}), JSON),
    "parameters a list": ("POST", INFER, _doc(parameters=[1]), JSON),
    "binary_data_output a string": (
        "POST",
        INFER,
        _doc(parameters={"binary_data_output": "yes"}),
        JSON,
    ),
    "outputs an object": ("POST", INFER, _doc(outputs={"name": "output"}), JSON),
    "outputs unknown name": ("POST", INFER, _doc(outputs=[{"name": "logits"}]), JSON),
    "outputs without name": ("POST", INFER, _doc(outputs=[{}]), JSON),
    # the binary tensor data extension
    "header length not a number": ("POST", INFER, *_binary(256, _F32, header_length="abc")),
    "header length negative": ("POST", INFER, *_binary(256, _F32, header_length=-1)),
    "header length huge": ("POST", INFER, *_binary(256, _F32, header_length=10**30)),
    "header length a float": ("POST", INFER, *_binary(256, _F32, header_length="12.5")),
    "header length zero": ("POST", INFER, *_binary(256, _F32, header_length=0)),
    "binary size negative": ("POST", INFER, *_binary(-256, _F32)),
    "binary size a string": ("POST", INFER, *_binary("256", _F32)),
    "binary size a bool": ("POST", INFER, *_binary(True, _F32)),
    "binary size huge": ("POST", INFER, *_binary(2**62, _F32)),
    "binary size past the body": ("POST", INFER, *_binary(256, _F32[:100])),
    "binary bytes left over": ("POST", INFER, *_binary(256, _F32 + b"\0" * 8)),
    "binary NaN": ("POST", INFER, *_binary(256, np.full(64, np.nan, "<f4").tobytes())),
    # encodings and headers
    "Content-Encoding unknown": ("POST", INFER, _doc(), {**JSON, "Content-Encoding": "zstd9"}),
    "Content-Encoding deflate false": (
        "POST",
        INFER,
        _doc(),
        {**JSON, "Content-Encoding": "deflate"},
    ),
    "Content-Encoding br false": ("POST", INFER, _doc(), {**JSON, "Content-Encoding": "br"}),
    "Content-Type XML": ("POST", INFER, b"<inputs/>", {"Content-Type": "application/xml"}),
    # the repository extension
    "load without a token": ("POST", "/v2/repository/models/digits/load", b"", {}),
    "load with a wrong token": (
        "POST",
        "/v2/repository/models/digits/load",
        b"",
        {"Authorization": "Bearer nope"},
    ),
    "load with a non-ASCII token": (
        "POST",
        "/v2/repository/models/digits/load",
        b"",
        {"Authorization": "Bearer t\u00e9st"},
    ),
    "load bad JSON": ("POST", "/v2/repository/models/digits/load", b"{", AUTH),
    "load a list": ("POST", "/v2/repository/models/digits/load", b"[]", AUTH),
    "load version a word": (
        "POST",
        "/v2/repository/models/digits/load",
        b'{"parameters": {"version": "two"}}',
        AUTH,
    ),
    "load version superscript two": (
        "POST",
        "/v2/repository/models/digits/load",
        json.dumps({"parameters": {"version": "\u00b2"}}).encode(),
        AUTH,
    ),
    "load version Arabic-Indic three": (
        "POST",
        "/v2/repository/models/digits/load",
        json.dumps({"parameters": {"version": "\u0663"}}).encode(),
        AUTH,
    ),
    "load version unknown": (
        "POST",
        "/v2/repository/models/digits/load",
        b'{"parameters": {"version": 9}}',
        AUTH,
    ),
    "load version huge": (
        "POST",
        "/v2/repository/models/digits/load",
        b'{"parameters": {"version": "' + b"9" * 5000 + b'"}}',
        AUTH,
    ),
    "load unknown model": ("POST", "/v2/repository/models/nope/load", b"", AUTH),
    "load dot-dot model": ("POST", "/v2/repository/models/..%2F..%2Ftmp/load", b"", AUTH),
    "unload unknown model": ("POST", "/v2/repository/models/nope/unload", b"", AUTH),
}

RAW: dict[str, bytes] = {
    "not HTTP": b"GARBAGE\r\n\r\n",
    "NUL in the request line": b"GET /v2/health/ready\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad HTTP version": b"GET /v2 HTTP/9.9\r\nHost: x\r\n\r\n",
    "header without colon": b"GET /v2 HTTP/1.1\r\nHost x\r\n\r\n",
    "header too long": b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 20_000 + b"\r\n\r\n",
    "Content-Length negative": b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: -5\r\n\r\n",
    "Content-Length not a number": b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: ten\r\n\r\n",
    "two Content-Lengths": b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "bad chunk size": b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "non-UTF-8 header value": b"POST /v2/repository/models/digits/load HTTP/1.1\r\nHost: x\r\n"
    b"Authorization: Bearer \xff\xfe\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
}


def _request(
    server: ServerProcess, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    host, port = server.host_port.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for key, value in headers.items():
            conn.putheader(key, value.encode("utf-8"))
        if body or method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _raw(server: ServerProcess, data: bytes) -> bytes:
    host, port = server.host_port.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(data)  # no shutdown: aiohttp may close a half-closed socket unanswered
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _healthy(server: ServerProcess, models: TrainedModels) -> None:
    status, _ = _request(server, "GET", "/v2/health/ready", b"", {})
    assert status == 200
    x = models.x[:2]
    body = json.dumps(
        {"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32",
                     "data": x.reshape(-1).tolist()}]}
    ).encode()  # fmt: skip
    status, answer = _request(server, "POST", INFER, body, JSON)
    assert status == 200, answer
    out = np.asarray(json.loads(answer)["outputs"][0]["data"], dtype=np.float32).reshape(2, 10)
    np.testing.assert_allclose(out, models.expected[:2], atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_a_malformed_request_gets_a_4xx_and_the_server_stays_healthy(
    roma_server: ServerProcess, digits_models: TrainedModels, case: str
) -> None:
    method, path, body, headers = CASES[case]
    status, answer = _request(roma_server, method, path, body, headers)
    assert 400 <= status < 500, (status, answer[:300])
    if answer.startswith(b"{"):
        assert isinstance(json.loads(answer).get("error"), str)
    _healthy(roma_server, digits_models)


@pytest.mark.parametrize("case", RAW)
def test_raw_garbage_on_the_socket_gets_a_4xx_and_the_server_stays_healthy(
    roma_server: ServerProcess, digits_models: TrainedModels, case: str
) -> None:
    answer = _raw(roma_server, RAW[case])
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1."), answer[:200]
    status = int(status_line.split()[1])
    assert 400 <= status < 500, answer[:300]
    _healthy(roma_server, digits_models)
