"""KServe's own Python client (the `kserve` SDK) against a running mlserve:
its REST client (protocol v2) and its gRPC client, as a KServe user would
point them at a server, plus KServe's own V2 data models and gRPC stubs for
what its clients have no call for (metadata, the model list).

It runs in KServe's venv (benchmarks/peers/setup.sh kserve): `kserve` and
tritonclient cannot share a process (both register the `inference` protos).
tests/integration/test_kserve_client.py starts the server, runs this script
with the endpoints in MLSERVE_HTTP and MLSERVE_GRPC (HOST:PORT each), and
checks what it reports: one JSON object on stdout, each check's result
under its name, or {"error": "..."} where the client raised."""

from __future__ import annotations

import asyncio
import json
import os
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import httpx
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from kserve.protocol.rest.v2_datamodels import (
    ListModelsResponse,
    ModelMetadataResponse,
    ModelReadyResponse,
    ServerLiveResponse,
    ServerMetadataResponse,
    ServerReadyResponse,
)

MLP_X = (np.arange(3 * 64, dtype=np.float32).reshape(3, 64) - 96.0) / 64.0
WORDS = np.array([["a", "", "naïve", "日本"], ["x" * 300, "b", "c", "d"]], dtype=object)


async def attempt(report: dict[str, Any], name: str, check: Callable[[], Awaitable[Any]]) -> None:
    try:
        report[name] = await check()
    except Exception as exc:  # the report says what the client raised
        report[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}


def mlp_request(binary: bool) -> InferRequest:
    tensor = InferInput("x", list(MLP_X.shape), "FP32")
    tensor.set_data_from_numpy(MLP_X, binary_data=binary)
    return InferRequest(model_name="mlp", infer_inputs=[tensor], request_id=f"mlp-{binary}")


def bytes_request(binary: bool) -> InferRequest:
    data = WORDS if not binary else np.vectorize(lambda w: w.encode(), otypes=[object])(WORDS)
    tensor = InferInput("x", list(WORDS.shape), "BYTES")
    tensor.set_data_from_numpy(data, binary_data=binary)
    return InferRequest(model_name="identity_bytes", infer_inputs=[tensor], request_id="words")


def words(array: np.ndarray) -> list[list[str]]:
    return [[w.decode() if isinstance(w, bytes) else str(w) for w in row] for row in array]


async def rest_checks(base: str, report: dict[str, Any]) -> None:
    client = InferenceRESTClient(config=RESTConfig(protocol="v2", timeout=60))
    await attempt(report, "rest_server_live", lambda: client.is_server_live(base))
    await attempt(report, "rest_server_ready", lambda: client.is_server_ready(base))
    await attempt(report, "rest_model_ready", lambda: client.is_model_ready(base, "mlp"))
    await attempt(
        report, "rest_missing_model_ready", lambda: client.is_model_ready(base, "no_such_model")
    )
    for binary in (False, True):
        kind = "binary" if binary else "json"

        async def mlp(binary: bool = binary) -> Any:
            response = await client.infer(base, mlp_request(binary), model_name="mlp")
            return {
                "id": response.id,
                "model_name": response.model_name,
                "y": response.outputs[0].as_numpy().tolist(),
            }

        async def text(binary: bool = binary) -> Any:
            response = await client.infer(base, bytes_request(binary), model_name="identity_bytes")
            return words(response.outputs[0].as_numpy())

        await attempt(report, f"rest_infer_{kind}", mlp)
        await attempt(report, f"rest_bytes_{kind}", text)
    await client.close()

    # Metadata and the model list: KServe's client has no call for them;
    # KServe's own data models (its server's response types) read our JSON.
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:

        async def read(path: str, model: Any) -> Any:
            response = await http.get(path)
            response.raise_for_status()
            return model.model_validate_json(response.content).model_dump()

        await attempt(report, "rest_live_body", lambda: read("/v2/health/live", ServerLiveResponse))
        await attempt(
            report, "rest_ready_body", lambda: read("/v2/health/ready", ServerReadyResponse)
        )
        await attempt(
            report,
            "rest_model_ready_body",
            lambda: read("/v2/models/mlp/ready", ModelReadyResponse),
        )
        await attempt(report, "rest_server_metadata", lambda: read("/v2", ServerMetadataResponse))
        await attempt(
            report, "rest_model_metadata", lambda: read("/v2/models/mlp", ModelMetadataResponse)
        )
        await attempt(report, "rest_models", lambda: read("/v2/models", ListModelsResponse))


async def grpc_checks(address: str, report: dict[str, Any]) -> None:
    client = InferenceGRPCClient(url=address, timeout=60)
    await attempt(report, "grpc_server_live", client.is_server_live)
    await attempt(report, "grpc_server_ready", client.is_server_ready)
    await attempt(report, "grpc_model_ready", lambda: client.is_model_ready("mlp"))
    await attempt(
        report, "grpc_missing_model_ready", lambda: client.is_model_ready("no_such_model")
    )

    async def mlp() -> Any:
        response = await client.infer(mlp_request(binary=False))
        return {
            "id": response.id,
            "model_name": response.model_name,
            "y": response.outputs[0].as_numpy().tolist(),
        }

    async def text() -> Any:
        response = await client.infer(bytes_request(binary=True))
        return words(response.outputs[0].as_numpy())

    await attempt(report, "grpc_infer", mlp)
    await attempt(report, "grpc_bytes", text)
    await client.close()

    # Metadata: KServe's client has no call for it; its generated stubs do.
    async with grpc.aio.insecure_channel(address) as channel:
        stub = GRPCInferenceServiceStub(channel)

        async def server_metadata() -> Any:
            meta = await stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=60)
            return {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}

        async def model_metadata() -> Any:
            meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="mlp"), timeout=60)
            return {
                "name": meta.name,
                "platform": meta.platform,
                "inputs": [
                    {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                    for t in meta.inputs
                ],
            }

        await attempt(report, "grpc_server_metadata", server_metadata)
        await attempt(report, "grpc_model_metadata", model_metadata)


async def main() -> None:
    # The endpoints come from the environment, not argv: importing kserve
    # parses the command line with its model server's options.
    report: dict[str, Any] = {"mlp_x": MLP_X.tolist(), "words": WORDS.tolist()}
    await rest_checks(f"http://{os.environ['MLSERVE_HTTP']}", report)
    await grpc_checks(os.environ["MLSERVE_GRPC"], report)
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main())
