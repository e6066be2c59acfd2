# cython: language_level=3
"""Compiled BYTES tensor codec; behaviour must equal `_bytes_codec_py`."""

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint32_t, uint8_t
from libc.string cimport memcpy

import numpy as np

from mlserve.ext._bytes_codec_py import BytesTensorError, too_many_elements


cdef inline uint32_t _read_le32(const uint8_t* p) noexcept nogil:
    return <uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


def encode_bytes_tensor(array):
    cdef list items = []
    cdef Py_ssize_t total = 0
    cdef Py_ssize_t n
    cdef object item
    cdef bytes data
    for item in array.reshape(-1):
        if isinstance(item, str):
            data = (<str>item).encode("utf-8")
        elif isinstance(item, bytes):
            data = <bytes>item
        else:
            data = bytes(item)
        items.append(data)
        total += 4 + len(data)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* dst = PyBytes_AS_STRING(out)
    cdef Py_ssize_t pos = 0
    cdef uint32_t length
    for data in items:
        n = len(data)
        length = <uint32_t>n
        dst[pos] = <char>(length & 0xFF)
        dst[pos + 1] = <char>((length >> 8) & 0xFF)
        dst[pos + 2] = <char>((length >> 16) & 0xFF)
        dst[pos + 3] = <char>((length >> 24) & 0xFF)
        memcpy(dst + pos + 4, PyBytes_AS_STRING(data), n)
        pos += 4 + n
    return out


def decode_bytes_tensor(buffer, Py_ssize_t count, bint text=False):
    cdef const uint8_t[::1] view = memoryview(buffer).cast("B")
    cdef Py_ssize_t size = view.shape[0]
    cdef Py_ssize_t offset = 0
    cdef Py_ssize_t index
    cdef uint32_t length
    cdef const uint8_t* base = &view[0] if size > 0 else NULL
    if count > size // 4:  # before allocating: the shape may claim any count
        raise BytesTensorError(too_many_elements(count, size))
    out = np.empty(count, dtype=object)
    cdef object[:] slots = out
    for index in range(count):
        if offset + 4 > size:
            raise BytesTensorError(
                f"element {index}: buffer ends at byte {size}, "
                f"before the 4-byte length prefix at offset {offset}"
            )
        length = _read_le32(base + offset)
        offset += 4
        if offset + <Py_ssize_t>length > size:
            raise BytesTensorError(
                f"element {index}: length prefix says {length} bytes at offset {offset}, "
                f"but only {size - offset} remain"
            )
        if text:
            try:
                slots[index] = PyUnicode_DecodeUTF8(<const char*>(base + offset), length, NULL)
            except UnicodeDecodeError as exc:
                raise BytesTensorError(
                    f"element {index} is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                    "string tensors of an ONNX model hold text"
                ) from None
        else:
            slots[index] = PyBytes_FromStringAndSize(<const char*>(base + offset), length)
        offset += length
    if offset != size:
        raise BytesTensorError(
            f"{size - offset} trailing bytes after the {count} elements the shape asks for"
        )
    return out
