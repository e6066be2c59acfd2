"""Pure-Python twin of the ModelInferRequest fast decoder.

Most inference requests use a small part of `ModelInferRequest`: the model's
name and version, an id, and per input a name, datatype, shape and one
`raw_input_contents` entry. Reading those straight from the wire skips
building the protobuf message and then reading it back field by field; given
the fixed-size datatypes' numpy dtypes, it also makes each tensor's array, a
read-only view of the request (one object where a memoryview, `np.frombuffer`
and `reshape` made three: decoding and building the MLP's request took 2.2 us
against 4.0, in a loop). Any
request outside that subset (parameters, typed `contents`, requested-output
parameters, inputs without raw contents, unknown fields, anything malformed)
returns None, and the caller decodes it with protobuf, which also words the
errors.

The answer goes the other way: `encode_infer_response` writes the
ModelInferResponse bytes from the fields a response has (no parameters),
copying each output's data once, where protobuf would build the message, copy
each output into it and serialize it. `_infer_codec.pyx` must match this module."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

SimpleInput = tuple[str, str, tuple[int, ...], memoryview | np.ndarray]
SimpleRequest = tuple[str, str, str, list[SimpleInput], list[str]]


class _NotSimple(Exception):
    pass


def _varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _NotSimple
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _length(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    size, pos = _varint(data, pos, end)
    if size > end - pos:
        raise _NotSimple
    return pos, pos + size


def _text(data: memoryview, start: int, stop: int) -> str:
    try:
        return bytes(data[start:stop]).decode("utf-8")
    except UnicodeDecodeError:
        raise _NotSimple from None


def _input(data: memoryview, pos: int, end: int) -> tuple[str, str, tuple[int, ...]]:
    name = datatype = ""
    shape: list[int] = []
    while pos < end:
        key, pos = _varint(data, pos, end)
        field, wire = key >> 3, key & 7
        if field == 3 and wire == 0:  # unpacked shape element
            value, pos = _varint(data, pos, end)
            shape.append(_signed(value))
            continue
        if wire != 2:
            raise _NotSimple
        start, pos = _length(data, pos, end)
        if field == 1:
            name = _text(data, start, pos)
        elif field == 2:
            datatype = _text(data, start, pos)
        elif field == 3:  # packed shape
            at = start
            while at < pos:
                value, at = _varint(data, at, pos)
                shape.append(_signed(value))
        else:  # parameters, contents, unknown: not simple
            raise _NotSimple
    return name, datatype, tuple(shape)


def _output(data: memoryview, pos: int, end: int) -> str:
    name = ""
    while pos < end:
        key, pos = _varint(data, pos, end)
        if key != (1 << 3 | 2):  # only the name
            raise _NotSimple
        start, pos = _length(data, pos, end)
        name = _text(data, start, pos)
    return name


def decode_simple_infer(
    data: bytes, dtypes: Mapping[str, np.dtype] | None = None
) -> SimpleRequest | None:
    """(model_name, model_version, id, [(name, datatype, shape, raw)], [output
    names]) for a request in the simple subset, else None. `raw` is a view of
    `data` (no copy): an array of `shape` where `dtypes` has the datatype and
    the bytes are exactly what the shape needs, else a memoryview (BYTES, or a
    size the caller words an error for)."""
    view = memoryview(data)
    end = len(view)
    pos = 0
    model_name = model_version = request_id = ""
    tensors: list[tuple[str, str, tuple[int, ...]]] = []
    raws: list[memoryview] = []
    outputs: list[str] = []
    try:
        while pos < end:
            key, pos = _varint(view, pos, end)
            field, wire = key >> 3, key & 7
            if wire != 2:
                return None
            start, pos = _length(view, pos, end)
            if field == 1:
                model_name = _text(view, start, pos)
            elif field == 2:
                model_version = _text(view, start, pos)
            elif field == 3:
                request_id = _text(view, start, pos)
            elif field == 5:
                tensors.append(_input(view, start, pos))
            elif field == 6:
                outputs.append(_output(view, start, pos))
            elif field == 7:
                raws.append(view[start:pos])
            else:  # parameters, unknown
                return None
    except _NotSimple:
        return None
    if not tensors or len(raws) != len(tensors):
        return None
    inputs: list[SimpleInput] = [
        (n, d, s, _as_array(raw, dtypes.get(d), s) if dtypes else raw)
        for (n, d, s), raw in zip(tensors, raws, strict=True)
    ]
    return model_name, model_version, request_id, inputs, outputs


def _as_array(
    raw: memoryview, dtype: np.dtype | None, shape: tuple[int, ...]
) -> memoryview | np.ndarray:
    if dtype is None or len(shape) > _MAX_DIMS or any(d < 0 for d in shape):
        return raw
    count = 1
    for dim in shape:
        count *= dim
    if count * dtype.itemsize != len(raw):
        return raw
    return np.frombuffer(raw, dtype).reshape(shape)


_MAX_DIMS = 32  # numpy 1's limit (2 allows 64): more is left to the caller


def raw_array(
    data: bytes, start: int, stop: int, dtype: np.dtype, shape: tuple[int, ...]
) -> np.ndarray | None:
    """A read-only array of `shape` over data[start:stop], no copy made (the
    HTTP binary extension's tensors, in the body they came in); None where
    the bytes are not exactly what the shape needs, for the caller to word
    the error. One C call compiled, where numpy's frombuffer and reshape
    take two Python calls."""
    if not 0 <= start <= stop <= len(data):
        return None
    array = _as_array(memoryview(data)[start:stop], dtype, shape)
    return array if isinstance(array, np.ndarray) else None


# -- ModelInferResponse, written straight to the wire ------------------------

# One answer tensor: name, datatype, shape and its raw bytes (anything with the
# buffer protocol, C-contiguous: bytes, or a numpy array's data).
WireOutput = tuple[str, str, tuple[int, ...], object]


def _put_varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _put_bytes(out: bytearray, tag: int, data: bytes | bytearray) -> None:
    out.append(tag)
    _put_varint(out, len(data))
    out += data


def encode_infer_response(
    model_name: str, model_version: str, request_id: str, outputs: list[WireOutput]
) -> bytes:
    """The serialized ModelInferResponse (byte for byte what protobuf writes
    for the same fields: empty strings left out, fields in number order)."""
    out = bytearray()
    for tag, text in ((0x0A, model_name), (0x12, model_version), (0x1A, request_id)):
        if text:
            _put_bytes(out, tag, text.encode())
    raws = []
    for name, datatype, shape, raw in outputs:
        tensor = bytearray()
        if name:
            _put_bytes(tensor, 0x0A, name.encode())
        if datatype:
            _put_bytes(tensor, 0x12, datatype.encode())
        if shape:
            dims = bytearray()
            for dim in shape:
                if dim < 0:
                    raise ValueError(f"negative dimension in output shape {shape}")
                _put_varint(dims, dim)
            _put_bytes(tensor, 0x1A, dims)
        _put_bytes(out, 0x2A, tensor)
        view = memoryview(raw)  # type: ignore[arg-type]
        if not view.c_contiguous:
            raise BufferError("output raw contents must be C-contiguous")
        raws.append(view.tobytes())
    for data in raws:
        _put_bytes(out, 0x32, data)
    return bytes(out)


def wrap_stream_response(infer_response: bytes) -> bytes:
    """A ModelStreamInferResponse carrying this serialized infer_response (field 2)."""
    out = bytearray(b"\x12")
    _put_varint(out, len(infer_response))
    out += infer_response
    return bytes(out)
