"""The BYTES tensor codec: compiled and pure-Python twins behave identically."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlserve.ext import _bytes_codec_py, bytes_codec
from mlserve.ext._bytes_codec_py import BytesTensorError
from tests.unit.twins import EXPECTED_IMPLEMENTATION, implementations


@pytest.fixture(params=implementations("bytes_codec"))
def codec(request: pytest.FixtureRequest):
    return request.param


def test_normal_install_selects_the_compiled_codec() -> None:
    assert bytes_codec.IMPLEMENTATION == EXPECTED_IMPLEMENTATION


def test_known_encoding(codec) -> None:
    array = np.array([[b"ab", "\u00e9"], [b"", b"xyz"]], dtype=object)
    encoded = codec.encode_bytes_tensor(array)
    assert encoded == (
        struct.pack("<I", 2)
        + b"ab"
        + struct.pack("<I", 2)
        + "\u00e9".encode()
        + struct.pack("<I", 0)
        + struct.pack("<I", 3)
        + b"xyz"
    )
    decoded = codec.decode_bytes_tensor(encoded, 4)
    assert decoded.tolist() == [b"ab", "\u00e9".encode(), b"", b"xyz"]
    assert codec.decode_bytes_tensor(encoded, 4, True).tolist() == ["ab", "\u00e9", "", "xyz"]


@given(st.lists(st.binary(max_size=64), max_size=40))
def test_round_trip_and_twins_agree(items: list[bytes]) -> None:
    array = np.empty(len(items), dtype=object)  # object array even when items are equal-length
    array[:] = items
    for codec in [p.values[0] for p in implementations("bytes_codec") if p.values[0] is not None]:
        encoded = codec.encode_bytes_tensor(array)
        assert encoded == _bytes_codec_py.encode_bytes_tensor(array)
        assert codec.decode_bytes_tensor(encoded, len(items)).tolist() == items


@pytest.mark.parametrize(
    ("buffer", "count", "message"),
    [
        (struct.pack("<I", 3) + b"abc" + b"\x00\x00", 2, "element 1: buffer ends at byte 9"),
        (struct.pack("<I", 5) + b"abc", 1, "length prefix says 5 bytes"),
        (struct.pack("<I", 1) + b"a" + b"zz", 1, "2 trailing bytes"),
        # A shape may claim any count: refused before anything is allocated.
        (b"\x01\x00", 1, "the shape claims 1 elements, but 2 bytes hold at most 0"),
        (struct.pack("<I", 1) + b"a", 2, "claims 2 elements, but 5 bytes hold at most 1"),
        (b"", 1 << 40, "claims 1099511627776 elements, but 0 bytes hold at most 0"),
    ],
)
def test_malformed_buffers_name_the_problem(codec, buffer: bytes, count: int, message: str) -> None:
    with pytest.raises(BytesTensorError, match=message):
        codec.decode_bytes_tensor(buffer, count)


def test_invalid_utf8_refused_in_text_mode(codec) -> None:
    buffer = struct.pack("<I", 2) + b"\xff\xfe"
    assert codec.decode_bytes_tensor(buffer, 1).tolist() == [b"\xff\xfe"]
    with pytest.raises(BytesTensorError, match="element 0 is not valid UTF-8"):
        codec.decode_bytes_tensor(buffer, 1, True)
