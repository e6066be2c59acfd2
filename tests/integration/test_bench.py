"""`mlserve bench` against a real server: every transport it speaks, its counts
checked against the server's own statistics, and a setup error reported in
one line."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlserve import examples
from tests.conftest import ServerProcess, start_server

CLI = [sys.executable, "-m", "mlserve.cli.main", "bench"]


@pytest.fixture(scope="module")
def bench_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("bench_models")
    examples.write_model(root, "mlp", examples.mlp_model(), config="max_batch_size: 8\n")
    server = start_server(root)
    yield server
    server.terminate()


def successes(server: ServerProcess, model: str = "mlp") -> int:
    """The V2 statistics extension's success count for the model."""
    with urllib.request.urlopen(f"http://{server.http}/v2/models/{model}/stats") as response:
        stats = json.loads(response.read())
    return sum(int(s["inference_stats"]["success"]["count"]) for s in stats["model_stats"])


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(["-i", "grpc"], id="grpc"),
        pytest.param(["-i", "grpc", "--streaming"], id="grpc-streaming"),
        pytest.param(["-i", "http", "--binary"], id="http-binary"),
        pytest.param(["-i", "http", "--json-body"], id="http-json"),
    ],
)
def test_counts_match_the_server(
    bench_server: ServerProcess, tmp_path: Path, flags: list[str]
) -> None:
    url = bench_server.http if "http" in flags else bench_server.grpc
    report = tmp_path / "bench.json"
    before = successes(bench_server)
    result = bench(
        "-m", "mlp", "-u", url, *flags, "--concurrency", "4", "--processes", "2",
        "--duration", "1.5", "--warmup", "0.3", "-b", "2", "--json", str(report),
    )  # fmt: skip
    after = successes(bench_server)
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(report.read_text())
    (level,) = doc["levels"]
    assert level["concurrency"] == 4 and level["processes"] == 2
    assert level["errors"] == 0 and level["warmup_errors"] == 0 and level["requests"] > 0
    # Every request the server answered is accounted for: measured, warmup, check.
    assert after - before == doc["successful_requests_total"]
    assert doc["successful_requests_total"] == (
        level["requests"] + level["warmup_requests"] + doc["check_requests"]
    )
    assert doc["rows_per_request"] == 2
    assert level["throughput"]["infer_per_s"] == pytest.approx(
        2 * level["throughput"]["requests_per_s"], rel=1e-3
    )
    latency = level["latency_us"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p99"] <= latency["max"]
    row = result.stdout.splitlines()[1].split()
    assert row[:3] == ["4", str(level["requests"]), "0"]


def test_request_count_mode_sends_exactly_that_many(bench_server: ServerProcess) -> None:
    before = successes(bench_server)
    result = bench(
        "-m", "mlp", "-u", bench_server.grpc, "--concurrency", "3",
        "--processes", "2", "--requests", "301", "--warmup", "0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert successes(bench_server) - before == 301 + 1  # and the check request
    assert result.stdout.splitlines()[1].split()[:3] == ["3", "301", "0"]


def test_unknown_model_is_a_one_line_error(bench_server: ServerProcess) -> None:
    for url, protocol in ((bench_server.grpc, "grpc"), (bench_server.http, "http")):
        result = bench("-m", "no_such_model", "-u", url, "-i", protocol, "--duration", "1")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "no_such_model" in lines[0], result.stderr
        assert result.stdout == ""
