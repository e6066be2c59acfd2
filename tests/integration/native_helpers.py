"""What the native transport's test modules share: the server they start,
its port, a well-formed request, the check that it still serves, and a
stream's answers read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from mlserve.proto import grpc_service_pb2 as pb
from tests.conftest import ServerProcess, start_server

LIMIT = 1 << 20  # the servers' --grpc-max-input-size
FLOW_CONTROL_ERROR = 0x3  # RFC 9113, section 7


def start_native(model_repository: Path) -> ServerProcess:
    server = start_server(
        model_repository, "--grpc-impl", "native", "--grpc-max-input-size", str(LIMIT)
    )
    assert server.grpc_impl == "native"
    return server


def port(server: ServerProcess) -> int:
    return int(server.grpc.rsplit(":", 1)[1])


def mlp_request(rows: int = 1) -> bytes:
    request = pb.ModelInferRequest(model_name="mlp")
    request.inputs.add(name="x", datatype="FP32", shape=[rows, 64])
    request.raw_input_contents.append(np.ones((rows, 64), np.float32).tobytes())
    return request.SerializeToString()


def assert_serving(server: ServerProcess) -> None:
    """A well-formed tritonclient request still gets its answer."""
    assert server.process.poll() is None, server.output()
    client = grpcclient.InferenceServerClient(server.grpc)
    tensor = grpcclient.InferInput("x", [2, 64], "FP32")
    tensor.set_data_from_numpy(np.ones((2, 64), np.float32))
    result = client.infer("mlp", [tensor], client_timeout=10)
    assert result.as_numpy("y").shape == (2, 10)
    client.close()


def stream_answers(data: bytes) -> list[pb.ModelInferResponse]:
    """A stream's length-prefixed ModelStreamInferResponse messages, in order."""
    answers = []
    while data:
        size = int.from_bytes(data[1:5], "big")
        answer = pb.ModelStreamInferResponse.FromString(data[5 : 5 + size])
        assert not answer.error_message, answer.error_message
        answers.append(answer.infer_response)
        data = data[5 + size :]
    return answers
