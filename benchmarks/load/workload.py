"""What the load runner sends: the benchmark models, their request bodies
(gRPC frames, V2 JSON and binary HTTP bodies), and raw onnxruntime in process,
the limit every server is read against."""

from __future__ import annotations

import contextlib
import json
import os
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort

from mlserve import examples
from mlserve.proto import grpc_service_pb2 as pb

SHAPES: dict[str, tuple[int, ...]] = {
    "identity": (16,),
    "mlp": (64,),
    "convnet": (3, 32, 32),
    "pool": (3, 224, 224),  # a 602 KB request: the transport's cost for large tensors
}
BUILDERS: dict[str, Callable[[], bytes]] = {
    "identity": examples.identity_model,
    "mlp": examples.mlp_model,
    "convnet": examples.convnet_model,
    "pool": examples.pool_model,
}
# 2 and 4 too: where a core's L2 is small (1 MiB), onnxruntime's working set
# for the convnet leaves it past a few rows, and its time per row is least at
# 4 or 8 (2026-12-07: 6,685 rows/s at 4, 6,263 at 16, 5,645 at 32).
RAW_BATCHES = (1, 2, 4, 8, 16, 32, 128)
# The batched models' max_queue_delay_us. Over grpcio, requests reach the
# loop one at a time, while grpc's own threads wait for the core: without a
# delay no two share a batch, and each run of the MLP pays for its weights
# coming back into the cache (65 us against 10). The policy ends a wait once
# arrivals stop, so the delay costs a lone client nothing. A model given a
# preferred size gets no delay: by Triton's rules a delay, once the oldest
# request has waited it out (always, under sustained load), sends everything
# pending up to max_batch_size, and the preferred size would not hold.
QUEUE_DELAY_US = 1000
# Messages per h2load request on ModelStreamInfer: one HTTP/2 stream carries
# this many requests and gets as many answers, as a streaming client sends.
STREAM_MESSAGES = 16


def base_model(variant: str) -> str:
    """`mlp_batched` -> `mlp`."""
    return variant.split("_", maxsplit=1)[0]


def sample(model: str, rows: int = 1) -> np.ndarray:
    """The one input every server gets, so every answer can be checked."""
    shape = (rows, *SHAPES[base_model(model)])
    return (np.arange(np.prod(shape), dtype=np.float32).reshape(shape) % 7) / 7


def write_repository(
    repo: Path, models: list[str], threads: int, preferred: dict[str, int | None] | None = None
) -> None:
    """Each model twice: `<m>` with batching off, `<m>_batched` with dynamic
    batching (write_batched), preferring `preferred[m]` rows a batch where
    given."""
    for model in models:
        onnx_bytes = BUILDERS[model]()
        examples.write_model(repo, model, onnx_bytes, config=_session(threads))
        write_batched(repo, f"{model}_batched", onnx_bytes, threads, (preferred or {}).get(model))


def write_batched(
    repo: Path, name: str, onnx_bytes: bytes, threads: int, preferred: int | None
) -> None:
    """One model with dynamic batching, as a Triton user would set it: a queue
    delay of QUEUE_DELAY_US; or, preferring `preferred` rows a batch, no delay,
    so that batches keep that size under load."""
    if preferred:
        batching = f"{{max_queue_delay_us: 0, preferred_batch_size: [{preferred}]}}"
    else:
        batching = f"{{max_queue_delay_us: {QUEUE_DELAY_US}}}"
    examples.write_model(
        repo,
        name,
        onnx_bytes,
        config=_session(threads)
        + f"max_batch_size: {MAX_BATCH_SIZE}\ndynamic_batching: {batching}\n",
    )


def _session(threads: int) -> str:
    return f"session:\n  intra_op_threads: {threads}\nwarmup: {{kind: random}}\n"


