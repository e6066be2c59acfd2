"""Micro-benchmarks of the wire codecs on the request path: gRPC
ModelInferRequest/Response <-> transport-neutral types, and V2 HTTP bodies
(JSON tensors, and the binary extension with its parsed-header cache warm and
cold), for the MLP's one-row request.

    .venv/bin/python -m benchmarks.micro.codecs [--repeat 7]

Prints microseconds per call (best of --repeat timeit runs). Pin it
(taskset -c 1) on a shared machine and read the figures against each other."""

from __future__ import annotations

import argparse
import json
import timeit
from collections.abc import Callable

import numpy as np

from mlserve.ext import infer_codec
from mlserve.proto import grpc_service_pb2 as pb
from mlserve.runtime import grpc_codec, http_codec
from mlserve.runtime.inference_types import InferOutput, InferResponse


def cases() -> dict[str, Callable[[], object]]:
    x = np.ones((1, 64), np.float32)
    y = np.ones((1, 10), np.float32)
    message = pb.ModelInferRequest(model_name="mlp")
    message.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    message.raw_input_contents.append(x.tobytes())
    wire = message.SerializeToString()
    response = InferResponse("mlp", "1", "", [InferOutput("y", "FP32", (1, 10), y)], {}, {})
    json_body = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1, 64], "data": x.ravel().tolist()}
            ]
        }
    ).encode()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1, 64],
                    "parameters": {"binary_data_size": 256},
                }
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    binary_body = header + x.tobytes()
    counter = iter(range(10**9))

    def cold_binary() -> object:
        # A header never seen before (the id changes), so it is parsed each time.
        fresh = header[:-1] + b',"id":"%d"}' % next(counter)
        return http_codec.decode_infer_request("mlp", "", fresh + x.tobytes(), len(fresh), 0)

    def grpc_decode() -> object:
        return grpc_codec.decode_infer_request(pb.ModelInferRequest.FromString(wire), 0)

    return {
        "gRPC decode (parse + tensors)": grpc_decode,
        f"gRPC decode, fast path ({infer_codec.IMPLEMENTATION})": lambda: (
            grpc_codec.simple_infer_request(infer_codec.decode_simple_infer(wire), 0)  # type: ignore[arg-type]
        ),
        "gRPC encode (+ serialize)": lambda: grpc_codec.encode_infer_response(
            response
        ).SerializeToString(),
        "HTTP JSON decode": lambda: http_codec.decode_infer_request("mlp", "", json_body, None, 0),
        "HTTP JSON encode": lambda: http_codec.encode_infer_response(response, {}),
        "HTTP binary decode, header cached": lambda: http_codec.decode_infer_request(
            "mlp", "", binary_body, len(header), 0
        ),
        "HTTP binary decode, header new": cold_binary,
        "HTTP binary encode": lambda: http_codec.encode_infer_response(
            response, {"binary_data_output": True}
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print("| codec (MLP, 1 row) | us per call |")
    print("| --- | --- |")
    for name, fn in cases().items():
        timer = timeit.Timer(fn)
        number, _ = timer.autorange()
        best = min(timer.repeat(repeat=args.repeat, number=number)) / number * 1e6
        print(f"| {name} | {best:.2f} |")


if __name__ == "__main__":
    main()
