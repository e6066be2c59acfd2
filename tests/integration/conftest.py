"""Every integration test runs once per gRPC transport (native, grpcio): the
servers it starts use the current one (see tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _under_each_grpc_impl(grpc_impl: str) -> str:
    return grpc_impl
