"""The KServe v2 REST protocol against a real ``hyperfleet serve`` process: a stock client
(``tritonclient.http``) gets the model's own answers in JSON and binary, and every class of bad
request gets a 4xx with the protocol's ``{"error": ...}`` body without disturbing others."""

from __future__ import annotations

import gzip
import json
import urllib.request
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from .conftest import ServerProcess, TrainedModels, get_json


@pytest.fixture(scope="module")
def client(roma_server: ServerProcess) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=roma_server.host_port)


def _infer(
    client: triton.InferenceServerClient, x: np.ndarray, *, binary: bool, version: str = ""
) -> np.ndarray:
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = triton.InferRequestedOutput("output", binary_data=binary)
    result = client.infer("digits", [inp], outputs=[out], model_version=version)
    answer = result.as_numpy("output")
    assert answer is not None
    return np.asarray(answer)


def test_health_and_metadata_as_a_stock_client_reads_them(
    client: triton.InferenceServerClient,
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("digits")
    assert not client.is_model_ready("no-such-model")
    meta = client.get_model_metadata("digits")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]
    assert meta["versions"] == ["1"]
    server = client.get_server_metadata()
    assert "binary_tensor_data" in server["extensions"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_answers_are_the_models_own(
    client: triton.InferenceServerClient, digits_models: TrainedModels, binary: bool
) -> None:
    x, expected = digits_models.x[:40], digits_models.expected[:40]
    answers = np.concatenate([_infer(client, x[i : i + 8], binary=binary) for i in range(0, 40, 8)])
    np.testing.assert_allclose(answers, expected, rtol=1e-5, atol=1e-6)
    one = _infer(client, x[:1], binary=binary, version="1")
    np.testing.assert_allclose(one, expected[:1], rtol=1e-5, atol=1e-6)


def test_default_outputs_follow_binary_data_output(
    client: triton.InferenceServerClient, digits_models: TrainedModels
) -> None:
    """``outputs=None``: tritonclient asks for binary outputs with ``binary_data_output``."""
    inp = triton.InferInput("input", [2, 64], "FP32")
    inp.set_data_from_numpy(digits_models.x[:2])
    result = client.infer("digits", [inp])
    np.testing.assert_allclose(result.as_numpy("output"), digits_models.expected[:2], atol=1e-6)


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, object]:
    return get_json(url, data=body, headers={"Content-Type": "application/json", **(headers or {})})


def _input(x: np.ndarray) -> dict[str, Any]:
    return {
        "name": "input",
        "shape": list(x.shape),
        "datatype": "FP32",
        "data": x.reshape(-1).tolist(),
    }


def _request(x: np.ndarray, **extra: object) -> dict[str, object]:
    return {"inputs": [_input(x)], **extra}


def _bad_requests(x: np.ndarray) -> dict[str, tuple[str, bytes, dict[str, str], int]]:
    good = _request(x)
    raw = x.astype("<f4").tobytes()
    binary_head = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 64],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    deep = b"[" * 100_000 + b"]" * 100_000
    return {
        "malformed JSON": ("digits", b'{"inputs": [', {}, 400),
        "deeply nested JSON": ("digits", deep, {}, 400),
        "non-string id": ("digits", json.dumps({**good, "id": 7}).encode(), {}, 400),
        "unknown model": ("nope", json.dumps(good).encode(), {}, 404),
        "unknown version": ("digits/versions/9", json.dumps(good).encode(), {}, 404),
        "wrong shape": ("digits", json.dumps(_request(x.reshape(1, 8, 8))).encode(), {}, 400),
        "shape and data disagree": (
            "digits",
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [2, 64],
                            "datatype": "FP32",
                            "data": x.reshape(-1).tolist(),
                        }
                    ]
                }
            ).encode(),
            {},
            400,
        ),
        "wrong datatype": (
            "digits",
            json.dumps(
                {
                    "inputs": [
                        {
                            **_input(x),
                            "datatype": "INT32",
                            "data": [1] * 64,
                        }
                    ]
                }
            ).encode(),
            {},
            400,
        ),
        "unknown input name": (
            "digits",
            json.dumps({"inputs": [{**_input(x), "name": "pixels"}]}).encode(),
            {},
            400,
        ),
        "binary byte count short": (
            "digits",
            binary_head + raw[:-4],
            {"Inference-Header-Content-Length": str(len(binary_head))},
            400,
        ),
        "header length past the body": (
            "digits",
            binary_head + raw,
            {"Inference-Header-Content-Length": str(len(binary_head) + len(raw) + 10)},
            400,
        ),
        "false Content-Encoding": (
            "digits",
            json.dumps(good).encode(),
            {"Content-Encoding": "gzip"},
            400,
        ),
        "NaN in the data": ("digits", json.dumps(good).replace("0.0", "NaN", 1).encode(), {}, 400),
        "body over the limit": ("digits", b" " * (17 << 20), {}, 413),
    }


