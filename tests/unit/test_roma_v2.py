"""The inference protocol's bodies, byte by byte: the binary tensor data extension both ways,
JSON tensors, and the errors of malformed bodies (spec: kserve/open-inference-protocol, REST;
Triton's binary data extension)."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.roma.errors import InferenceRequestError
from cloud.roma.v2 import (
    HEADER_LENGTH,
    Tensor,
    decode_infer_response,
    encode_infer_request,
    encode_infer_response,
    parse_infer_request,
)


def _tensor(x: np.ndarray, name: str = "input", datatype: str = "FP32") -> Tensor:
    return Tensor(name=name, datatype=datatype, shape=tuple(x.shape), data=x)


def test_a_binary_request_is_json_then_raw_little_endian_bytes() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    body, headers = encode_infer_request([_tensor(x)], binary=True, request_id="r1")
    n = int(headers[HEADER_LENGTH])
    head = json.loads(body[:n])
    assert head["id"] == "r1"
    assert head["inputs"] == [{"name": "input", "shape": [2, 3], "datatype": "FP32",
                               "parameters": {"binary_data_size": 24}}]  # fmt: skip
    assert head["parameters"] == {"binary_data_output": True}
    assert body[n:] == x.astype("<f4").tobytes()
    req = parse_infer_request(body, header_length=n)
    assert req.id == "r1"
    assert req.binary_output
    np.testing.assert_array_equal(req.inputs[0].data, x)


def test_json_tensors_may_be_flat_or_nested() -> None:
    for data in ([1, 2, 3, 4], [[1, 2], [3, 4]]):
        body = json.dumps({"inputs": [{"name": "a", "shape": [2, 2], "datatype": "INT32",
                                       "data": data}]}).encode()  # fmt: skip
        (tensor,) = parse_infer_request(body).inputs
        assert tensor.data.dtype == np.int32
        np.testing.assert_array_equal(tensor.data, [[1, 2], [3, 4]])


def test_a_response_round_trips_binary_and_json() -> None:
    out = np.linspace(0, 1, 20, dtype=np.float32).reshape(2, 10)
    for binary in (True, False):
        body, headers = encode_infer_response(model_name="m", model_version="3", request_id="q",
                                              outputs=[_tensor(out, "output")],
                                              binary={"output": binary})  # fmt: skip
        length = headers.get(HEADER_LENGTH)
        assert (length is not None) == binary
        doc, arrays = decode_infer_response(body, header_length=int(length) if length else None)
        assert doc["model_version"] == "3"
        assert doc["id"] == "q"
        np.testing.assert_array_equal(arrays["output"], out)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"[]", "object"),
        (b'{"inputs": []}', "non-empty"),
        (b'{"id": 3, "inputs": [{}]}', "id"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "STRING", "data": [1]}]}', "datatype"),
        (b'{"inputs": [{"name": "a", "shape": [-1], "datatype": "FP32", "data": [1]}]}', "shape"),
        (b'{"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "data": [1]}]}', "elements"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "INT8", "data": [300]}]}', "range"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "INT8", "data": [0.5]}]}', "fractions"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": ["1"]}]}', "numbers"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [NaN]}]}', "JSON"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32"}]}', "neither"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}],'
         b' "outputs": [{"name": "o", "parameters": {"binary_data": "yes"}}]}', "binary_data"),
    ],
)  # fmt: skip
def test_malformed_bodies_name_what_is_wrong(body: bytes, match: str) -> None:
    with pytest.raises(InferenceRequestError, match=match):
        parse_infer_request(body)


def test_binary_sizes_must_add_up_to_the_bytes_sent() -> None:
    x = np.zeros((1, 4), np.float32)
    body, headers = encode_infer_request([_tensor(x)], binary=True)
    n = int(headers[HEADER_LENGTH])
    with pytest.raises(InferenceRequestError, match="past the end"):
        parse_infer_request(body[:-1], header_length=n)
    with pytest.raises(InferenceRequestError, match="after the last"):
        parse_infer_request(body + b"\0", header_length=n)
    with pytest.raises(InferenceRequestError, match=HEADER_LENGTH):
        parse_infer_request(body, header_length=len(body) + 1)


def test_json_that_nests_too_deeply_or_has_nan_is_refused_by_name() -> None:
    with pytest.raises(InferenceRequestError, match="nested too deeply"):
        parse_infer_request(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(InferenceRequestError, match="not valid JSON"):
        parse_infer_request(b'{"inputs": [{"name": "x", "data": [NaN]}]}')


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_a_shape_with_a_zero_and_a_huge_dimension_is_refused_not_a_500(binary: bool) -> None:
    """Issue 17: ``[0, 2**62]`` holds no element, so the element count passed, and reshaping to it
    raised a bare ValueError: HTTP 500. A zero dimension now counts as one."""
    tensor: dict[str, object] = {"name": "x", "shape": [0, 2**62], "datatype": "FP32"}
    if binary:
        tensor["parameters"] = {"binary_data_size": 0}
    else:
        tensor["data"] = []
    body = json.dumps({"inputs": [tensor]}).encode()
    with pytest.raises(InferenceRequestError, match="elements"):
        parse_infer_request(body, header_length=len(body) if binary else None)


_KEYS = ["name", "shape", "datatype", "data", "parameters", "binary_data_size", "binary_data"]
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda c: (
        st.lists(c, max_size=5)
        | st.dictionaries(st.sampled_from([*_KEYS, "inputs", "outputs", "id"]), c, max_size=5)
    ),
    max_leaves=20,
)
_tensors = st.fixed_dictionaries(
    {
        "name": st.text(min_size=1, max_size=3),
        "datatype": st.sampled_from(["FP32", "FP16", "INT8", "UINT64", "BOOL", "BF16"]),
        "shape": st.lists(st.integers(0, 2**63) | st.integers(0, 5), max_size=4),
    },
    optional={
        "data": _json_values
        | st.lists(st.integers(-(2**65), 2**65) | st.floats(allow_nan=False) | st.booleans()),
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_size": st.integers(-2, 2**63)}
        ),
    },
)
_documents = st.fixed_dictionaries(
    {"inputs": st.lists(_tensors, max_size=3)},
    optional={"outputs": _json_values, "parameters": _json_values, "id": _json_values},
)


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(doc=_documents | _json_values, tail=st.binary(max_size=64), binary=st.booleans())
def test_generated_requests_parse_or_raise_inference_request_error(
    doc: object, tail: bytes, binary: bool
) -> None:
    """Issue 17: whatever the JSON, a request or an InferenceRequestError (HTTP 4xx), never
    another exception (HTTP 500); run longer, this found the ``[0, 2**62]`` shape."""
    head = json.dumps(doc).encode()
    body = head + tail if binary else head
    with contextlib.suppress(InferenceRequestError):  # anything else escapes: a failure
        parse_infer_request(body, header_length=len(head) if binary else None)
