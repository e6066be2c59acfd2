"""Serve a Triton-layout ONNX repository with KServe's ModelServer (the KServe peer).

    .venv-kserve/bin/python benchmarks/peers/kserve_onnx.py \\
        --model-repository DIR --models mlp,convnet \\
        --http-port 8080 --grpc-port 8081 [--intra-op-threads 1]

One kserve.Model per model runs onnxruntime (CPU provider) on
DIR/<model>/<highest version>/model.onnx and answers Open Inference Protocol
(V2) requests on REST (/v2/models/<m>/infer, JSON or binary tensors) and gRPC
(inference.GRPCInferenceService/ModelInfer). One uvicorn worker, REST and gRPC
in one event loop, both bound to 127.0.0.1 (KServe binds all interfaces), logs
at WARNING (no per-request lines). Prints `peer ready` once /v2/health/ready
and every /v2/models/<m>/ready answer 200, and serves until SIGTERM/SIGINT.
Prometheus metrics are KServe's own, on the REST port: /metrics has
request_predict_seconds_count{model_name="<m>"}, one per answered inference.
"""

from __future__ import annotations

import sys

# kserve.model_server parses sys.argv (parse_known_args) when imported: hide
# ours from it, so that it sees nothing and keeps its defaults.
ARGV = sys.argv[1:]
del sys.argv[1:]

import argparse  # noqa: E402
import copy  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
import uuid  # noqa: E402
from concurrent import futures  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from grpc import aio  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer  # noqa: E402
from kserve import logging as kserve_logging  # noqa: E402
from kserve import model_server as kserve_model_server  # noqa: E402
from kserve.errors import InvalidInput  # noqa: E402
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc  # noqa: E402
from kserve.protocol.grpc.interceptors import (  # noqa: E402
    ExceptionToStatusInterceptor,
    LoggingInterceptor,
)
from kserve.protocol.grpc.server import GRPCServer  # noqa: E402
from kserve.protocol.grpc.servicer import InferenceServicer  # noqa: E402
from kserve.protocol.rest.server import RESTServer  # noqa: E402
from kserve.utils.numpy_codec import from_np_dtype  # noqa: E402
from peer_common import ORT_TYPES, model_file  # noqa: E402

HOST = "127.0.0.1"


class OnnxModel(Model):
    """One onnxruntime InferenceSession; `predict` runs inline on the event loop."""

    def __init__(self, name: str, path: Path, intra_op_threads: int = 1) -> None:
        super().__init__(name)
        self.path = path
        self.intra_op_threads = intra_op_threads
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )
        self.input_types = {
            i.name: ORT_TYPES.get(i.type, np.float32) for i in self.session.get_inputs()
        }
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return True

    def predict(
        self,
        payload: InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse:
        feeds: dict[str, np.ndarray] = {}
        for tensor in payload.inputs:
            if tensor.name not in self.input_types:
                raise InvalidInput(f"unexpected input {tensor.name!r} for model {self.name}")
            feeds[tensor.name] = np.asarray(tensor.as_numpy(), self.input_types[tensor.name])
        missing = self.input_types.keys() - feeds.keys()
        if missing:
            raise InvalidInput(f"missing inputs {sorted(missing)} for model {self.name}")
        results = self.session.run(self.output_names, feeds)
        # gRPC: raw_output_contents; REST: JSON data unless binary outputs were asked for.
        binary = bool(payload.from_grpc or payload.use_binary_outputs)
        outputs = []
        for name, value in zip(self.output_names, results, strict=True):
            output = InferOutput(name, list(value.shape), from_np_dtype(value.dtype))
            output.set_data_from_numpy(value, binary_data=binary)
            outputs.append(output)
        return InferResponse(
            # REST answers 500 (pydantic: id must be a string) without an id.
            response_id=payload.id or str(uuid.uuid4()),
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


class LoopbackRESTServer(RESTServer):
    """KServe's REST server, bound to 127.0.0.1 instead of 0.0.0.0, no access log."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.host = HOST
        self.config.access_log = False


class LoopbackGRPCServer(GRPCServer):
    """KServe's gRPC server (GRPCServer.start of kserve 0.21.0, unchanged but for
    the address), bound to 127.0.0.1 instead of [::]."""

    async def start(self, max_workers: int) -> None:
        servicer = InferenceServicer(self._data_plane, self._model_repository_extension)
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(LoggingInterceptor(), ExceptionToStatusInterceptor()),
            options=[
                ("grpc.max_send_message_length", self._kwargs["grpc_max_send_message_length"]),
                (
                    "grpc.max_receive_message_length",
                    self._kwargs["grpc_max_receive_message_length"],
                ),
            ],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        self._server.add_insecure_port(f"{HOST}:{self._port}")
        await self._server.start()
        await self._server.wait_for_termination()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kserve_onnx.py", description="KServe ONNX peer")
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--models", required=True, help="comma-separated model names")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--grpc-port", type=int, default=8081)
    parser.add_argument("--intra-op-threads", type=int, default=1)
    parser.add_argument("--ready-timeout-s", type=float, default=120.0)
    return parser.parse_args(argv)


def quiet_logging() -> None:
    """KServe's logging config with every logger at WARNING."""
    config = copy.deepcopy(kserve_logging.KSERVE_LOG_CONFIG)
    for logger in config["loggers"].values():
        logger["level"] = "WARNING"
    kserve_logging.configure_logging(config)


def announce_when_ready(http_port: int, names: list[str], timeout_s: float) -> None:
    base = f"http://{HOST}:{http_port}/v2"
    urls = [f"{base}/health/ready", *(f"{base}/models/{name}/ready" for name in names)]

    def ok(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(ok(url) for url in urls):
            print("peer ready", flush=True)
            return
        time.sleep(0.2)
    print("peer failed to become ready", file=sys.stderr, flush=True)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    names = [name for name in args.models.split(",") if name]
    quiet_logging()
    models = [
        OnnxModel(name, model_file(args.model_repository, name), args.intra_op_threads)
        for name in names
    ]
    # ModelServer.start builds its servers from these module attributes.
    kserve_model_server.RESTServer = LoopbackRESTServer
    kserve_model_server.GRPCServer = LoopbackGRPCServer
    server = ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=1,
        enable_grpc=True,
        enable_docs_url=False,
        enable_latency_logging=False,
        # Few threads: the default asyncio executor is not used by inline predict.
        max_asyncio_workers=1,
    )
    threading.Thread(
        target=announce_when_ready,
        args=(args.http_port, names, args.ready_timeout_s),
        daemon=True,
    ).start()
    server.start(models)


if __name__ == "__main__":
    main(ARGV)
