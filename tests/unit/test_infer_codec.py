"""The ModelInferRequest fast decoder: compiled and Python twin agree with
protobuf on every request in the simple subset, step aside (None) for every
other one, and never raise on arbitrary bytes. The ModelInferResponse
encoder: both write exactly protobuf's bytes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlserve.ext import _infer_codec_py, infer_codec
from mlserve.proto import grpc_service_pb2 as pb
from mlserve.runtime.tensor_codec import FIXED_DTYPES
from tests.unit.twins import EXPECTED_IMPLEMENTATION, compiled, implementations

COMPILED: Any = compiled("infer_codec")
IMPLEMENTATIONS = implementations("infer_codec")


def test_normal_install_selects_the_compiled_decoder() -> None:
    assert infer_codec.IMPLEMENTATION == EXPECTED_IMPLEMENTATION


text = st.text(max_size=12)
shapes = st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4)


@st.composite
def requests(draw: st.DrawFn) -> tuple[pb.ModelInferRequest, bool]:
    """A request, and whether it is in the simple subset."""
    message = pb.ModelInferRequest(model_name=draw(text), model_version=draw(text), id=draw(text))
    simple = True
    count = draw(st.integers(0, 3))
    for _ in range(count):
        tensor = message.inputs.add(name=draw(text), datatype=draw(text), shape=draw(shapes))
        if draw(st.integers(0, 9)) == 0:
            tensor.parameters["k"].int64_param = 1
            simple = False
        if draw(st.integers(0, 9)) == 0:
            tensor.contents.fp32_contents.append(1.0)
            simple = False
    raw_count = count if draw(st.integers(0, 9)) else draw(st.integers(0, 3))
    for _ in range(raw_count):
        message.raw_input_contents.append(draw(st.binary(max_size=16)))
    for name in draw(st.lists(text, max_size=2)):
        output = message.outputs.add(name=name)
        if draw(st.integers(0, 9)) == 0:
            output.parameters["binary_data"].bool_param = True
            simple = False
    if draw(st.integers(0, 9)) == 0:
        message.parameters["priority"].int64_param = 2
        simple = False
    simple = simple and count > 0 and raw_count == count
    return message, simple


@pytest.mark.parametrize("codec", IMPLEMENTATIONS)
@settings(max_examples=400, deadline=None)
@given(case=requests())
def test_simple_requests_decode_as_protobuf_does(codec: Any, case: Any) -> None:
    message, simple = case
    found = codec.decode_simple_infer(message.SerializeToString())
    if not simple:
        assert found is None
        return
    assert found is not None
    name, version, request_id, inputs, outputs = found
    assert (name, version, request_id) == (message.model_name, message.model_version, message.id)
    assert [(n, d, s, bytes(r)) for n, d, s, r in inputs] == [
        (t.name, t.datatype, tuple(t.shape), raw)
        for t, raw in zip(message.inputs, message.raw_input_contents, strict=True)
    ]
    assert outputs == [o.name for o in message.outputs]


def _comparable(found: Any) -> Any:
    if found is None:
        return None
    return (*found[:3], [(*i[:3], _described(i[3])) for i in found[3]], found[4])


@settings(max_examples=600, deadline=None)
@given(data=st.binary(max_size=80))
def test_arbitrary_bytes_never_raise_and_both_agree(data: bytes) -> None:
    expected = _infer_codec_py.decode_simple_infer(data)
    with_arrays = _infer_codec_py.decode_simple_infer(data, FIXED)
    if COMPILED is not None:
        assert _comparable(COMPILED.decode_simple_infer(data)) == _comparable(expected)
        assert _comparable(COMPILED.decode_simple_infer(data, FIXED)) == _comparable(with_arrays)


FIXED = FIXED_DTYPES  # the table the server hands the decoder


@st.composite
def typed_requests(draw: st.DrawFn) -> bytes:
    """Simple requests whose raw contents often, not always, fit their shape."""
    message = pb.ModelInferRequest(model_name="m")
    for _ in range(draw(st.integers(1, 3))):
        datatype = draw(st.sampled_from([*FIXED, "BYTES", "BF16", "fp32"]))
        shape = draw(st.lists(st.integers(-2, 4), max_size=4))
        itemsize = FIXED[datatype].itemsize if datatype in FIXED else 1
        count = int(np.prod(shape)) if shape else 1
        fits = min(shape, default=0) >= 0 and draw(st.integers(0, 3)) > 0
        size = count * itemsize if fits else draw(st.integers(0, 40))
        message.inputs.add(name="x", datatype=datatype, shape=shape)
        message.raw_input_contents.append(draw(st.binary(min_size=size, max_size=size)))
    return message.SerializeToString()


def _as_expected(datatype: str, shape: tuple[int, ...], raw: bytes) -> Any:
    """What the decoder must give for one raw tensor, given FIXED."""
    dtype = FIXED.get(datatype)
    if dtype is None or min(shape, default=0) < 0:
        return ("view", raw)
    if len(raw) != int(np.prod(shape)) * dtype.itemsize:
        return ("view", raw)
    return ("array", dtype.str, shape, raw)


def _described(raw: Any) -> Any:
    if isinstance(raw, np.ndarray):
        assert not raw.flags.writeable  # a view of the request's immutable bytes
        return ("array", raw.dtype.str, raw.shape, raw.tobytes())
    assert isinstance(raw, memoryview)
    return ("view", bytes(raw))


@pytest.mark.parametrize("codec", IMPLEMENTATIONS)
@settings(max_examples=300, deadline=None)
@given(data=typed_requests())
def test_fixed_size_tensors_decode_to_arrays_of_their_shape(codec: Any, data: bytes) -> None:
    message = pb.ModelInferRequest.FromString(data)
    found = codec.decode_simple_infer(data, FIXED)
    assert found is not None
    assert [(n, d, s, _described(r)) for n, d, s, r in found[3]] == [
        (t.name, t.datatype, tuple(t.shape), _as_expected(t.datatype, tuple(t.shape), raw))
        for t, raw in zip(message.inputs, message.raw_input_contents, strict=True)
    ]


@pytest.mark.parametrize("codec", IMPLEMENTATIONS)
def test_arrays_view_the_request_at_any_alignment(codec: Any) -> None:
    values = np.arange(6, dtype=np.float64)
    for name_length in range(8):  # moves the raw contents through every offset mod 8
        message = pb.ModelInferRequest(model_name="m" * name_length)
        message.inputs.add(name="x", datatype="FP64", shape=[2, 3])
        message.raw_input_contents.append(values.tobytes())
        data = message.SerializeToString()
        found = codec.decode_simple_infer(data, FIXED)
        assert found is not None
        array = found[3][0][3]
        assert np.shares_memory(array, np.frombuffer(data, np.uint8))
        assert array.flags.aligned == (array.ctypes.data % 8 == 0)
        np.testing.assert_array_equal(array, values.reshape(2, 3))
        assert array.flags.c_contiguous and not array.flags.writeable


def test_raw_contents_are_views_of_the_request() -> None:
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    message.raw_input_contents.append(bytes(8))
    data = message.SerializeToString()
    found = infer_codec.decode_simple_infer(data)
    assert found is not None
    raw = found[3][0][3]
    assert isinstance(raw, memoryview) and raw.obj is data


# -- the ModelInferResponse encoder ---------------------------------------------

DATATYPES = {"FP32": np.float32, "INT64": np.int64, "UINT8": np.uint8, "BOOL": np.bool_}


@st.composite
def responses(draw: st.DrawFn) -> tuple[str, str, str, list[tuple[str, str, tuple[int, ...], Any]]]:
    outputs = []
    for _ in range(draw(st.integers(0, 3))):
        datatype = draw(st.sampled_from(sorted(DATATYPES)))
        shape = tuple(draw(st.lists(st.integers(0, 200), max_size=2)))
        array = np.arange(int(np.prod(shape)), dtype=np.int64).astype(DATATYPES[datatype])
        outputs.append((draw(text), datatype, shape, array.reshape(shape)))
    return draw(text), draw(text), draw(text), outputs


@pytest.mark.parametrize("codec", IMPLEMENTATIONS)
@settings(max_examples=300, deadline=None)
@given(case=responses())
def test_encoded_response_is_what_protobuf_writes(codec: Any, case: tuple) -> None:
    """Byte for byte protobuf's serialization of the same fields, alone and as
    a ModelStreamInferResponse."""
    model_name, model_version, request_id, outputs = case
    expected = pb.ModelInferResponse(
        model_name=model_name, model_version=model_version, id=request_id
    )
    for name, datatype, shape, array in outputs:
        expected.outputs.add(name=name, datatype=datatype, shape=shape)
        expected.raw_output_contents.append(array.tobytes())
    encoded = codec.encode_infer_response(model_name, model_version, request_id, outputs)
    assert encoded == expected.SerializeToString()
    stream = pb.ModelStreamInferResponse()
    stream.infer_response.CopyFrom(expected)
    assert codec.wrap_stream_response(encoded) == stream.SerializeToString()


@pytest.mark.parametrize("codec", IMPLEMENTATIONS)
def test_encoder_refuses_what_it_cannot_write(codec: Any) -> None:
    strided = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    with pytest.raises((BufferError, ValueError), match="contiguous"):
        codec.encode_infer_response("m", "1", "", [("y", "FP32", (3, 2), strided)])
    with pytest.raises(ValueError, match="negative dimension"):
        codec.encode_infer_response("m", "1", "", [("y", "FP32", (-1,), b"")])


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=64),
    span=st.tuples(st.integers(-4, 70), st.integers(-4, 70)),
    datatype=st.sampled_from(sorted(FIXED_DTYPES)),
    shape=st.lists(st.integers(-2, 6), max_size=3).map(tuple),
)
@pytest.mark.parametrize("codec", IMPLEMENTATIONS)
def test_raw_array_is_a_view_of_exactly_the_bytes_a_shape_needs_or_none(
    codec: Any, data: bytes, span: tuple[int, int], datatype: str, shape: tuple[int, ...]
) -> None:
    """HTTP binary tensors: data[start:start+length] as an array of `shape`
    when those bytes are in range and exactly what the shape needs (read-only,
    no copy), None otherwise; compiled and twin agree."""
    dtype = FIXED_DTYPES[datatype]
    start, length = span
    stop = start + length
    out = codec.raw_array(data, start, stop, dtype, shape)
    fits = (
        0 <= start <= stop <= len(data)
        and min(shape, default=0) >= 0
        and int(np.prod(shape)) * dtype.itemsize == length
    )
    if not fits:
        assert out is None
        return
    assert out is not None
    expected = np.frombuffer(data[start:stop], dtype=dtype).reshape(shape)
    assert out.shape == shape and out.dtype == dtype
    np.testing.assert_array_equal(out, expected)
    assert not out.flags.writeable
