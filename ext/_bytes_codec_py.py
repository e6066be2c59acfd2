"""Pure-Python twin of the BYTES tensor codec.

The Open Inference Protocol carries BYTES tensors in raw form as a sequence of
elements, each a 4-byte little-endian unsigned length followed by that many
bytes. This module is the reference behaviour; `_bytes_codec.pyx` must match it."""

from __future__ import annotations

import struct

import numpy as np

_LENGTH = struct.Struct("<I")


class BytesTensorError(ValueError):
    """A raw BYTES buffer does not hold the expected elements."""


def encode_bytes_tensor(array: np.ndarray) -> bytes:
    """Serialise every element (bytes, or str as UTF-8) of `array`, row-major."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def too_many_elements(count: int, size: int) -> str:
    """The error for a shape that claims more elements than `size` bytes can
    hold: every element takes at least its 4-byte length prefix."""
    return (
        f"the shape claims {count} elements, but {size} bytes hold at most {size // 4} "
        "(each element takes a 4-byte length prefix)"
    )


def decode_bytes_tensor(
    buffer: bytes | bytearray | memoryview, count: int, text: bool = False
) -> np.ndarray:
    """Split `buffer` into exactly `count` elements; returns a 1-D object array.

    Elements are bytes, or str when `text` is true (onnxruntime string tensors
    hold text: it would turn bytes into their repr)."""
    view = memoryview(buffer).cast("B")
    size = len(view)
    if count > size // 4:  # before allocating: the shape may claim any count
        raise BytesTensorError(too_many_elements(count, size))
    out = np.empty(count, dtype=object)
    offset = 0
    for index in range(count):
        if offset + 4 > size:
            raise BytesTensorError(
                f"element {index}: buffer ends at byte {size}, "
                f"before the 4-byte length prefix at offset {offset}"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > size:
            raise BytesTensorError(
                f"element {index}: length prefix says {length} bytes at offset {offset}, "
                f"but only {size - offset} remain"
            )
        element = bytes(view[offset : offset + length])
        if text:
            try:
                out[index] = element.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BytesTensorError(
                    f"element {index} is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                    "string tensors of an ONNX model hold text"
                ) from None
        else:
            out[index] = element
        offset += length
    if offset != size:
        raise BytesTensorError(
            f"{size - offset} trailing bytes after the {count} elements the shape asks for"
        )
    return out
