"""Bad input gets a clear error naming the problem, over gRPC and HTTP, and the
server keeps serving. Requests are crafted below the client libraries where
tritonclient would refuse to send them."""

from __future__ import annotations

import gzip
import http.client
import json
import struct
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from mlserve import examples
from mlserve.proto import grpc_service_pb2 as pb
from tests.conftest import ServerProcess, start_server, succeeded, wait_until

INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> grpc.Channel:
    with grpc.insecure_channel(
        server.grpc, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as ch:
        yield ch


def grpc_infer(
    channel: grpc.Channel, request: pb.ModelInferRequest | bytes
) -> pb.ModelInferResponse:
    call = channel.unary_unary(
        INFER,
        request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    return call(request, timeout=10)


def fp32_request(
    model: str = "mlp",
    shape: tuple[int, ...] = (1, 64),
    *,
    name: str = "x",
    datatype: str = "FP32",
    raw: bytes | None = None,
    version: str = "",
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    count = int(np.prod(shape))
    request.raw_input_contents.append(
        raw if raw is not None else np.zeros(count, np.float32).tobytes()
    )
    return request


def expect_grpc_error(
    channel: grpc.Channel,
    request: pb.ModelInferRequest | bytes,
    code: grpc.StatusCode,
    *fragments: str,
) -> str:
    with pytest.raises(grpc.RpcError) as info:
        grpc_infer(channel, request)
    error = info.value
    assert error.code() == code, error.details()
    for fragment in fragments:
        assert fragment in error.details(), error.details()
    # The server keeps serving.
    assert grpc_infer(channel, fp32_request()).outputs[0].name == "y"
    return str(error.details())


GRPC_CASES = {
    "unknown model": (fp32_request("nope"), grpc.StatusCode.NOT_FOUND, ["'nope'"]),
    "unknown version": (
        fp32_request(version="9"),
        grpc.StatusCode.NOT_FOUND,
        ["version '9'", "[1]"],
    ),
    "unknown input": (fp32_request(name="z"), grpc.StatusCode.INVALID_ARGUMENT, ["'z'", "['x']"]),
    "wrong datatype": (
        fp32_request(datatype="INT32"),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["INT32", "FP32"],
    ),
    "unknown datatype": (fp32_request(datatype="FP8"), grpc.StatusCode.INVALID_ARGUMENT, ["FP8"]),
    "wrong shape": (
        fp32_request(shape=(1, 63)),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["[1, 63]", "64"],
    ),
    "batch over max": (
        fp32_request(shape=(9, 64)),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["[9, 64]", "1..8"],
    ),
    "negative dim": (
        fp32_request(shape=(-1, 64), raw=b""),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["negative"],
    ),
    "raw length": (
        fp32_request(raw=b"\0" * 255),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["255 bytes", "256"],
    ),
    "broken BYTES prefix": (
        fp32_request(
            "identity_bytes",
            (1, 4),
            name="x",
            datatype="BYTES",
            raw=struct.pack("<I", 2) + b"ab" + struct.pack("<I", 100) + b"cd" + b"\0" * 4,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["BYTES", "element 1", "100 bytes"],
    ),
    "too few BYTES elements": (
        fp32_request("identity_bytes", (1, 4), datatype="BYTES", raw=struct.pack("<I", 1) + b"a"),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["BYTES", "claims 4 elements", "5 bytes hold at most 1"],
    ),
    # Found by fuzzing: the element array was allocated from the shape first (a 500).
    "BYTES shape past its bytes": (
        fp32_request(
            "identity_bytes", (1 << 40, 1), datatype="BYTES", raw=struct.pack("<I", 1) + b"a"
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["BYTES", "claims 1099511627776 elements"],
    ),
    # Found by fuzzing: a product past int64 overflowed the C codec (INTERNAL).
    "BYTES shape past int64": (
        fp32_request(
            "identity_bytes", (1 << 62, 4), datatype="BYTES", raw=struct.pack("<I", 1) + b"a"
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["'x'", "18446744073709551616 elements", "more than any tensor can hold"],
    ),
    "malformed protobuf": (
        b"\xff\xff\xff",
        grpc.StatusCode.INVALID_ARGUMENT,
        ["ModelInferRequest", "protobuf"],
    ),
    "raw BOOL byte not 0 or 1": (
        fp32_request("identity_bool", (1, 4), datatype="BOOL", raw=b"\x01\x00\x02\x01"),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["'x'", "BOOL element 2", "byte 2", "0 or 1"],
    ),
}


@pytest.mark.parametrize("case", list(GRPC_CASES))
def test_grpc_bad_input(channel: grpc.Channel, case: str) -> None:
    request, code, fragments = GRPC_CASES[case]
    expect_grpc_error(channel, request, code, *fragments)


def test_grpc_raw_count_mismatch(channel: grpc.Channel) -> None:
    request = fp32_request()
    request.raw_input_contents.append(b"")
    expect_grpc_error(
        channel,
        request,
        grpc.StatusCode.INVALID_ARGUMENT,
        "raw_input_contents has 2 entries",
        "1 inputs",
    )


def test_grpc_missing_input(channel: grpc.Channel) -> None:
    request = pb.ModelInferRequest(model_name="mlp")
    expect_grpc_error(channel, request, grpc.StatusCode.INVALID_ARGUMENT, "needs input", "x")


def test_grpc_typed_contents_count_checked(channel: grpc.Channel) -> None:
    request = pb.ModelInferRequest(model_name="identity_int64")
    tensor = request.inputs.add(name="x", datatype="INT64", shape=[1, 4])
    tensor.contents.int64_contents.extend([1, 2, 3])
    expect_grpc_error(
        channel,
        request,
        grpc.StatusCode.INVALID_ARGUMENT,
        "int64_contents holds 3 elements",
        "needs 4",
    )
    tensor.contents.int64_contents.append(4)
    response = grpc_infer(channel, request)
    assert np.frombuffer(response.raw_output_contents[0], "<i8").tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("datatype", "field", "values", "bounds"),
    [
        ("INT8", "int_contents", [1, 300, 0, 0], "-128 to 127"),
        ("INT16", "int_contents", [-40000, 0, 0, 0], "-32768 to 32767"),
        ("UINT8", "uint_contents", [0, 0, 256, 0], "0 to 255"),
        ("UINT16", "uint_contents", [1 << 31, 0, 0, 0], "0 to 65535"),
    ],
)
def test_grpc_typed_contents_out_of_range_are_refused(
    channel: grpc.Channel, datatype: str, field: str, values: list[int], bounds: str
) -> None:
    """INT8/16 travel in int_contents (int32), UINT8/16 in uint_contents: a
    value the datatype cannot hold is refused, not wrapped around."""
    request = pb.ModelInferRequest(model_name=f"identity_{datatype.lower()}")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=[1, 4])
    getattr(tensor.contents, field).extend(values)
    expect_grpc_error(channel, request, grpc.StatusCode.INVALID_ARGUMENT, "'x'", datatype, bounds)


def test_grpc_message_over_limit(channel: grpc.Channel) -> None:
    # The server runs with --grpc-max-input-size 1048576.
    rows = 8
    big = fp32_request(shape=(rows, 64), raw=b"\0" * (rows * 64 * 4))
    big.raw_input_contents.append(b"\0" * (1 << 20))
    expect_grpc_error(
        channel, big, grpc.StatusCode.INVALID_ARGUMENT, "over the server's limit", "1048576"
    )


def test_tritonclient_sees_error_message(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc)
    tensor = grpcclient.InferInput("x", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(grpcclient.InferenceServerException) as info:
        client.infer("mlp", [tensor])
    assert "shape [1, 3]" in info.value.message()
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"


# -- HTTP -------------------------------------------------------------------------


def http_post(
    server: ServerProcess, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict]:
    host, port = server.http.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("POST", path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else {}
    finally:
        connection.close()


def json_body(model_input: dict) -> bytes:
    return json.dumps({"inputs": [model_input]}).encode()


GOOD = {"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}


def expect_http_error(
    server: ServerProcess,
    path: str,
    body: bytes,
    status: int,
    *fragments: str,
    headers: dict[str, str] | None = None,
) -> str:
    code, doc = http_post(server, path, body, headers)
    assert code == status, doc
    assert set(doc) == {"error"}, doc
    for fragment in fragments:
        assert fragment in doc["error"], doc["error"]
    ok, result = http_post(server, "/v2/models/mlp/infer", json_body(GOOD))
    assert ok == 200 and result["outputs"][0]["shape"] == [1, 10]
    return str(doc["error"])


HTTP_CASES = {
    "unknown model": ("/v2/models/nope/infer", json_body(GOOD), 404, ["'nope'"]),
    "unknown version": ("/v2/models/mlp/versions/3/infer", json_body(GOOD), 404, ["'3'"]),
    "unknown input": ("/v2/models/mlp/infer", json_body({**GOOD, "name": "q"}), 400, ["'q'"]),
    "wrong datatype": (
        "/v2/models/mlp/infer",
        json_body({**GOOD, "datatype": "FP64"}),
        400,
        ["FP64", "FP32"],
    ),
    "wrong shape": (
        "/v2/models/mlp/infer",
        json_body({**GOOD, "shape": [2, 32]}),
        400,
        ["[2, 32]"],
    ),
    "data count": (
        "/v2/models/mlp/infer",
        json_body({**GOOD, "data": [1.0] * 3}),
        400,
        ["3 elements", "64"],
    ),
    "data not numbers": (
        "/v2/models/mlp/infer",
        json_body({**GOOD, "data": ["a"] * 64}),
        400,
        ["FP32"],
    ),
    "malformed JSON": ("/v2/models/mlp/infer", b'{"inputs": [', 400, ["not valid JSON"]),
    "not an object": ("/v2/models/mlp/infer", b"[1, 2]", 400, ["JSON object"]),
    "no inputs": ("/v2/models/mlp/infer", b"{}", 400, ["'inputs'"]),
    "shape not ints": (
        "/v2/models/mlp/infer",
        json_body({**GOOD, "shape": ["1", 64]}),
        400,
        ["shape must be a list of integers"],
    ),
    "unknown route": ("/v2/nothing", b"", 404, ["/v2/nothing"]),
    # Found by fuzzing: cast to FP32 it became inf, answered with `Infinity` (not JSON).
    "FP32 past its range": (
        "/v2/models/mlp/infer",
        json_body({**GOOD, "data": [1e39] + [0.0] * 63}),
        400,
        ["'x'", "1e+39", "past FP32's range"],
    ),
}


def _json_input(datatype: str, data: list[object]) -> bytes:
    return json_body({"name": "x", "datatype": datatype, "shape": [1, 4], "data": data})


# Values a datatype cannot hold, or of the wrong kind: refused, not wrapped,
# truncated or parsed from a string.
for _datatype, _data, _fragment in (
    ("INT8", [300, 0, 0, 0], "-128 to 127"),
    ("UINT8", [-1, 0, 0, 0], "0 to 255"),
    ("INT32", [2**31, 0, 0, 0], "-2147483648 to 2147483647"),
    ("INT64", [2**63, 0, 0, 0], "to 9223372036854775807"),
    ("UINT64", [2**64, 0, 0, 0], "0 to 18446744073709551615"),
    ("INT32", [1.7, 0, 0, 0], "must be integers"),
    ("INT8", ["7", 0, 0, 0], "must be integers"),
    ("BOOL", [1, 0, 1, 0], "true/false"),
):
    HTTP_CASES[f"{_datatype} {_data[0]!r}"] = (
        f"/v2/models/identity_{_datatype.lower()}/infer",
        _json_input(_datatype, _data),
        400,
        ["'x'", _fragment],
    )


@pytest.mark.parametrize("case", list(HTTP_CASES))
def test_http_bad_input(server: ServerProcess, case: str) -> None:
    path, body, status, fragments = HTTP_CASES[case]
    expect_http_error(server, path, body, status, *fragments)


def binary_request(inputs: list[tuple[dict, bytes]]) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": [meta for meta, _ in inputs]}).encode()
    body = header + b"".join(raw for _, raw in inputs)
    return body, {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


def test_http_binary_size_mismatch(server: ServerProcess) -> None:
    meta = {
        "name": "x",
        "datatype": "FP32",
        "shape": [1, 64],
        "parameters": {"binary_data_size": 252},
    }
    body, headers = binary_request([(meta, b"\0" * 252)])
    expect_http_error(
        server, "/v2/models/mlp/infer", body, 400, "252 bytes", "256", headers=headers
    )


def test_http_binary_runs_past_body(server: ServerProcess) -> None:
    meta = {
        "name": "x",
        "datatype": "FP32",
        "shape": [1, 64],
        "parameters": {"binary_data_size": 256},
    }
    body, headers = binary_request([(meta, b"\0" * 100)])
    expect_http_error(server, "/v2/models/mlp/infer", body, 400, "runs past", headers=headers)


def test_http_header_length_past_body(server: ServerProcess) -> None:
    expect_http_error(
        server,
        "/v2/models/mlp/infer",
        b"{}",
        400,
        "Inference-Header-Content-Length",
        headers={"Inference-Header-Content-Length": "999"},
    )


def test_http_bytes_broken_prefix(server: ServerProcess) -> None:
    raw = struct.pack("<I", 1) + b"a" + struct.pack("<I", 50) + b"\0" * 8
    meta = {
        "name": "x",
        "datatype": "BYTES",
        "shape": [1, 4],
        "parameters": {"binary_data_size": len(raw)},
    }
    body, headers = binary_request([(meta, raw)])
    expect_http_error(
        server, "/v2/models/identity_bytes/infer", body, 400, "BYTES", "element 1", headers=headers
    )


def test_http_bytes_shape_past_its_bytes(server: ServerProcess) -> None:
    """Found by fuzzing: a BYTES shape claiming 2**40 elements allocated that
    many before reading the bytes (a 500); now refused from the shape."""
    raw = struct.pack("<I", 6) + b"hello0"
    meta = {
        "name": "x",
        "datatype": "BYTES",
        "shape": [1 << 40, 1],
        "parameters": {"binary_data_size": len(raw)},
    }
    body, headers = binary_request([(meta, raw)])
    expect_http_error(
        server,
        "/v2/models/identity_bytes/infer",
        body,
        400,
        "BYTES",
        "claims 1099511627776 elements",
        headers=headers,
    )


def test_http_body_over_limit(server: ServerProcess) -> None:
    body = json_body({**GOOD, "data": [0.0] * 300_000})  # about 1.5 MB > 1 MiB limit
    expect_http_error(
        server, "/v2/models/mlp/infer", body, 400, "over the server's limit", "1048576"
    )


def test_http_gzip_bomb_is_bounded(server: ServerProcess) -> None:
    bomb = gzip.compress(b" " * (4 << 20))  # 4 MiB of spaces inflates past the limit
    expect_http_error(
        server,
        "/v2/models/mlp/infer",
        bomb,
        400,
        "decompressed",
        headers={"Content-Encoding": "gzip"},
    )


def test_http_bad_content_encoding(server: ServerProcess) -> None:
    expect_http_error(
        server, "/v2/models/mlp/infer", b"xx", 400, "br", headers={"Content-Encoding": "br"}
    )


def test_http_malformed_request_line(server: ServerProcess) -> None:
    import socket

    host, port = server.http.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GARBAGE\x00\x01 / HTTP/1.1\r\n\r\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400")
    assert b"malformed HTTP request" in reply
    ok, _ = http_post(server, "/v2/models/mlp/infer", json_body(GOOD))
    assert ok == 200


def test_http_body_over_limit_is_refused_before_it_is_sent(server: ServerProcess) -> None:
    """`Expect: 100-continue` (curl sends it with bodies over 1 MiB): a body
    declared over the limit is refused at once, and never has to be sent."""
    import socket

    host, port = server.http.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2000000\r\n\r\n"
        )
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), reply
    assert b"Connection: close" in head
    error = json.loads(body)["error"]
    assert "over the server's limit" in error and "1048576" in error


def test_http_last_answer_survives_bytes_the_client_sends_after_it(tmp_path: Path) -> None:
    """A `Connection: close` answer (here 256 KiB, to a client that reads
    slowly) is still in the server's buffers when the client sends more bytes.
    Closing with those unread would reset the connection and drop the answer's
    unsent tail: the server half-closes and reads until the client closes."""
    import socket

    rows = 64
    examples.write_model(
        tmp_path, "wide", examples.identity_model(dims=(1024,)), config="max_batch_size: 64\n"
    )
    server = start_server(tmp_path)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [rows, 1024],
                    "parameters": {"binary_data_size": rows * 1024 * 4},
                }
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    sent = np.arange(rows * 1024, dtype=np.float32)
    body = header + sent.tobytes()
    try:
        host, port = server.http.rsplit(":", 1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect((host, int(port)))
        with sock:
            sock.sendall(
                b"POST /v2/models/wide/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Inference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n"
                % (len(header), len(body))
                + body
            )
            wait_until(lambda: succeeded(server, "wide") == 1, "the request answered")
            # The answer waits in the server's buffers: the client reads slowly.
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.2)
            reply = b""
            while chunk := sock.recv(1 << 16):
                reply += chunk
    finally:
        server.terminate()
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), reply[:300]
    fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
    assert len(payload) == int(fields[b"Content-Length"])
    outputs = np.frombuffer(payload[int(fields[b"Inference-Header-Content-Length"]) :], np.float32)
    assert np.array_equal(outputs, sent)


@pytest.mark.parametrize("name", ["..", "a/../b", "/etc", "%2e%2e", ".hidden"])
def test_model_names_cannot_leave_the_repository(server: ServerProcess, name: str) -> None:
    code, doc = http_post(server, f"/v2/models/{name}/infer", json_body(GOOD))
    assert code in (400, 404), doc
    assert "error" in doc


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v2/models/mlp/infer", "POST"),
        ("DELETE", "/v2/models/mlp", "GET"),
        ("POST", "/v2/health/ready", "GET"),
        ("POST", "/v2/health/live", "GET"),
    ],
)
def test_http_wrong_method_is_405_with_allow(
    server: ServerProcess, method: str, path: str, allowed: str
) -> None:
    host, port = server.http.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request(method, path, body=b"" if method != "GET" else None)
    response = connection.getresponse()
    body = json.loads(response.read())
    assert response.status == 405
    assert response.getheader("Allow") == allowed
    assert f"method {method} not allowed here; use {allowed}" == body["error"]
    connection.close()
