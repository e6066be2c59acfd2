"""Before a server is timed, its answer for the benchmark input is checked
against raw onnxruntime with tritonclient, over gRPC and HTTP: a server that
answers wrong is reported, not timed."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from benchmarks.load.workload import sample


def check_answer(
    protocol: str, port: int, model: str, expected: np.ndarray, *, binary: bool = True
) -> str:
    """'' when the server answers `expected` (within 1e-4), else what went wrong."""
    x = sample(model)
    try:
        if protocol == "grpc":
            client = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
            grpc_input = triton_grpc.InferInput("x", list(x.shape), "FP32")
            grpc_input.set_data_from_numpy(x)
            got = client.infer(model, [grpc_input]).as_numpy("y")
            client.close()
        else:
            http_client = triton_http.InferenceServerClient(f"127.0.0.1:{port}")
            http_input = triton_http.InferInput("x", list(x.shape), "FP32")
            http_input.set_data_from_numpy(x, binary_data=binary)
            output = triton_http.InferRequestedOutput("y", binary_data=binary)
            # KServe reads a body without Content-Type as binary-extension data.
            headers = None if binary else {"Content-Type": "application/json"}
            answer = http_client.infer(model, [http_input], outputs=[output], headers=headers)
            got = answer.as_numpy("y")
            http_client.close()
    except Exception as exc:  # any client or server failure is the finding
        return f"{protocol}: {type(exc).__name__}: {str(exc)[:300]}"
    if got is None:
        return f"{protocol}: no output 'y' in the answer"
    if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-4):
        return f"{protocol}: answer differs from onnxruntime (shape {got.shape})"
    return ""
