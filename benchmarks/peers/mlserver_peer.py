"""Start MLServer 1.7.1 on a Triton-layout ONNX repository (the MLServer peer).

    .venv-mlserver/bin/python benchmarks/peers/mlserver_peer.py \\
        --model-repository DIR --models mlp,convnet \\
        --http-port 8000 --grpc-port 8001 [--metrics-port 8002] \\
        [--no-adaptive-batching] [--max-batch-size 64] [--max-batch-time-s 0.001] \\
        [--parallel-workers 0] [--intra-op-threads 1]

Writes settings.json and one model-settings.json per model (runtime:
mlserver_onnx.OnnxModel on DIR/<model>/1/model.onnx) into a temporary folder,
runs `mlserver start` on it as a child in its own process group, prints
`peer ready` once /v2/health/ready and every /v2/models/<m>/ready answer 200,
and stays in the foreground until SIGTERM or SIGINT, which it forwards to the
whole group (parallel workers included). Metrics (Prometheus, with
model_infer_request_success per model) are served only when --metrics-port is
given. Exits with the child's status.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any

from peer_common import model_file

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--models", required=True, help="comma-separated model names")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--grpc-port", type=int, default=8081)
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="serve /metrics here (default: off)"
    )
    parser.add_argument("--adaptive-batching", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-batch-time-s", type=float, default=0.001)
    parser.add_argument("--parallel-workers", type=int, default=0)
    parser.add_argument("--intra-op-threads", type=int, default=1)
    parser.add_argument("--ready-timeout-s", type=float, default=120.0)
    return parser.parse_args(argv)


def write_settings(args: argparse.Namespace, names: list[str], folder: Path) -> None:
    settings: dict[str, Any] = {
        "debug": False,  # MLServer's default (True) logs every request
        "host": HOST,
        "http_port": args.http_port,
        "grpc_port": args.grpc_port,
        "parallel_workers": args.parallel_workers,
        "load_models_at_startup": True,
        "model_repository_root": str(folder),
        "metrics_endpoint": "/metrics" if args.metrics_port else None,
        "metrics_port": args.metrics_port or 0,
        "metrics_dir": str(folder / ".metrics"),
        "environments_dir": str(folder / ".envs"),
    }
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    for name in names:
        model: dict[str, Any] = {
            "name": name,
            "implementation": "mlserver_onnx.OnnxModel",
            "platform": "onnxruntime",
            "parameters": {
                "uri": str(model_file(args.model_repository, name)),
                "extra": {"intra_op_threads": args.intra_op_threads},
            },
        }
        if args.adaptive_batching:
            model["max_batch_size"] = args.max_batch_size
            model["max_batch_time"] = args.max_batch_time_s
        (folder / name).mkdir()
        (folder / name / "model-settings.json").write_text(json.dumps(model, indent=2))


def answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(
    child: subprocess.Popen[bytes], http_port: int, names: list[str], timeout_s: float
) -> bool:
    base = f"http://{HOST}:{http_port}/v2"
    urls = [f"{base}/health/ready", *(f"{base}/models/{name}/ready" for name in names)]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and child.poll() is None:
        if all(answers_200(url) for url in urls):
            return True
        time.sleep(0.2)
    return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [name for name in args.models.split(",") if name]
    folder = Path(tempfile.mkdtemp(prefix="mlserver-peer-"))
    try:
        write_settings(args, names, folder)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        command = [str(Path(sys.executable).parent / "mlserver"), "start", str(folder)]
        child = subprocess.Popen(command, cwd=folder, env=env, start_new_session=True)

        def forward(signum: int, _frame: FrameType | None) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signum)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, forward)
        ready = wait_ready(child, args.http_port, names, args.ready_timeout_s)
        if ready:
            print("peer ready", flush=True)
        else:
            print("peer failed to become ready", file=sys.stderr, flush=True)
            forward(signal.SIGTERM, None)
        try:
            status = child.wait()
            return status if ready else status or 1
        finally:
            # Whatever is left of the group (a stuck worker): give it a moment, then kill.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.killpg(child.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.killpg(child.pid, signal.SIGKILL)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
