"""Shared fixtures: model repositories built with onnx.helper, and a real
`mlserve serve` process on free ports."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlserve import examples
from mlserve.loopback import serve_command
from tests.gate import ENV as GATE_ENV
from tests.gate import Gate

REPO = Path(__file__).resolve().parents[1]


@dataclass
class ServerProcess:
    """A running `mlserve serve` and the addresses it announced."""

    process: subprocess.Popen[str]
    grpc: str = ""
    http: str = ""
    metrics: str = ""
    ready: bool = False
    grpc_impl: str = ""
    lines: list[str] = field(default_factory=list)
    pump: threading.Thread | None = None

    def output(self) -> str:
        return "".join(self.lines)

    def rss_kib(self) -> int:
        """The server process's resident memory, KiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
        return int(next(line.split()[1] for line in status if line.startswith("VmRSS")))

    def wait_for_line(self, pattern: str, timeout_s: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                match = re.search(pattern, line)
                if match:
                    return match
            seen = len(self.lines)
            if self.process.poll() is not None and seen == len(self.lines):
                break
            time.sleep(0.02)
        raise AssertionError(f"server never printed /{pattern}/; output:\n{self.output()}")

    def terminate(self, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            if self.pump is not None:
                self.pump.join(timeout=5)
            if self.process.stdout is not None:
                self.process.stdout.close()


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    """The sum of a Prometheus series' samples whose labels include `labels`."""
    with urllib.request.urlopen(f"http://{server.metrics}/metrics") as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def succeeded(server: ServerProcess, model: str) -> int:
    """How many requests `model` has answered successfully (V2 statistics)."""
    with urllib.request.urlopen(f"http://{server.http}/v2/models/{model}/stats") as response:
        stats = json.load(response)["model_stats"][0]["inference_stats"]
    return int(stats["success"].get("count", 0))


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = 60.0) -> None:
    """Poll `condition` until it holds. The bound is for a hang only: a test
    waits on the condition itself, never on how long it usually takes."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(0.005)


def infer_concurrently(
    address: str,
    model: str,
    inputs: list[Any],
    timeout_s: float = 60.0,
    while_waiting: Callable[[], None] | None = None,
) -> list[Any]:
    """Send every input ("x", FP32) at once with tritonclient's async_infer
    and return each answer's "y", in input order; fails on any error.
    `while_waiting` runs once all are sent, before the answers are awaited
    (a test waits there for them to queue, then opens its gate)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(address)
    results: dict[int, Any] = {}
    errors: list[object] = []
    done = threading.Semaphore(0)

    def callback(index: int, result: Any, error: object) -> None:
        if error is not None:
            errors.append(error)
        else:
            results[index] = result.as_numpy("y")
        done.release()

    for index, x in enumerate(inputs):
        tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        client.async_infer(
            model, [tensor], callback=lambda result, error, i=index: callback(i, result, error)
        )
    if while_waiting is not None:
        while_waiting()
    for _ in inputs:
        assert done.acquire(timeout=timeout_s), "an answer never came"
    assert not errors, errors[:3]
    return [results[index] for index in range(len(inputs))]


GRPC_IMPLS = ("native", "grpcio")
_grpc_impl = {"current": GRPC_IMPLS[0]}


@pytest.fixture(scope="session", params=GRPC_IMPLS)
def grpc_impl(request: pytest.FixtureRequest) -> str:
    """The gRPC transport the servers of these tests run (integration tests run
    under each one: tests/integration/conftest.py asks for it)."""
    _grpc_impl["current"] = request.param
    return str(request.param)


def start_server(
    repository: Path,
    *extra: str,
    wait_ready: bool = True,
    env: dict[str, str] | None = None,
    workers: str | None = "1",
    gate: Gate | None = None,
) -> ServerProcess:
    """Start `mlserve serve` on free loopback ports; returns once it is ready.
    The gRPC transport is the current `grpc_impl` unless `extra` names one;
    one serving process unless `workers` says otherwise (None: the default).
    With `gate`, the server's model runs wait at it (tests/gate.py)."""
    impl = () if "--grpc-impl" in extra else ("--grpc-impl", _grpc_impl["current"])
    command = serve_command(repository, *impl, *extra, workers=workers)
    environment = {**os.environ, **(env or {})}
    if gate is not None:
        assert workers == "1", "the gate patches one serving process"
        command[command.index("mlserve.cli.main")] = "tests.gated_serve"
        environment[GATE_ENV] = str(gate.directory)
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO), environment.get("PYTHONPATH")])
        )
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )
    server = ServerProcess(process)

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            server.lines.append(line)

    server.pump = threading.Thread(target=pump, daemon=True)
    server.pump.start()
    try:
        match = server.wait_for_line(r"mlserve listening: (.*)")
        for item in match.group(1).split():
            key, _, value = item.partition("=")
            setattr(server, key, value)
        if wait_ready:
            server.wait_for_line(r"mlserve ready: (True|False)")
            server.ready = True
    except BaseException:
        server.terminate(timeout_s=5)
        raise
    return server


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with one model per datatype under test plus mlp and two_output."""
    root = tmp_path_factory.mktemp("models")
    examples.write_model(root, "mlp", examples.mlp_model(), config="max_batch_size: 8\n")
    examples.write_model(root, "two_output", examples.two_output_model())
    examples.write_model(
        root, "identity_fixed", examples.identity_model("FP32", (2, 3), batch=False)
    )
    for datatype in (
        "FP32",
        "FP16",
        "FP64",
        "BOOL",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "BYTES",
    ):
        examples.write_model(
            root, f"identity_{datatype.lower()}", examples.identity_model(datatype, (4,))
        )
    return root


@pytest.fixture(scope="session")
def server(model_repository: Path, grpc_impl: str) -> Iterator[ServerProcess]:
    """One shared server over `model_repository` (tests must not change its state)."""
    process = start_server(
        model_repository, "--http-max-input-size", "1048576", "--grpc-max-input-size", "1048576"
    )
    yield process
    process.terminate()
