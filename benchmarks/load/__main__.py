"""Load benchmark: mlserve (batching off and on) against raw onnxruntime in
process (the limit) and an empty grpcio servicer (the transport floor), in one
run on this machine.

    .venv/bin/python -m benchmarks.load [--quick] [--models mlp,convnet]
                                         [--concurrency 1,8,32,64] [--seconds 5]

Servers run pinned to core 0 (`taskset -c 0`), h2load to core 1. h2load sends a
precomputed ModelInfer frame over h2c (`-c 1 -m C`: one connection, C
concurrent streams, as a gRPC channel does); it ignores grpc-status, so
successes are counted on the server (metrics delta) and any shortfall is
reported. Server CPU per request comes from /proc. Where perf_analyzer is set
up (benchmarks/perf_analyzer/setup.sh) it adds p50/p99 latency for unary gRPC,
gRPC streaming and HTTP (binary) at the same concurrencies. Results go to
benchmarks/results/<date>-<host>/results.json and results.md. Issue 4 adds the
peers (MLServer, KServe), HTTP with wrk, and plots."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from mlserve import __version__, examples
from mlserve.proto import grpc_service_pb2 as pb

SERVER_CPU = "0"
CLIENT_CPU = "1"
PATH = "/inference.GRPCInferenceService/ModelInfer"
SHAPES = {"identity": (16,), "mlp": (64,), "convnet": (3, 32, 32)}
BUILDERS: dict[str, Callable[[], bytes]] = {
    "identity": examples.identity_model,
    "mlp": examples.mlp_model,
    "convnet": examples.convnet_model,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def frame(model: str, rows: int = 1) -> bytes:
    request = pb.ModelInferRequest(model_name=model)
    shape = (rows, *SHAPES[model.split("_", maxsplit=1)[0]])
    request.inputs.add(name="x", datatype="FP32", shape=shape)
    request.raw_input_contents.append(np.ones(shape, np.float32).tobytes())
    data = request.SerializeToString()
    return b"\x00" + struct.pack(">I", len(data)) + data


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def h2load(port: int, frame_file: Path, concurrency: int, seconds: float) -> dict[str, float]:
    command = [
        "taskset",
        "-c",
        CLIENT_CPU,
        "h2load",
        "-c",
        "1",
        "-m",
        str(concurrency),
        "-D",
        str(max(1, round(seconds))),
        f"--data={frame_file}",
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        f"http://127.0.0.1:{port}{PATH}",
    ]
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    out = proc.stdout + proc.stderr
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    rate = re.search(r"finished in ([0-9.]+)s, ([0-9.]+) req/s", out)
    latency = re.search(
        r"time for request:\s+([0-9.]+)(us|ms|s)\s+([0-9.]+)(us|ms|s)\s+"
        r"([0-9.]+)(us|ms|s)",
        out,
    )
    if not (done and rate):
        raise RuntimeError(f"h2load output not understood:\n{out}")
    scale = {"us": 1.0, "ms": 1e3, "s": 1e6}
    mean_us = float(latency.group(5)) * scale[latency.group(6)] if latency else float("nan")
    return {"done": float(done.group(1)), "rps": float(rate.group(2)), "mean_us": mean_us}


def metric_total(metrics: str, name: str, model: str) -> float:
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as response:
        text = response.read().decode()
    pattern = rf'^{name}\{{model="{model}",version="1"\}} ([0-9.e+]+)$'
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.M))


PERF_ANALYZER = Path(__file__).resolve().parents[1] / "perf_analyzer" / "perf_analyzer"


def perf_analyzer(
    model: str, mode: str, port: int, concurrency: int, *, seconds: float, work: Path
) -> dict[str, Any]:
    """Throughput and p50/p99 from Triton's perf_analyzer (benchmarks/perf_analyzer/setup.sh)."""
    csv_file = work / f"pa-{model}-{mode}-{concurrency}.csv"
    command = [
        "taskset", "-c", CLIENT_CPU, str(PERF_ANALYZER), "-m", model,
        "-i", "http" if mode == "http" else "grpc", "-u", f"127.0.0.1:{port}",
        "--concurrency-range", str(concurrency), "--measurement-interval",
        str(int(seconds * 1000)), "-f", str(csv_file), "--async",
    ]  # fmt: skip
    # --async: in its default sync mode (one thread per concurrent request)
    # perf_analyzer 2.51 starves itself on one core once the server is fast and
    # never closes its second window (seen at 10k+ infer/s, concurrency 64).
    if mode == "grpc-streaming":
        command.append("--streaming")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0 or not csv_file.exists():
        # perf_analyzer exits non-zero when no window pair was stable within
        # its trials, as well as on errors: keep its last words to tell which.
        return {"error": float(proc.returncode), "output": (proc.stdout + proc.stderr)[-400:]}
    header, row = csv_file.read_text().splitlines()[:2]
    values = dict(zip(header.split(","), row.split(","), strict=False))
    return {
        "rps": float(values["Inferences/Second"]),
        "p50_us": float(values["p50 latency"]),
        "p99_us": float(values["p99 latency"]),
    }


