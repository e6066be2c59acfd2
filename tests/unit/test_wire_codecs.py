"""Wire format <-> transport-neutral types, and the status tables."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from mlserve.errors import ErrorKind, InvalidRequest, Overloaded, Unsupported
from mlserve.proto import grpc_service_pb2 as pb
from mlserve.runtime import grpc_codec, http_codec
from mlserve.runtime.grpc_server import status_code
from mlserve.runtime.grpc_service import STATUS_BY_KIND as GRPC_STATUS
from mlserve.runtime.http_api import STATUS_BY_KIND as HTTP_STATUS
from mlserve.runtime.http_api import error_response
from mlserve.runtime.inference_types import InferOutput, InferResponse


def test_every_error_kind_has_one_status_per_transport() -> None:
    assert set(GRPC_STATUS) == set(ErrorKind) == set(HTTP_STATUS)
    assert status_code(GRPC_STATUS[ErrorKind.INVALID_ARGUMENT]) is grpc.StatusCode.INVALID_ARGUMENT
    for kind, number in GRPC_STATUS.items():  # the numbers are grpcio's codes, by name
        assert status_code(number).name == kind.name
    assert HTTP_STATUS[ErrorKind.NOT_FOUND] == 404
    assert HTTP_STATUS[ErrorKind.UNAVAILABLE] == 503
    assert HTTP_STATUS[ErrorKind.RESOURCE_EXHAUSTED] == 429


def test_http_error_body_and_retry_after() -> None:
    response = error_response(Overloaded("queue full", retry_after_s=2.4))
    assert response.status == 429
    assert json.loads(response.body) == {"error": "queue full"}
    assert ("Retry-After", "3") in response.headers  # rounded up


def test_grpc_decode_raw_and_typed() -> None:
    message = pb.ModelInferRequest(model_name="m", model_version="2", id="r")
    message.inputs.add(name="a", datatype="FP32", shape=[2, 2])
    message.inputs.add(name="b", datatype="BYTES", shape=[1])
    message.raw_input_contents.extend([np.arange(4, dtype="<f4").tobytes(), b"\x02\x00\x00\x00hi"])
    message.parameters["priority"].int64_param = 3
    request = grpc_codec.decode_infer_request(message, arrival_ns=5)
    assert request.parameters == {"priority": 3}
    assert request.inputs[0].data.tolist() == [[0, 1], [2, 3]]
    assert request.inputs[1].data.tolist() == ["hi"]

    typed = pb.ModelInferRequest(model_name="m")
    tensor = typed.inputs.add(name="a", datatype="INT16", shape=[3])
    tensor.contents.int_contents.extend([1, -2, 3])
    decoded = grpc_codec.decode_infer_request(typed, 0).inputs[0].data
    assert decoded.dtype == np.int16 and decoded.tolist() == [1, -2, 3]


def test_grpc_refuses_fp16_typed_contents_and_shared_memory() -> None:
    typed = pb.ModelInferRequest(model_name="m")
    typed.inputs.add(name="a", datatype="FP16", shape=[1])
    with pytest.raises(InvalidRequest, match="raw_input_contents"):
        grpc_codec.decode_infer_request(typed, 0)
    shm = pb.ModelInferRequest(model_name="m")
    shm.inputs.add(name="a", datatype="FP32", shape=[1]).parameters[
        "shared_memory_region"
    ].string_param = "r"
    with pytest.raises(Unsupported, match="shared-memory"):
        grpc_codec.decode_infer_request(shm, 0)


def test_grpc_encode_is_raw_only() -> None:
    response = InferResponse(
        "m",
        "1",
        "id",
        [
            InferOutput("y", "FP32", (2,), np.array([1.5, 2.5], np.float32)),
            InferOutput("s", "BYTES", (1,), np.array(["ok"], dtype=object)),
        ],
        {},
        {},
    )
    message = grpc_codec.encode_infer_response(response)
    assert [o.name for o in message.outputs] == ["y", "s"]
    assert not any(o.HasField("contents") for o in message.outputs)
    assert np.frombuffer(message.raw_output_contents[0], "<f4").tolist() == [1.5, 2.5]
    assert message.raw_output_contents[1] == b"\x02\x00\x00\x00ok"


def test_http_decode_mixed_json_and_binary() -> None:
    header = json.dumps(
        {
            "id": "7",
            "inputs": [
                {"name": "a", "datatype": "INT32", "shape": [2], "data": [[1], [2]]},
                {
                    "name": "b",
                    "datatype": "FP64",
                    "shape": [1, 2],
                    "parameters": {"binary_data_size": 16},
                },
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    body = header + np.array([0.5, 1.5]).tobytes()
    request = http_codec.decode_infer_request("m", "", body, len(header), 0)
    assert request.id == "7"
    assert request.inputs[0].data.tolist() == [1, 2]
    assert request.inputs[1].data.tolist() == [[0.5, 1.5]]
    assert request.outputs[0].parameters == {"binary_data": True}


def test_http_encode_binary_and_json_outputs() -> None:
    response = InferResponse(
        "m",
        "1",
        "",
        [
            InferOutput("a", "FP32", (2,), np.array([1.0, 2.0], np.float32)),
            InferOutput("b", "INT64", (1, 2), np.array([[3, 4]], np.int64)),
        ],
        output_parameters={"b": {"binary_data": False}},
        parameters={},
    )
    body, json_length = http_codec.encode_infer_response(response, {"binary_data_output": True})
    assert json_length is not None
    doc = json.loads(body[:json_length])
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert doc["outputs"][1]["data"] == [3, 4]
    assert np.frombuffer(body[json_length:], "<f4").tolist() == [1.0, 2.0]
    plain, none = http_codec.encode_infer_response(response, {})
    assert none is None and json.loads(plain)["outputs"][0]["data"] == [1.0, 2.0]


def _binary_request(shape: list[int], size: int) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": shape,
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    ).encode()


def test_http_repeated_header_decodes_each_body_on_its_own() -> None:
    """The parsed-header cache must never carry one request's data or size
    errors over to the next request that sends the same header."""
    header = _binary_request([1, 2], 8)
    first = http_codec.decode_infer_request(
        "m", "", header + np.float32([1, 2]).tobytes(), len(header), 0
    )
    second = http_codec.decode_infer_request(
        "m", "", header + np.float32([3, 4]).tobytes(), len(header), 0
    )
    assert first.inputs[0].data.tolist() == [[1, 2]]
    assert second.inputs[0].data.tolist() == [[3, 4]]
    with pytest.raises(InvalidRequest, match="runs past the 4 bytes"):
        http_codec.decode_infer_request("m", "", header + bytes(4), len(header), 0)
    with pytest.raises(InvalidRequest, match="4 bytes of binary data that no input"):
        http_codec.decode_infer_request("m", "", header + bytes(12), len(header), 0)


def test_http_header_cache_is_bounded() -> None:
    cache = http_codec._HeaderCache(max_entries=4)
    headers = [_binary_request([1, n], 4 * n) for n in range(1, 11)]
    for header in headers:
        assert cache.get(header).inputs[0].shape[1] == json.loads(header)["inputs"][0]["shape"][1]
    assert len(cache.parsed.entries) == 4
    assert list(cache.parsed.entries) == headers[-4:]


def test_http_encode_repeated_binary_responses() -> None:
    """Cached response headers follow each response's shape, and an id is
    always echoed."""

    def encode(rows: int, request_id: str = "") -> dict:
        data = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
        output = InferOutput("y", "FP32", data.shape, data)
        response = InferResponse("m", "1", request_id, [output], {}, {})
        body, json_length = http_codec.encode_infer_response(response, {"binary_data_output": True})
        assert json_length is not None
        assert np.frombuffer(body[json_length:], "<f4").tolist() == data.reshape(-1).tolist()
        return json.loads(body[:json_length])

    for rows in (1, 3, 1, 3):
        doc = encode(rows)
        assert doc["outputs"][0]["shape"] == [rows, 2]
        assert doc["outputs"][0]["parameters"] == {"binary_data_size": rows * 8}
        assert "id" not in doc
    assert encode(3, "req-9")["id"] == "req-9"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"inputs": [{"name": "a", "datatype": "BOOL", "shape": [1], "data": [1]}]},
            "BOOL data must hold true/false",
        ),
        (
            {"inputs": [{"name": "a", "datatype": "INT8", "shape": [2], "data": [[1, 2], [3]]}]},
            "not a regular array",
        ),
        (
            {"inputs": [{"name": "a", "datatype": "BYTES", "shape": [1], "data": [5]}]},
            "BYTES element 0 must be a JSON string",
        ),
        (
            {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1]}]},
            "neither 'data' nor parameters.binary_data_size",
        ),
        (
            {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}], "id": 4},
            "'id' must be a string",
        ),
    ],
)
def test_http_decode_errors(doc: dict, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        http_codec.decode_infer_request("m", "", json.dumps(doc).encode(), None, 0)
