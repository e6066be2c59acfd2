"""The request path in process: decode a ModelInferRequest, `DataPlane.start`
through the batcher and onnxruntime, encode the answer, with C requests in
flight, driven as the native transport drives them (no sockets, no HTTP/2).
Four comparisons:

- `--compare build` (the default): the modules of mlserve.compiled built by
  Cython from their source against the same modules run from source, on the
  batched model;
- `--compare batching`: batching off (`<model>`) against on
  (`<model>_batched`), both compiled. At concurrency 1 this is what the
  batcher costs a lone request, free of the network's noise, which on a shared
  2-core VM is larger than the effect (benchmarks/runs/README.md);
- `--compare raw`: raw onnxruntime in process at its best batch (a sweep over
  benchmarks.load's batch sizes first, whose rule also sets the served
  model's preferred batch size, as in benchmarks.load) against the served
  path, compiled. What the data plane alone leaves of raw's rate, without
  the transport and the kernel: the convnet's aim at c=64 is read against
  this ceiling;
- `--compare floor`: the least a served request could cost, against the
  served path. The floor decodes each request with the same Cython decoder,
  copies its row into one batch buffer, runs the preferred batch (as `raw`
  picks it; with none, up to benchmarks.load's max_batch_size) at the loop
  turn's end, and encodes each answer with the same Cython encoder: no
  InferRequest, InferCall, batcher or response objects, no validation,
  deadlines or statistics. The gap is what a fused native path (transport
  bytes into the batch buffer, output rows into the reply) could win at
  most (benchmarks/FINDINGS.md).

`--transport http` drives the HTTP path instead: the same number of
connections (HttpProtocol, each on a stand-in transport that sends the
connection's next request a loop turn after its answer), HttpApi and the data
plane, over Triton's binary tensor extension.

    .venv/bin/python -m benchmarks.micro.request_path [--compare build|batching|raw|floor]
        [--transport grpc|http] [--model mlp] [--concurrency 64] [--requests 40000]
        [--rounds 4]

Each round runs one fresh process per variant, in alternating order, each
pinned to core 0; the figures are process CPU time and wall time per request
over its own batch of requests after a warm-up batch (at concurrency 1, wall
time per request is the request's latency). Prints every round and the
medians. The Cython accelerators of ext/ are compiled in every variant."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# Per comparison, its two variants: (name, model name suffix, from source).
COMPARISONS = {
    "build": (("source", "_batched", True), ("compiled", "_batched", False)),
    "batching": (("off", "", False), ("on", "_batched", False)),
    "raw": (("raw", "_batched", False), ("served", "_batched", False)),
    "floor": (("floor", "_batched", False), ("served", "_batched", False)),
}
RAW_SWEEP_S = 1.0  # per batch size, once, before the rounds


def _no_metadata(_: str) -> str | None:
    return None


def _measure_raw(repository: Path, model: str, batch: int, rows: int) -> tuple[float, float]:
    """CPU and wall us per row of raw onnxruntime in this process (pinned to
    core 0 by its parent), one intra-op thread as the served models have, at
    `batch` rows a run."""
    import numpy as np

    from benchmarks.load import workload

    shape = workload.SHAPES[workload.base_model(model)]
    raw = workload.RawOnnxruntime(repository / model / "1" / "model.onnx", shape, 1, {0})
    x = np.ones((batch, *shape), np.float32)
    runs = max(rows // batch, 1)
    for _ in range(runs // 4 + 1):  # warm-up
        raw.session.run(None, {"x": x})
    start, start_wall = time.process_time(), time.perf_counter()
    for _ in range(runs):
        raw.session.run(None, {"x": x})
    return (
        (time.process_time() - start) / (runs * batch) * 1e6,
        (time.perf_counter() - start_wall) / (runs * batch) * 1e6,
    )


def _raw_sweep(repository: Path, model: str) -> dict[int, float]:
    """Raw onnxruntime's rows/s at each of benchmarks.load's batch sizes, as
    the load runner measures them (RawOnnxruntime: pinned to core 0 while
    it runs, one intra-op thread)."""
    from benchmarks.load import workload

    raw = workload.RawOnnxruntime(
        repository / model / "1" / "model.onnx", workload.SHAPES[model], 1, {0}
    )
    return {batch: raw.rows_per_s(batch, RAW_SWEEP_S) for batch in workload.RAW_BATCHES}


def _measure_floor(
    repository: Path, model: str, batch: int, concurrency: int, requests: int
) -> tuple[float, float]:
    """CPU and wall us per request of the floor (see the module's docstring):
    `concurrency` requests in flight, each answer followed by the next
    request, as `_grpc_batch` drives the served path. Checks the answers
    against onnxruntime's own, so that it measures a path that works."""
    import numpy as np
    import onnxruntime as ort
    import uvloop

    from benchmarks.load import workload
    from mlserve.ext.infer_codec import decode_simple_infer, encode_infer_response
    from mlserve.proto import grpc_service_pb2 as pb
    from mlserve.runtime.tensor_codec import FIXED_DTYPES
    from mlserve.server import tune_gc

    tune_gc()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(repository / model / "1" / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    output = session.get_outputs()[0].name
    message = workload.infer_message(model)
    rows = np.empty((batch, *workload.SHAPES[workload.base_model(model)]), np.float32)
    (expected,) = session.run(None, {"x": workload.sample(model)})

    async def run() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        pending: list[tuple[Any, Callable[[bytes], None]]] = []
        state = {"sent": 0, "answered": 0, "scheduled": False}
        done: asyncio.Future[None] = loop.create_future()
        answers: list[bytes] = []

        def reply(answer: bytes) -> None:
            state["answered"] += 1
            if state["sent"] < requests:
                send()
            elif state["answered"] == requests:
                answers.append(answer)
                done.set_result(None)

        def run_pending() -> None:  # at the loop turn's end, as inline batches run
            state["scheduled"] = False
            while pending:
                taken = pending[:batch]
                del pending[:batch]
                for row, (request, _) in enumerate(taken):
                    rows[row] = request[3][0][3]  # the one input's raw view
                (outputs,) = session.run(None, {"x": rows[: len(taken)]})
                width = (1, *outputs.shape[1:])
                for row, (request, answer) in enumerate(taken):
                    one = [(output, "FP32", width, outputs[row : row + 1])]
                    answer(encode_infer_response(request[0], "1", request[2], one))

        def send() -> None:
            state["sent"] += 1
            pending.append((decode_simple_infer(message, FIXED_DTYPES), reply))
            if not state["scheduled"]:
                state["scheduled"] = True
                loop.call_soon(run_pending)

        async def one_batch() -> None:
            nonlocal done
            state["sent"] = state["answered"] = 0
            done = loop.create_future()
            for _ in range(concurrency):
                send()
            await done

        await one_batch()  # warm-up
        start, start_wall = time.process_time(), time.perf_counter()
        await one_batch()
        elapsed = (time.process_time() - start, time.perf_counter() - start_wall)
        answer = pb.ModelInferResponse.FromString(answers[-1])
        got = np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(expected.shape)
        if not np.allclose(got, expected, rtol=1e-4, atol=1e-5):
            raise AssertionError(f"the floor's answer {got} is not onnxruntime's {expected}")
        return elapsed[0] / requests * 1e6, elapsed[1] / requests * 1e6

    return uvloop.run(run())


Batch = Callable[[], Awaitable[None]]


def _measure(
    repository: Path, model: str, concurrency: int, requests: int, source: bool, *, transport: str
) -> tuple[float, float]:
    """CPU and wall us per request in this process (the variant chosen before
    importing): a warm-up batch of `requests`, then a timed one."""
    if source:
        from mlserve.compiled import import_from_source

        import_from_source()
    import uvloop

    from mlserve.runtime.dataplane import DataPlane
    from mlserve.runtime.metrics import ServerMetrics
    from mlserve.runtime.repository import ModelRepository
    from mlserve.runtime.repository_layout import RepositoryLayout
    from mlserve.server import tune_gc

    tune_gc()  # the serving process's collector thresholds
    driver = _grpc_batch if transport == "grpc" else _http_batch

    async def run() -> tuple[float, float]:
        repo = ModelRepository(RepositoryLayout(repository))
        dataplane = DataPlane(repo, ServerMetrics())
        await repo.load_many([model])
        dataplane.started = True
        batch = driver(dataplane, model, concurrency, requests)
        await batch()  # warm-up
        start, start_wall = time.process_time(), time.perf_counter()
        await batch()
        return (
            (time.process_time() - start) / requests * 1e6,
            (time.perf_counter() - start_wall) / requests * 1e6,
        )

    return uvloop.run(run())


def _grpc_batch(dataplane: Any, model: str, concurrency: int, requests: int) -> Batch:
    """`requests` ModelInfer calls, `concurrency` at a time, started and
    answered as the native transport starts and answers them."""
    from benchmarks.load import workload
    from mlserve.runtime.access import AccessPolicy
    from mlserve.runtime.grpc_service import InferenceService

    service = InferenceService(dataplane, AccessPolicy([]), 64 << 20)
    message = workload.infer_message(model)

    async def batch() -> None:
        done = asyncio.get_running_loop().create_future()
        counts = {"sent": 0, "answered": 0}

        class Stream:
            """As the native transport's H2Stream answers a unary RPC."""

            def reply(self, _: bytes) -> None:
                counts["answered"] += 1
                if counts["sent"] < requests:
                    send()
                elif counts["answered"] == requests and not done.done():
                    done.set_result(None)

            def finish(self, status: int, message: str = "", trailers: Any = None) -> None:
                if not done.done():
                    done.set_exception(RuntimeError(f"status {status}: {message}"))

        stream = Stream()

        def send() -> None:
            counts["sent"] += 1
            service.start_model_infer(message, _no_metadata, None, stream)

        for _ in range(concurrency):
            send()
        await done

    return batch


def _http_batch(dataplane: Any, model: str, concurrency: int, requests: int) -> Batch:
    """`requests` HTTP binary-extension infer requests on `concurrency`
    connections, each sending its next request a loop turn after its answer
    is written."""
    from benchmarks.load import workload
    from mlserve.runtime.access import AccessPolicy
    from mlserve.runtime.http_api import HttpApi
    from mlserve.runtime.http_server import HttpProtocol, TurnWrites

    api = HttpApi(dataplane, AccessPolicy([]), 64 << 20)
    body, header_length = workload.http_binary_body(model)
    message = (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Length: {len(body)}\r\nContent-Type: application/octet-stream\r\n"
        f"Inference-Header-Content-Length: {header_length}\r\n\r\n"
    ).encode() + body

    async def batch() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        counts = {"sent": 0, "answered": 0}

        class Transport:
            """A client on the other end: its next request follows each answer."""

            def __init__(self) -> None:
                self.protocol: Any = None

            def write(self, data: bytes) -> None:
                counts["answered"] += 1  # one request in flight a connection
                if not data.startswith(b"HTTP/1.1 200") and not done.done():
                    done.set_exception(RuntimeError(data[:500].decode("latin-1")))
                if counts["sent"] < requests:
                    counts["sent"] += 1
                    loop.call_soon(self.protocol.data_received, message)
                elif counts["answered"] >= requests and not done.done():
                    done.set_result(None)

            def pause_reading(self) -> None:
                pass

            def resume_reading(self) -> None:
                pass

            def close(self) -> None:
                pass

        writes = TurnWrites()
        connections: set[HttpProtocol] = set()
        for _ in range(concurrency):
            transport = Transport()
            protocol = HttpProtocol(api.handle, 64 << 20, connections, writes, api.start_infer)
            transport.protocol = protocol
            protocol.connection_made(transport)  # type: ignore[arg-type]
            counts["sent"] += 1
            loop.call_soon(protocol.data_received, message)
        await done

    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", default="build", choices=sorted(COMPARISONS))
    parser.add_argument("--transport", default="grpc", choices=["grpc", "http"])
    parser.add_argument("--model", default="mlp", choices=["mlp", "convnet"])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=40000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--repository", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--raw-batch", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    variants = COMPARISONS[args.compare]
    if args.variant:  # one measurement, in a child process
        _, suffix, source = next(v for v in variants if v[0] == args.variant)
        if args.variant == "raw":
            cpu_us, wall_us = _measure_raw(
                args.repository, args.model, args.raw_batch, args.requests
            )
        elif args.variant == "floor":
            cpu_us, wall_us = _measure_floor(
                args.repository, args.model, args.raw_batch, args.concurrency, args.requests
            )
        else:
            cpu_us, wall_us = _measure(
                args.repository,
                args.model + suffix,
                args.concurrency,
                args.requests,
                source,
                transport=args.transport,
            )
        print(f"{cpu_us:.3f} {wall_us:.3f}")
        return

    from benchmarks.load import workload

    names = [v[0] for v in variants]
    cpu: dict[str, list[float]] = {n: [] for n in names}
    wall: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        repository = Path(tmp)
        workload.write_repository(repository, [args.model], threads=1)
        raw_batch = 0
        if args.compare in ("raw", "floor"):
            sweep = _raw_sweep(repository, args.model)
            raw_batch = max(sweep, key=lambda b: sweep[b])
            preferred = workload.preferred_batch(sweep)
            if args.compare == "floor":  # the floor runs the served model's batches
                raw_batch = preferred or workload.MAX_BATCH_SIZE
            workload.write_repository(
                repository, [args.model], threads=1, preferred={args.model: preferred}
            )
            print(
                "raw onnxruntime rows/s by batch: "
                + ", ".join(f"{b}: {rate:,.0f}" for b, rate in sweep.items())
                + ("; the floor runs batches of" if args.compare == "floor" else "; raw ran")
                + f" {raw_batch}, served preferring {preferred}"
            )
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                out = subprocess.run(
                    ["taskset", "-c", "0", sys.executable, "-m", "benchmarks.micro.request_path",
                     "--compare", args.compare, "--variant", name, "--transport", args.transport,
                     "--repository", str(repository), "--model", args.model,
                     "--concurrency", str(args.concurrency), "--requests", str(args.requests),
                     "--raw-batch", str(raw_batch)],
                    capture_output=True, text=True, check=True, timeout=600,
                ).stdout  # fmt: skip
                cpu_us, wall_us = (float(x) for x in out.split()[-2:])
                cpu[name].append(cpu_us)
                wall[name].append(wall_us)
                print(
                    f"round {round_}: {name:8} CPU {cpu_us:7.2f} us/request, "
                    f"wall {wall_us:7.2f} us/request"
                )
    first, second = names
    cpu_a, cpu_b = (statistics.median(cpu[n]) for n in names)
    wall_a, wall_b = (statistics.median(wall[n]) for n in names)
    print(
        f"{args.model} over {args.transport}, c={args.concurrency}, medians of "
        f"{args.rounds} rounds: "
        f"CPU per request {first} {cpu_a:.2f} us, {second} {cpu_b:.2f} us "
        f"({second} / {first} {cpu_b / cpu_a:.2f}); wall per request {first} {wall_a:.2f} us, "
        f"{second} {wall_b:.2f} us ({second} / {first} {wall_b / wall_a:.2f})"
    )
    if args.compare == "raw":
        paired = [r / s for r, s in zip(cpu["raw"], cpu["served"], strict=True)]
        print(
            f"served at {statistics.median(paired):.0%} of raw onnxruntime's rate "
            f"(round by round {min(paired):.0%}-{max(paired):.0%}; CPU time, "
            "one row a request against raw's rows)"
        )
    if args.compare == "floor":
        gaps = [s - f for f, s in zip(cpu["floor"], cpu["served"], strict=True)]
        print(
            f"served costs {statistics.median(gaps):.1f} us a request more than the floor "
            f"(round by round {min(gaps):.1f}-{max(gaps):.1f}): what a fused path could win"
        )


if __name__ == "__main__":
    main()
