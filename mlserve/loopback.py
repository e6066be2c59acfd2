"""The command line of an `mlserve serve` on 127.0.0.1, for the tests,
benchmarks and scripts that start a server of their own (one spelling of the
flags, so they all start the same server)."""

from __future__ import annotations

import sys
from pathlib import Path


def serve_command(
    repository: Path | str,
    *extra: str,
    grpc_port: int = 0,
    http_port: int = 0,
    metrics_port: int = 0,
    workers: str | None = "1",
) -> list[str]:
    """`python -m mlserve.cli.main serve` on loopback; port 0 picks a free one
    (the chosen ports are on the `mlserve listening:` line). One serving
    process unless `workers` says otherwise (None: the server's default,
    `auto`): tests and benchmarks measure one process and its batches."""
    workers_flag = () if workers is None else ("--workers", workers)
    return [
        sys.executable, "-m", "mlserve.cli.main", "serve",
        "--model-repository", str(repository),
        "--grpc-port", str(grpc_port), "--http-port", str(http_port),
        "--metrics-port", str(metrics_port),
        "--grpc-address", "127.0.0.1", "--http-address", "127.0.0.1",
        "--metrics-address", "127.0.0.1",
        *workers_flag,
        *extra,
    ]  # fmt: skip
