"""Raw tensor bytes <-> numpy, shared by gRPC `raw_*_contents` and HTTP's binary
tensor extension. Checks every length against shape x element size and names
the tensor in every error."""

from __future__ import annotations

import math

import numpy as np

from mlserve.errors import InvalidRequest
from mlserve.ext.bytes_codec import BytesTensorError, decode_bytes_tensor, encode_bytes_tensor
from mlserve.runtime import datatypes

MAX_ELEMENTS = 2**63 - 1  # int64: numpy's and onnxruntime's dimension type


def check_shape(name: str, shape: tuple[int, ...]) -> int:
    """Element count of `shape`; refuses negative dimensions, and counts no
    tensor can have (past int64, where numpy and the C codecs would overflow)."""
    if shape and min(shape) < 0:
        raise InvalidRequest(
            f"input '{name}': shape {list(shape)} has a negative dimension; "
            "request shapes must be concrete"
        )
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise InvalidRequest(
            f"input '{name}': shape {list(shape)} has {count} elements, more than any "
            f"tensor can hold ({MAX_ELEMENTS})"
        )
    return count


def lookup_datatype(name: str, datatype: str) -> datatypes.Datatype:
    found = datatypes.BY_NAME.get(datatype)
    if found is None:
        raise InvalidRequest(
            f"input '{name}': unknown datatype '{datatype}'; "
            f"expected one of {', '.join(datatypes.NAMES)}"
        )
    return found


# Fixed-size datatypes whose raw bytes are taken as they are: the common case,
# decoded on a short path here and by decoders that make the arrays themselves
# (ext.infer_codec). Not BOOL: its bytes are checked to be 0 or 1 (array_from_raw).
FIXED_DTYPES: dict[str, np.dtype] = {
    d.name: d.numpy
    for d in datatypes.BY_NAME.values()
    if d.numpy is not None and d.itemsize and d.name != "BOOL"
}


def array_from_raw(
    name: str,
    datatype: str,
    shape: tuple[int, ...],
    raw: bytes | memoryview,
    *,
    text: bool = True,
) -> np.ndarray:
    """Decode one tensor's raw bytes; `text` decodes BYTES elements to str."""
    fixed = FIXED_DTYPES.get(datatype)
    if (
        fixed is not None
        and (not shape or min(shape) >= 0)
        and len(raw) == math.prod(shape) * fixed.itemsize
    ):
        return np.frombuffer(raw, dtype=fixed).reshape(shape)
    # Anything else, valid (BYTES) or not (the errors are worded below).
    dt = lookup_datatype(name, datatype)
    count = check_shape(name, shape)
    if dt.name == "BYTES":
        try:
            flat = decode_bytes_tensor(raw, count, text)
        except BytesTensorError as exc:
            raise InvalidRequest(
                f"input '{name}': BYTES raw contents are malformed: {exc}"
            ) from None
        return flat.reshape(shape)
    if dt.numpy is None:
        raise InvalidRequest(
            f"input '{name}': datatype {dt.name} cannot be served: onnxruntime's Python API "
            "has no BF16 tensors"
        )
    expected = count * dt.itemsize
    if len(raw) != expected:
        raise InvalidRequest(
            f"input '{name}': raw contents hold {len(raw)} bytes but shape {list(shape)} "
            f"of {dt.name} needs {expected} ({count} elements x {dt.itemsize} bytes)"
        )
    if dt.name == "BOOL" and count:
        octets = np.frombuffer(raw, dtype=np.uint8)
        if octets.max() > 1:
            index = int(np.argmax(octets > 1))
            raise InvalidRequest(
                f"input '{name}': BOOL element {index} is the byte {octets[index]}; "
                "raw BOOL elements are one byte each, 0 or 1"
            )
    return np.frombuffer(raw, dtype=dt.numpy).reshape(shape)


def check_integer_range(name: str, dt: datatypes.Datatype, values: np.ndarray) -> None:
    """Integers for an integer datatype must fit it: a value that does not is
    the client's mistake, not something to wrap around or truncate."""
    if not values.size:
        return
    assert dt.numpy is not None
    info = np.iinfo(dt.numpy)
    if values.dtype.kind not in "iu" or values.min() < info.min or values.max() > info.max:
        raise integer_range_error(name, dt)


def integer_range_error(name: str, dt: datatypes.Datatype) -> InvalidRequest:
    """The error for a value an integer datatype cannot hold."""
    assert dt.numpy is not None
    info = np.iinfo(dt.numpy)
    return InvalidRequest(
        f"input '{name}': {dt.name} elements must be integers from {info.min} to {info.max}"
    )


def array_to_raw(array: np.ndarray, datatype: str) -> bytes:
    """Row-major bytes of an output; BYTES elements length-prefixed."""
    if datatype == "BYTES":
        return encode_bytes_tensor(array)
    return np.ascontiguousarray(array).tobytes()