class Server:
    """A server process pinned to the server core, stopped with SIGTERM."""

    def __init__(self, command: list[str], ready_pattern: str) -> None:
        self.process = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        self.lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if re.search(ready_pattern, line):
                return
        raise RuntimeError("server did not start:\n" + "".join(self.lines))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def raw_onnxruntime(model_file: Path, shape: tuple[int, ...], threads: int) -> dict[int, float]:
    """Rows per second at batch 1, 8, 32, 128, pinned like the server."""
    os.sched_setaffinity(0, {int(SERVER_CPU)})
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    out = {}
    for batch in (1, 8, 32, 128):
        x = np.ones((batch, *shape), np.float32)
        for _ in range(20):
            session.run(None, {"x": x})
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < 1.0:
            session.run(None, {"x": x})
            runs += 1
        out[batch] = runs * batch / (time.perf_counter() - start)
    os.sched_setaffinity(0, os.sched_getaffinity(0) | {0, 1})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="identity only, short windows")
    parser.add_argument("--models", default="mlp,convnet")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--no-perf-analyzer", action="store_true", help="h2load figures only (faster)"
    )
    args = parser.parse_args()
    models = ["identity"] if args.quick else args.models.split(",")
    concurrencies = [1, 8] if args.quick else [int(c) for c in args.concurrency.split(",")]
    seconds = 2.0 if args.quick else args.seconds
    threads = 1  # the server gets one core; so does raw onnxruntime
    work = Path(tempfile.mkdtemp(prefix="mlserve-bench-"))
    repo = work / "models"
    session = f"session:\n  intra_op_threads: {threads}\nwarmup: {{kind: random}}\n"
    for model in models:
        examples.write_model(repo, model, BUILDERS[model](), config=session)
        examples.write_model(
            repo,
            f"{model}_batched",
            BUILDERS[model](),
            config=(session + "max_batch_size: 128\ndynamic_batching: {}\n"),
        )
    results: dict[str, Any] = {
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "python": sys.version},
        "versions": {"mlserve": __version__, "onnxruntime": ort.__version__},
        "settings": {
            "server_cpu": SERVER_CPU,
            "client_cpu": CLIENT_CPU,
            "seconds": seconds,
            "intra_op_threads": threads,
            "h2load": "-c 1 -m C",
        },
        "raw_onnxruntime_rows_per_s": {},
        "runs": [],
        "latency": [],
    }
    for model in models:
        results["raw_onnxruntime_rows_per_s"][model] = raw_onnxruntime(
            repo / model / "1" / "model.onnx", SHAPES[model], threads
        )
    # The transport floor: an empty grpcio servicer with a fixed answer.
    answer = work / "answer.bin"
    reply = pb.ModelInferResponse(model_name="floor", model_version="1")
    reply.outputs.add(name="y", datatype="FP32", shape=[1, 10])
    reply.raw_output_contents.append(bytes(40))
    answer.write_bytes(reply.SerializeToString())
    floor_port = free_port()
    floor = Server(
        [
            sys.executable,
            "-m",
            "benchmarks.load.floors",
            "grpc-unary",
            str(floor_port),
            str(answer),
        ],
        r"floor listening",
    )
    frames = {}
    for model in models:
        for variant in (model, f"{model}_batched"):
            frames[variant] = work / f"{variant}.frame"
            frames[variant].write_bytes(frame(variant))
    try:
        h2load(floor_port, frames[models[0]], max(concurrencies), 1)  # warm-up
        for c in concurrencies:
            cpu0 = cpu_seconds(floor.process.pid)
            load = h2load(floor_port, frames[models[0]], c, seconds)
            cpu = cpu_seconds(floor.process.pid) - cpu0
            results["runs"].append(
                {
                    "server": "grpcio-empty-unary",
                    "model": "-",
                    "concurrency": c,
                    **load,
                    "cpu_us_per_request": cpu / max(load["done"], 1) * 1e6,
                }
            )
    finally:
        floor.stop()
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    server = Server(
        [
            sys.executable,
            "-m",
            "mlserve.cli.main",
            "serve",
            "--model-repository",
            str(repo),
            "--grpc-port",
            str(grpc_port),
            "--http-port",
            str(http_port),
            "--metrics-port",
            str(metrics_port),
            "--grpc-address",
            "127.0.0.1",
            "--http-address",
            "127.0.0.1",
            "--metrics-address",
            "127.0.0.1",
        ],
        r"mlserve ready: True",
    )
    metrics = f"127.0.0.1:{metrics_port}"
    try:
        for variant, frame_file in frames.items():
            h2load(grpc_port, frame_file, max(concurrencies), 1)  # warm-up
            for c in concurrencies:
                ok0 = metric_total(metrics, "mlserve_request_success_total", variant)
                cpu0 = cpu_seconds(server.process.pid)
                load = h2load(grpc_port, frame_file, c, seconds)
                cpu = cpu_seconds(server.process.pid) - cpu0
                ok = metric_total(metrics, "mlserve_request_success_total", variant) - ok0
                results["runs"].append(
                    {
                        "server": "mlserve-grpcio",
                        "model": variant,
                        "concurrency": c,
                        **load,
                        "server_successes": ok,
                        "cpu_us_per_request": cpu / max(ok, 1) * 1e6,
                    }
                )
        if PERF_ANALYZER.exists() and not args.no_perf_analyzer:
            for variant in frames:
                for mode in ("grpc", "grpc-streaming", "http"):
                    for c in concurrencies:
                        port = http_port if mode == "http" else grpc_port
                        results["latency"].append(
                            {
                                "model": variant,
                                "mode": mode,
                                "concurrency": c,
                                **perf_analyzer(variant, mode, port, c, seconds=seconds, work=work),
                            }
                        )
    finally:
        server.stop()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir = Path("benchmarks/results") / f"{stamp}-{platform.node()}"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    lines = [
        "| server | model | conc | req/s | mean latency us | server CPU us/req | ok |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in results["runs"]:
        lines.append(
            f"| {run['server']} | {run['model']} | {run['concurrency']} | {run['rps']:.0f} | "
            f"{run['mean_us']:.0f} | {run['cpu_us_per_request']:.0f} | "
            f"{int(run.get('server_successes', run['done']))}/{int(run['done'])} |"
        )
    if results["latency"]:
        lines += [
            "",
            "| model | mode (perf_analyzer) | conc | infer/s | p50 us | p99 us |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for run in results["latency"]:
            if "rps" in run:
                lines.append(
                    f"| {run['model']} | {run['mode']} | {run['concurrency']} | "
                    f"{run['rps']:.0f} | {run['p50_us']:.0f} | {run['p99_us']:.0f} |"
                )
            else:
                lines.append(
                    f"| {run['model']} | {run['mode']} | {run['concurrency']} | "
                    "perf_analyzer failed | | |"
                )
    lines.append("")
    lines.append("| model | raw onnxruntime rows/s at batch 1 / 8 / 32 / 128 (1 thread, core 0) |")
    lines.append("| --- | --- |")
    for model, rates in results["raw_onnxruntime_rows_per_s"].items():
        lines.append(f"| {model} | " + " / ".join(f"{r:.0f}" for r in rates.values()) + " |")
    table = "\n".join(lines)
    (out_dir / "results.md").write_text(table + "\n")
    print(table)
    print(f"\nwritten to {out_dir}")


if __name__ == "__main__":
    main()