# Raw rates this close to the best are one rate (1 s per point on a shared
# machine moves them by more).
BEST_BATCH_TOLERANCE = 0.02
MAX_BATCH_SIZE = 128  # the batched models'; also raw onnxruntime's largest batch
# How results.md names the rule preferred_batch below follows.
PREFERRED_RULE = (
    "the largest raw size within 2% of the fastest; none where that is the maximum, "
    "so batches grow with the queue"
)


def preferred_batch(rows_per_s: dict[int, float]) -> int | None:
    """The preferred batch size of a batched model on this machine: the
    largest size raw onnxruntime ran within BEST_BATCH_TOLERANCE of its
    fastest, or None (no preferred size) where that is MAX_BATCH_SIZE.

    Triton's advice: prefer a size only where the model has a sweet spot;
    otherwise batches should grow with the queue. Raw onnxruntime cannot show
    the server's own cost per batch (its dispatch, the replies' loop turns,
    the request path's code coming back into the cache after each run), which
    larger batches spread over more requests: the convnet at c=64, one core,
    raw rates flat from batch 1 to 32, served 4.5-5.0k requests/s preferring
    8, 5.3-6.1k preferring 32 and 5.4-5.6k with none, the model itself at
    125-127 us a row in all three (three alternating rounds, 2026-11-29)."""
    best = max(rows_per_s.values())
    size = max(b for b, rate in rows_per_s.items() if rate >= best * (1 - BEST_BATCH_TOLERANCE))
    return None if size >= MAX_BATCH_SIZE else size


def infer_message(model: str) -> bytes:
    request = pb.ModelInferRequest(model_name=model)
    x = sample(model)
    request.inputs.add(name="x", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.tobytes())
    return request.SerializeToString()


def grpc_frame(model: str, messages: int = 1) -> bytes:
    """Length-prefixed ModelInferRequest(s): the body h2load sends per stream."""
    data = infer_message(model)
    return (b"\x00" + struct.pack(">I", len(data)) + data) * messages


def http_json_body(model: str) -> bytes:
    x = sample(model)
    doc = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        ]
    }
    return json.dumps(doc).encode()


def http_binary_body(model: str) -> tuple[bytes, int]:
    """Triton's binary tensor extension: JSON header, then raw tensors."""
    x = sample(model)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": list(x.shape),
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return header + x.tobytes(), len(header)


def expected_output(model_file: Path, model: str) -> np.ndarray:
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(["y"], {"x": sample(model)})[0]
    return out


class RawOnnxruntime:
    """One onnxruntime session in this process, run pinned to the server's
    cores with as many intra-op threads as the server has. Besides the sweep
    over RAW_BATCHES at the start, the runner measures it again between the
    server's windows (the server idle then), so mlserve against raw is
    judged window by window, as batching on against off is, not against
    one figure taken minutes earlier on a machine whose speed drifts.
    (`rows_per_s` at each of RAW_BATCHES first: the limit, and its best batch.)"""

    def __init__(
        self, model_file: Path, shape: tuple[int, ...], threads: int, cpus: set[int]
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.cpus = cpus
        self.shape = shape
        with self._pinned():
            self.session = ort.InferenceSession(
                str(model_file), options, providers=["CPUExecutionProvider"]
            )

    def rows_per_s(self, batch: int, seconds: float) -> float:
        with self._pinned():
            return rows_per_s(self.session, np.ones((batch, *self.shape), np.float32), seconds)

    @contextlib.contextmanager
    def _pinned(self) -> Iterator[None]:
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, self.cpus)
        try:
            yield
        finally:
            os.sched_setaffinity(0, before)


def rows_per_s(
    session: ort.InferenceSession, x: np.ndarray, seconds: float, warmup_runs: int = 20
) -> float:
    """Rows per second of `session` on input `x` (numpy in and out), after
    `warmup_runs` untimed runs."""
    for _ in range(warmup_runs):
        session.run(None, {"x": x})
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"x": x})
        runs += 1
    return runs * len(x) / (time.perf_counter() - start)
