"""Every integration test runs once per gRPC transport (native, grpcio): the
servers it starts use the current one (see tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, start_server
from tests.gate import Gate
from tests.integration.batching_support import write_batching_repository


@pytest.fixture(autouse=True)
def _under_each_grpc_impl(grpc_impl: str) -> str:
    return grpc_impl


@pytest.fixture(scope="module")
def batching_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The batching and queueing tests' models (batching_support.py)."""
    return write_batching_repository(tmp_path_factory.mktemp("batching"))


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Gate:
    return Gate(tmp_path_factory.mktemp("gate"))


@pytest.fixture(scope="module")
def batching_server(batching_repo: Path, gate: Gate) -> Iterator[ServerProcess]:
    """A server over batching_repo whose model runs wait at `gate`."""
    server = start_server(batching_repo, gate=gate)
    yield server
    server.terminate()