@pytest.mark.parametrize(
    "case",
    [
        "malformed JSON",
        "deeply nested JSON",
        "non-string id",
        "unknown model",
        "unknown version",
        "wrong shape",
        "shape and data disagree",
        "wrong datatype",
        "unknown input name",
        "binary byte count short",
        "header length past the body",
        "false Content-Encoding",
        "NaN in the data",
        "body over the limit",
    ],
)
def test_bad_requests_get_a_4xx_error_body_and_disturb_nothing(
    roma_server: ServerProcess,
    client: triton.InferenceServerClient,
    digits_models: TrainedModels,
    case: str,
) -> None:
    x = digits_models.x[:1]
    path, body, headers, status = _bad_requests(x)[case]
    got, doc = _post(f"{roma_server.url}/v2/models/{path}/infer", body, headers)
    assert got == status, doc
    assert isinstance(doc, dict), doc
    assert isinstance(doc.get("error"), str), doc
    assert doc["error"]
    np.testing.assert_allclose(
        _infer(client, x, binary=True), digits_models.expected[:1], atol=1e-6
    )


def test_a_true_content_encoding_is_decoded(
    roma_server: ServerProcess, digits_models: TrainedModels
) -> None:
    body = gzip.compress(json.dumps(_request(digits_models.x[:3])).encode())
    status, doc = _post(
        f"{roma_server.url}/v2/models/digits/infer", body, {"Content-Encoding": "gzip"}
    )
    assert status == 200, doc
    assert isinstance(doc, dict)
    data = np.asarray(doc["outputs"][0]["data"], dtype=np.float32).reshape(3, 10)
    np.testing.assert_allclose(data, digits_models.expected[:3], atol=1e-6)


def test_a_stock_client_sees_errors_as_exceptions(client: triton.InferenceServerClient) -> None:
    inp = triton.InferInput("input", [1, 63], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 63), np.float32))
    with pytest.raises(InferenceServerException, match="shape"):
        client.infer("digits", [inp])


def test_metrics_and_stats_count_what_happened(
    roma_server: ServerProcess, client: triton.InferenceServerClient, digits_models: TrainedModels
) -> None:
    for _ in range(5):
        _infer(client, digits_models.x[:2], binary=True)
    with urllib.request.urlopen(f"{roma_server.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    for name in (
        "roma_queue_seconds",
        "roma_compute_seconds",
        "roma_request_seconds",
        "roma_requests_total",
        "roma_batches_total",
        "roma_cores",
    ):
        lines = [line for line in text.splitlines() if line.startswith(name)]
        assert any('model="digits"' in line for line in lines), name
    status, stats = get_json(f"{roma_server.url}/v2/models/digits/stats")
    assert status == 200
    assert isinstance(stats, dict)
    assert stats["version"] == "1"
    assert stats["state"] == "READY"
    assert isinstance(stats["ok"], int)
    assert stats["ok"] >= 5
    assert stats["sla_ms"] == 50.0
