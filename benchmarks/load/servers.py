"""The servers under test, each a real process pinned to the server core:
mlserve, the transport floors, and the peers (MLServer, KServe) from
benchmarks/peers/. Also what the runner reads from them: CPU time of the
whole process tree, mlserve's success counter, and the time onnxruntime took
inside mlserve per batch size."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc

from mlserve.loopback import serve_command

ROOT = Path(__file__).resolve().parents[2]
SERVER_CPU = "0"
MLSERVER_PYTHON = ROOT / ".venv-mlserver" / "bin" / "python"
KSERVE_PYTHON = ROOT / ".venv-kserve" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Ports:
    grpc: int
    http: int
    metrics: int

    @staticmethod
    def pick() -> Ports:
        return Ports(free_port(), free_port(), free_port())


class Server:
    """A server process pinned to the server core, in its own process group
    (so SIGTERM reaches every worker it spawns)."""

    def __init__(self, name: str, command: list[str], ready_pattern: str, ports: Ports) -> None:
        self.name = name
        self.ports = ports
        self.process = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        self.lines: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if re.search(ready_pattern, line):
                return
        self.stop()
        raise RuntimeError(f"{name} did not start:\n" + "".join(self.lines[-40:]))

    def cpu_seconds(self) -> float:
        """User + system time of the server and all its descendants, alive now."""
        return sum(_cpu_seconds(pid) for pid in _tree(self.process.pid))

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue
    return out


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # exited between listing and reading
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_mlserve(repo: Path, grpc_impl: str = "native") -> Server:
    """mlserve on its native gRPC transport (named "mlserve") or on grpcio
    ("mlserve-grpcio")."""
    ports = Ports.pick()
    command = serve_command(
        repo,
        "--grpc-impl",
        grpc_impl,
        grpc_port=ports.grpc,
        http_port=ports.http,
        metrics_port=ports.metrics,
    )
    name = "mlserve" if grpc_impl == "native" else f"mlserve-{grpc_impl}"
    return Server(name, command, r"mlserve ready: True", ports)


def start_floor(kind: str, response_file: Path) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.load.floors", kind, str(port), str(response_file)]
    ports = Ports(grpc=port, http=port, metrics=0)
    return Server(f"floor-{kind}", command, r"floor listening", ports)


def peers_available() -> dict[str, bool]:
    return {"mlserver": MLSERVER_PYTHON.exists(), "kserve": KSERVE_PYTHON.exists()}


def tool_versions() -> dict[str, str]:
    """Versions of the load generators and of the peers, for results.json."""
    probes = {
        "h2load": ["h2load", "--version"],
        "wrk": ["wrk", "-v"],
        "mlserver": [str(MLSERVER_PYTHON), "-c", "import mlserver; print(mlserver.__version__)"],
        "kserve": [
            str(KSERVE_PYTHON),
            "-c",
            "from importlib.metadata import version; print(version('kserve'))",
        ],
    }
    out = {}
    for name, command in probes.items():
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        except OSError:
            out[name] = "not installed"
            continue
        text = (proc.stdout + proc.stderr).strip().splitlines()
        out[name] = text[0] if text else f"exit {proc.returncode}"
    return out


def start_mlserver(repo: Path, models: list[str]) -> Server:
    ports = Ports.pick()
    command = [
        str(MLSERVER_PYTHON), "benchmarks/peers/mlserver_peer.py", "--model-repository",
        str(repo), "--models", ",".join(models), "--http-port", str(ports.http),
        "--grpc-port", str(ports.grpc), "--metrics-port", str(ports.metrics),
    ]  # fmt: skip
    return Server("mlserver", command, r"peer ready", ports)


def start_kserve(repo: Path, models: list[str]) -> Server:
    ports = Ports.pick()
    command = [
        str(KSERVE_PYTHON), "benchmarks/peers/kserve_onnx.py", "--model-repository", str(repo),
        "--models", ",".join(models), "--http-port", str(ports.http),
        "--grpc-port", str(ports.grpc),
    ]  # fmt: skip
    return Server("kserve", command, r"peer ready", ports)


def mlserve_successes(server: Server, model: str) -> float:
    """mlserve_request_success_total for one model, from the metrics endpoint."""
    return _metric(server, "mlserve_request_success_total", model=model, version="1")


def mlserve_cancelled(server: Server, model: str) -> float:
    """Requests of one model withdrawn because their client left."""
    return _metric(
        server, "mlserve_request_failure_total", model=model, version="1", reason="cancelled"
    )


_SERIES = re.compile(r"^(\w+)\{(.*)\} ([0-9.e+]+)$", re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def _metric(server: Server, name: str, **labels: str) -> float:
    """The value of the series `name` with exactly these labels, in any
    order (0 if absent)."""
    url = f"http://127.0.0.1:{server.ports.metrics}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(value)
        for series, found, value in _SERIES.findall(text)
        if series == name and dict(_LABEL.findall(found)) == labels
    )


def mlserve_compute(server: Server, model: str) -> dict[int, tuple[int, int]]:
    """{batch size: (batches, onnxruntime ns)} so far for one model, from the V2
    statistics' batch_stats (compute_infer: the model's run alone)."""
    url = f"http://127.0.0.1:{server.ports.http}/v2/models/{model}/stats"
    with urllib.request.urlopen(url, timeout=10) as response:
        stats = json.loads(response.read())
    return {
        int(entry["batch_size"]): (entry["compute_infer"]["count"], entry["compute_infer"]["ns"])
        for version in stats["model_stats"]
        for entry in version["batch_stats"]
    }


def grpc_answer(port: int, message: bytes) -> bytes:
    """One raw ModelInfer call; the serialized answer, whose size lets the
    runner count h2load's successes from the DATA bytes it received."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=None,
            response_deserializer=None,
        )
        answer: bytes = call(message, timeout=30)
        return answer
