"""The `mlserve` command line against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ServerProcess

CLI = [sys.executable, "-m", "mlserve.cli.main"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, check=False)


def test_version() -> None:
    from mlserve import __version__

    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"mlserve {__version__}"


def test_infer_over_both_transports(server: ServerProcess, tmp_path: Path) -> None:
    row = np.arange(4, dtype=np.float32)
    np.save(tmp_path / "x.npy", row)
    (tmp_path / "x.json").write_text(json.dumps(row.tolist()))
    outputs = []
    for flags in (["--grpc", "--url", server.grpc], ["--http", "--url", server.http]):
        for file in ("x.npy", "x.json"):
            result = run("infer", "two_output", "--input", f"x={tmp_path / file}", *flags)
            assert result.returncode == 0, result.stderr
            outputs.append(result.stdout)
    assert len(set(outputs)) == 1
    assert "twice float32 [1, 4]" in outputs[0] and "[[0. 2. 4. 6.]]" in outputs[0]


def test_errors_are_reported_not_raised(server: ServerProcess, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros(3, np.float32))
    result = run("infer", "mlp", "--input", f"x={tmp_path / 'x.npy'}", "--url", server.grpc)
    assert result.returncode == 2
    assert "INVALID_ARGUMENT" in result.stderr and "shape [1, 3]" in result.stderr
    result = run("infer", "mlp", "--input", "x", "--url", server.grpc)
    assert result.returncode == 2 and "NAME=FILE" in result.stderr


def test_models_lists_the_index(server: ServerProcess) -> None:
    result = run("models", "--http", "--url", server.http)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {"name": "mlp", "version": "1", "state": "READY", "reason": ""} in rows


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("taken_kind", ["http", "metrics"])
def test_a_port_in_use_is_a_clear_error(
    server: ServerProcess, model_repository: Path, workers: str, taken_kind: str
) -> None:
    """One process or a supervisor of two: a taken port is named, exit status 2."""
    taken = getattr(server, taken_kind).rsplit(":", 1)[1]
    ports = {"http": "0", "metrics": "0", taken_kind: taken}
    result = subprocess.run(
        [
            *CLI,
            "serve",
            "--model-repository",
            str(model_repository),
            "--http-port",
            ports["http"],
            "--http-address",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--metrics-port",
            ports["metrics"],
            "--metrics-address",
            "127.0.0.1",
            "--workers",
            workers,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "cannot listen" in result.stderr and taken in result.stderr
    assert "Traceback" not in result.stderr
