"""Check the peers for real: start each, compare answers with onnxruntime, h2load its gRPC.

    .venv/bin/python -m benchmarks.peers.check_peers [--peers mlserver,kserve] [-n 2000]
        [--mlserver-args "--no-adaptive-batching --parallel-workers 1"] [--kserve-args ...]

Needs benchmarks/peers/setup.sh to have run, and h2load (nghttp2-client).
Writes identity, mlp and convnet (mlserve.examples) into a temporary Triton
repository; starts each peer on free ports pinned to core 0; sends one request
(2 rows of random data) per model over gRPC, HTTP JSON and, for KServe, HTTP
binary tensors with tritonclient and checks the outputs against onnxruntime in
process (max abs difference <= 1e-5); then sends `n` precomputed ModelInfer
frames per model with h2load (core 1, one connection, 8 streams) and checks
that the server counted every one as answered (h2load ignores grpc-status).
Finally SIGTERM, and the whole process tree must be gone within 30 s. Exits
non-zero on any failure.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from benchmarks.load.workload import grpc_frame
from mlserve import examples

ROOT = Path(__file__).resolve().parents[2]
PEERS = Path(__file__).resolve().parent
SHAPES = {"identity": (16,), "mlp": (64,), "convnet": (3, 32, 32)}
BUILDERS: dict[str, Callable[[], bytes]] = {
    "identity": examples.identity_model,
    "mlp": examples.mlp_model,
    "convnet": examples.convnet_model,
}
TOLERANCE = 1e-5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peer_command(
    peer: str, repo: Path, models: str, ports: dict[str, int], extra: list[str]
) -> list[str]:
    common = ["--model-repository", str(repo), "--models", models]
    common += ["--http-port", str(ports["http"]), "--grpc-port", str(ports["grpc"])]
    if peer == "mlserver":
        python = ROOT / ".venv-mlserver/bin/python"
        return [str(python), str(PEERS / "mlserver_peer.py"), *common,
                "--metrics-port", str(ports["metrics"]), *extra]  # fmt: skip
    return [str(ROOT / ".venv-kserve/bin/python"), str(PEERS / "kserve_onnx.py"), *common, *extra]


def answered(peer: str, ports: dict[str, int], model: str) -> float:
    """The peer's own count of successful inferences for `model`."""
    if peer == "mlserver":
        url = f"http://127.0.0.1:{ports['metrics']}/metrics"
        pattern = rf'^model_infer_request_success_total\{{model="{model}",version="[^"]*"\}} (\S+)$'
    else:
        url = f"http://127.0.0.1:{ports['http']}/metrics"
        pattern = rf'^request_predict_seconds_count\{{model_name="{model}"\}} (\S+)$'
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.M))


def start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["taskset", "-c", "0", *command], stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if b"peer ready" in log.read_bytes():
            return process
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"peer did not start:\n{log.read_text(errors='replace')[-3000:]}")


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    for child in map(int, out.stdout.split()):
        found += [child, *descendants(child)]
    return found


def stop(process: subprocess.Popen[bytes]) -> tuple[int, float]:
    """SIGTERM; returns (exit status, seconds until it and all its descendants were gone)."""
    tree = descendants(process.pid)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    status = process.wait(timeout=30)
    for pid in tree:
        while Path(f"/proc/{pid}").exists() and time.monotonic() - started < 30:
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            raise RuntimeError(f"process {pid} still alive 30 s after SIGTERM")
    return status, time.monotonic() - started


def check_answers(peer: str, repo: Path, ports: dict[str, int], model: str) -> list[str]:
    x = np.random.default_rng(1).standard_normal((2, *SHAPES[model])).astype(np.float32)
    session = ort.InferenceSession(str(repo / model / "1" / "model.onnx"))
    expected = session.run(["y"], {"x": x})[0]
    got: dict[str, np.ndarray] = {}

    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{ports['grpc']}")
    tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    got["grpc"] = grpc.infer(model, [tensor]).as_numpy("y")
    grpc.close()

    http = httpclient.InferenceServerClient(f"127.0.0.1:{ports['http']}")
    for binary in (False, True) if peer == "kserve" else (False,):
        tensor = httpclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        result = http.infer(
            model,
            [tensor],
            outputs=[httpclient.InferRequestedOutput("y", binary_data=binary)],
            # tritonclient sends no Content-Type; KServe takes such a body as binary.
            headers=None if binary else {"Content-Type": "application/json"},
        )
        got["http-binary" if binary else "http-json"] = result.as_numpy("y")
    http.close()

    lines = []
    for transport, y in got.items():
        diff = float(np.max(np.abs(y - expected))) if y.shape == expected.shape else np.inf
        verdict = "ok" if diff <= TOLERANCE else "FAIL"
        lines.append(
            f"{peer} {model} {transport}: shape {list(y.shape)} max|diff| {diff:.2e} {verdict}"
        )
    return lines


def h2load(peer: str, ports: dict[str, int], model: str, n: int, work: Path) -> str:
    data = work / f"{model}.frame"
    data.write_bytes(grpc_frame(model))
    before = answered(peer, ports, model)
    out = subprocess.run(
        ["taskset", "-c", "1", "h2load", "-c", "1", "-m", "8", "-n", str(n), f"--data={data}",
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://127.0.0.1:{ports['grpc']}/inference.GRPCInferenceService/ModelInfer"],
        capture_output=True, text=True, timeout=120, check=False,
    ).stdout  # fmt: skip
    counted = answered(peer, ports, model) - before
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    rate = re.search(r"finished in (\S+), ([0-9.]+) req/s", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    if not (done and rate and mean):
        return f"{peer} {model} h2load: output not understood FAIL\n{out}"
    verdict = "ok" if int(done.group(1)) == n and counted == n else "FAIL"
    return (
        f"{peer} {model} h2load -c1 -m8 -n{n}: {done.group(1)} done, {done.group(2)} 2xx, "
        f"server counted {counted:.0f}, {rate.group(2)} req/s, mean {mean.group(1)} {verdict}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", default="mlserver,kserve")
    parser.add_argument("-n", type=int, default=2000, help="h2load requests per model")
    parser.add_argument("--mlserver-args", default="", help="more flags for mlserver_peer.py")
    parser.add_argument("--kserve-args", default="", help="more flags for kserve_onnx.py")
    args = parser.parse_args()
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="check-peers-") as tmp:
        work = Path(tmp)
        repo = work / "models"
        for name, build in BUILDERS.items():
            examples.write_model(repo, name, build())
        for peer in args.peers.split(","):
            ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
            log = work / f"{peer}.log"
            extra = shlex.split(getattr(args, f"{peer}_args"))
            process = start(peer_command(peer, repo, ",".join(BUILDERS), ports, extra), log)
            try:
                for model in BUILDERS:
                    lines += check_answers(peer, repo, ports, model)
                for model in ("mlp", "convnet"):
                    lines.append(h2load(peer, ports, model, args.n, work))
            finally:
                status, seconds = stop(process)
            lines.append(
                f"{peer} SIGTERM: exit {status} after {seconds:.1f}s "
                f"{'ok' if status in (0, -signal.SIGTERM) else 'FAIL'}"
            )
            if any(line.endswith("FAIL") for line in lines):
                print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
    print("\n".join(lines))
    return 1 if any("FAIL" in line for line in lines) else 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
