"""GPU batching benchmark: what dynamic batching is worth on a CUDA device.

    python -m benchmarks.gpu --out DIR [--models resnet50,convnet] [--seconds 4]
        [--concurrency 1,8,64] [--server-cpus 0-3] [--client-cpus 4-15]

For each model (built here with onnx.helper: a ResNet-50 and the load
benchmark's convnet), in one run on one machine:
- raw onnxruntime with the CUDA provider in process, numpy in and out (host
  to device copies included, as a server pays them) at batch 1..128: the limit;
- mlserve with batching off, with dynamic batching (batches padded to powers
  of two, the GPU default), with dynamic batching unpadded (every batch size
  tuned by cuDNN the first time it comes), and padded over two instances,
  under `mlserve bench` over gRPC.

The server is pinned to --server-cpus, the client processes to --client-cpus
(`taskset`). Every served variant's answer is checked against onnxruntime on
the CPU before it is timed. Server side, the V2 statistics give rows per batch
and /proc the server's CPU per request. Writes DIR/gpu.json and DIR/gpu.md.
Needs onnxruntime-gpu; benchmarks/gpu/device_run.sh runs it on the device
machine."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from benchmarks.load import servers, workload
from benchmarks.load.servers import Server
from mlserve import examples
from mlserve.proto import grpc_service_pb2 as pb
from mlserve.runtime.onnx_session import providers_for

BUILDERS: dict[str, Callable[[], bytes]] = {
    "resnet50": examples.resnet50_model,
    "convnet": examples.convnet_model,
}
SHAPES: dict[str, tuple[int, ...]] = {"resnet50": (3, 224, 224), "convnet": (3, 32, 32)}
RAW_BATCHES = (1, 8, 16, 32, 64, 128)
MAX_BATCH = 128
# name suffix -> extra config: batching off, on (padded), on unpadded, on over
# two instances. Only "" and "_batched" run at every concurrency level.
VARIANTS = {
    "": "",
    "_batched": "dynamic_batching: {}\n",
    "_batched_unpadded": "dynamic_batching: {allowed_batch_sizes: []}\n",
    "_batched_x2": "dynamic_batching: {}\ninstance_count: 2\n",
}
EVERY_LEVEL = ("", "_batched")


def sample(model: str, rows: int = 1) -> np.ndarray:
    shape = (rows, *SHAPES[model])
    return np.random.default_rng(7).standard_normal(shape).astype(np.float32)


def write_repository(repo: Path, models: list[str], device: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for model in models:
        onnx_bytes = BUILDERS[model]()
        for suffix, extra in VARIANTS.items():
            config = f"device: {device}\nmax_batch_size: {MAX_BATCH}\nwarmup: {{kind: random}}\n"
            path = examples.write_model(repo, model + suffix, onnx_bytes, config=config + extra)
            files.setdefault(model, path)
    return files


def raw_rows_per_s(model_file: Path, model: str, device: str, seconds: float) -> dict[int, float]:
    """Rows/s at each batch size, numpy in and out, as the server runs it."""
    session = ort.InferenceSession(str(model_file), providers=providers_for(device))
    out = {}
    for batch in RAW_BATCHES:
        out[batch] = workload.rows_per_s(session, sample(model, batch), seconds, warmup_runs=5)
        print(f"raw {model} {device} batch {batch}: {out[batch]:,.0f} rows/s", flush=True)
    return out


def check_answer(server: Server, name: str, model: str, expected: np.ndarray) -> float:
    """One gRPC request; the largest difference from onnxruntime on the CPU."""
    request = pb.ModelInferRequest(model_name=name)
    x = sample(model)
    request.inputs.add(name="x", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.tobytes())
    answer = pb.ModelInferResponse.FromString(
        servers.grpc_answer(server.ports.grpc, request.SerializeToString())
    )
    got = np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(expected.shape)
    # cuDNN may use TF32 on Hopper: compare to the output's scale.
    error = float(np.max(np.abs(got - expected)) / max(1.0, float(np.max(np.abs(expected)))))
    if not np.isfinite(error) or error > 2e-2:
        raise SystemExit(f"{name}: answer differs from onnxruntime on the CPU by {error:.3g}")
    return error


def stats(server: Server, name: str) -> tuple[int, int]:
    """(inference_count, execution_count) from the V2 statistics endpoint."""
    url = f"http://127.0.0.1:{server.ports.http}/v2/models/{name}/stats"
    with urllib.request.urlopen(url, timeout=10) as response:
        entry = json.loads(response.read())["model_stats"][0]
    return int(entry["inference_count"]), int(entry["execution_count"])


def bench(
    server: Server, name: str, concurrency: int, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """One level of `mlserve bench` over gRPC, pinned to the client cores."""
    report = work / f"{name}-c{concurrency}.json"
    command = [
        "taskset", "-c", args.client_cpus,
        sys.executable, "-m", "mlserve.cli.main", "bench",
        "-m", name, "-u", f"127.0.0.1:{server.ports.grpc}", "-i", "grpc",
        "--concurrency", str(concurrency),
        "--duration", str(args.seconds), "--warmup", str(args.warmup),
        "--processes", str(min(args.processes, concurrency)),
        "--json", str(report),
    ]  # fmt: skip
    rows0, batches0 = stats(server, name)
    cpu0 = server.cpu_seconds()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=600)
    cpu1 = server.cpu_seconds()
    rows1, batches1 = stats(server, name)
    level = json.loads(report.read_text())["levels"][0]
    served = rows1 - rows0
    figures = {
        "variant": name,
        "concurrency": concurrency,
        "requests_per_s": level["throughput"]["requests_per_s"],
        "p50_us": level["latency_us"]["p50"],
        "p99_us": level["latency_us"]["p99"],
        "errors": level["errors"] + level["warmup_errors"],
        "rows_per_batch": served / max(1, batches1 - batches0),
        "server_cpu_us_per_request": (cpu1 - cpu0) * 1e6 / max(1, served),
    }
    print(json.dumps(figures), flush=True)
    return figures


def run_model(
    model: str, model_file: Path, server: Server, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    expected = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"]).run(
        None, {"x": sample(model)}
    )[0]
    errors = {model + s: check_answer(server, model + s, model, expected) for s in VARIANTS}
    levels = [int(c) for c in args.concurrency.split(",")]
    runs = []
    for suffix in VARIANTS:
        # The other variants only differ once batches queue up: the top level alone.
        for c in levels if suffix in EVERY_LEVEL else levels[-1:]:
            runs.append(bench(server, model + suffix, c, args, work))
    return {"answer_error": errors, "runs": runs}


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# GPU batching: {results['device_name']}", ""]
    lines.append(
        f"onnxruntime {results['onnxruntime']}, server on cores {results['server_cpus']}, "
        f"`mlserve bench` ({results['processes']} processes) on cores {results['client_cpus']}, "
        f"gRPC on {results['grpc_impl']}, {results['seconds']} s a level."
    )
    for model, entry in results["models"].items():
        raw = entry["raw_rows_per_s"]
        best = max(raw.values())
        lines += ["", f"## {model}", ""]
        lines += [f"raw onnxruntime ({results['device']}, numpy in/out), rows/s:", ""]
        lines.append("| batch | " + " | ".join(str(b) for b in raw) + " |")
        lines.append("| --- |" + " --- |" * len(raw))
        lines.append("| rows/s | " + " | ".join(f"{v:,.0f}" for v in raw.values()) + " |")
        lines += [
            "",
            "| variant | c | req/s | of raw best | p50 ms | p99 ms | rows/batch"
            " | server CPU us/req |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for run in entry["runs"]:
            lines.append(
                f"| {run['variant']} | {run['concurrency']} | {run['requests_per_s']:,.0f} | "
                f"{run['requests_per_s'] / best:.0%} | {run['p50_us'] / 1000:.2f} | "
                f"{run['p99_us'] / 1000:.2f} | {run['rows_per_batch']:.1f} | "
                f"{run['server_cpu_us_per_request']:.0f} |"
            )
        by_key = {(r["variant"], r["concurrency"]): r["requests_per_s"] for r in entry["runs"]}
        for c in sorted({r["concurrency"] for r in entry["runs"]}):
            off, on = by_key.get((model, c)), by_key.get((model + "_batched", c))
            if off and on:
                lines.append(f"\nc={c}: batching on / off = {on / off:.2f}x")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", default="resnet50,convnet")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--server-cpus", default="0-3")
    parser.add_argument("--client-cpus", default="4-15")
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--grpc-impl", default="native", choices=("native", "grpcio"))
    args = parser.parse_args()
    models = args.models.split(",")
    servers.SERVER_CPU = args.server_cpus
    device_name = "cpu"
    if args.device != "cpu":
        providers_for(args.device)  # refuses a CPU-only onnxruntime with the reason
        device_name = (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            or args.device
        )
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "device": args.device,
        "device_name": device_name,
        "onnxruntime": ort.__version__,
        "server_cpus": args.server_cpus,
        "client_cpus": args.client_cpus,
        "processes": args.processes,
        "seconds": args.seconds,
        "grpc_impl": args.grpc_impl,
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="mlserve-gpu-") as tmp:
        work = Path(tmp)
        files = write_repository(work / "repo", models, args.device)
        for model in models:
            results["models"][model] = {
                "raw_rows_per_s": raw_rows_per_s(files[model], model, args.device, args.seconds)
            }
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        server = servers.start_mlserve(work / "repo", args.grpc_impl)
        try:
            for model in models:
                results["models"][model].update(run_model(model, files[model], server, args, work))
        finally:
            server.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    text = markdown(results)
    (args.out / "gpu.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
