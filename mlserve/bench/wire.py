"""The request every worker sends, encoded once: a serialized ModelInferRequest
for gRPC, or the complete HTTP/1.1 request (head and body) for HTTP. Workers
only copy these bytes to the socket, so encoding never costs per request."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlserve.bench.input_data import InputTensor
from mlserve.bench.model_metadata import model_path
from mlserve.bench.settings import BenchSettings
from mlserve.runtime.tensor_codec import array_to_raw


@dataclass(frozen=True, slots=True)
class EncodedRequest:
    """What goes on the wire for one request, and what it stands for."""

    data: bytes  # gRPC: the protobuf message; HTTP: head + body
    body_bytes: int  # the payload alone (for the report)
    rows: int


def encode_request(settings: BenchSettings, inputs: list[InputTensor], rows: int) -> EncodedRequest:
    if settings.protocol == "grpc":
        data = _grpc(settings, inputs)
        return EncodedRequest(data, len(data), rows)
    if settings.http_body == "json":
        body = _json_body(inputs)
        head = _http_head(settings, "application/json", len(body), None)
    else:
        header, blobs = _binary_body(inputs)
        body = header + blobs
        head = _http_head(settings, "application/octet-stream", len(body), len(header))
    return EncodedRequest(head + body, len(body), rows)


def _raw(tensor: InputTensor) -> bytes:
    if tensor.datatype == "BF16":
        return np.ascontiguousarray(tensor.array, dtype="<u2").tobytes()
    return array_to_raw(tensor.array, tensor.datatype)


def _grpc(settings: BenchSettings, inputs: list[InputTensor]) -> bytes:
    from mlserve.proto import grpc_service_pb2 as pb

    request = pb.ModelInferRequest(model_name=settings.model, model_version=settings.model_version)
    for tensor in inputs:
        request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.array.shape)
        request.raw_input_contents.append(_raw(tensor))
    return bytes(request.SerializeToString())


def _binary_body(inputs: list[InputTensor]) -> tuple[bytes, bytes]:
    """The binary tensor extension: a JSON header, then the raw tensors; outputs
    are asked for in binary too, so the server does not spend time on JSON."""
    blobs = [_raw(tensor) for tensor in inputs]
    doc = {
        "inputs": [
            {
                "name": tensor.name,
                "shape": list(tensor.array.shape),
                "datatype": tensor.datatype,
                "parameters": {"binary_data_size": len(blob)},
            }
            for tensor, blob in zip(inputs, blobs, strict=True)
        ],
        "parameters": {"binary_data_output": True},
    }
    return json.dumps(doc, separators=(",", ":")).encode(), b"".join(blobs)


def _json_data(tensor: InputTensor) -> list[Any]:
    flat = tensor.array.reshape(-1)
    if tensor.datatype == "BYTES":
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in flat]
    if tensor.datatype == "BF16":  # JSON carries numbers; widen the bit patterns
        widened: list[Any] = (flat.astype(np.uint32) << 16).view(np.float32).tolist()
        return widened
    plain: list[Any] = flat.tolist()
    return plain


def _json_body(inputs: list[InputTensor]) -> bytes:
    doc = {
        "inputs": [
            {
                "name": tensor.name,
                "shape": list(tensor.array.shape),
                "datatype": tensor.datatype,
                "data": _json_data(tensor),
            }
            for tensor in inputs
        ]
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _http_head(
    settings: BenchSettings, content_type: str, length: int, header_length: int | None
) -> bytes:
    lines = [
        f"POST {model_path(settings)}/infer HTTP/1.1",
        f"Host: {settings.url}",
        f"Content-Type: {content_type}",
        f"Content-Length: {length}",
    ]
    if header_length is not None:
        lines.append(f"Inference-Header-Content-Length: {header_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
