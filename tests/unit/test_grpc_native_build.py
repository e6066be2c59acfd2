"""The native gRPC transport is built wherever mlserve is installed normally."""

from __future__ import annotations

import os

import pytest

from mlserve.runtime import grpc_native


def test_normal_install_has_the_native_transport() -> None:
    if os.environ.get("MLSERVE_NO_EXTENSIONS") == "1":
        assert not grpc_native.AVAILABLE
        assert "MLSERVE_NO_EXTENSIONS" in grpc_native.UNAVAILABLE_REASON
    else:
        assert grpc_native.AVAILABLE, grpc_native.UNAVAILABLE_REASON


@pytest.mark.skipif(not grpc_native.AVAILABLE, reason=grpc_native.UNAVAILABLE_REASON)
@pytest.mark.parametrize(
    ("message", "wire"),
    [
        ("plain text: ok", b"plain text: ok"),
        ("100% sure", b"100%25 sure"),
        ("line\nbreak", b"line%0Abreak"),
        ("caf\u00e9", b"caf%C3%A9"),
    ],
)
def test_grpc_message_is_percent_encoded(message: str, wire: bytes) -> None:
    from mlserve.ext._grpc_h2 import percent_encode

    assert percent_encode(message) == wire
