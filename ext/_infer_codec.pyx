# cython: language_level=3
"""ModelInferRequest fast decoder, compiled: see `_infer_codec_py.py`, the
reference it must match. Parsing runs over the bytes in C; Python objects are
made only for what the caller gets."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint64_t


cdef enum:
    _OK = 0
    _NOT_SIMPLE = 1


cdef inline int _varint(const unsigned char *data, Py_ssize_t *pos, Py_ssize_t end,
                        uint64_t *out) noexcept nogil:
    cdef uint64_t result = 0
    cdef int shift = 0
    cdef unsigned char byte
    while True:
        if pos[0] >= end or shift > 63:
            return _NOT_SIMPLE
        byte = data[pos[0]]
        pos[0] += 1
        result |= (<uint64_t>(byte & 0x7F)) << shift
        if not byte & 0x80:
            out[0] = result
            return _OK
        shift += 7


cdef inline int _length(const unsigned char *data, Py_ssize_t *pos, Py_ssize_t end,
                        Py_ssize_t *start) noexcept nogil:
    cdef uint64_t size
    if _varint(data, pos, end, &size) != _OK:
        return _NOT_SIMPLE
    if size > <uint64_t>(end - pos[0]):
        return _NOT_SIMPLE
    start[0] = pos[0]
    pos[0] += <Py_ssize_t>size
    return _OK


cdef inline object _text(const unsigned char *data, Py_ssize_t start, Py_ssize_t stop):
    """The UTF-8 text, or None when it is not valid UTF-8."""
    try:
        return (<const char*>data)[start:stop].decode("utf-8")
    except UnicodeDecodeError:
        return None


cdef object _input(const unsigned char *data, Py_ssize_t pos, Py_ssize_t end):
    cdef uint64_t key, value
    cdef Py_ssize_t start, at
    cdef object name = ""
    cdef object datatype = ""
    cdef list shape = []
    while pos < end:
        if _varint(data, &pos, end, &key) != _OK:
            return None
        if key == (3 << 3):  # unpacked shape element
            if _varint(data, &pos, end, &value) != _OK:
                return None
            shape.append(<int64_t>value)
            continue
        if key & 7 != 2:
            return None
        if _length(data, &pos, end, &start) != _OK:
            return None
        if key >> 3 == 1:
            name = _text(data, start, pos)
            if name is None:
                return None
        elif key >> 3 == 2:
            datatype = _text(data, start, pos)
            if datatype is None:
                return None
        elif key >> 3 == 3:  # packed shape
            at = start
            while at < pos:
                if _varint(data, &at, pos, &value) != _OK:
                    return None
                shape.append(<int64_t>value)
        else:  # parameters, contents, unknown: not simple
            return None
    return (name, datatype, tuple(shape))


cdef object _output(const unsigned char *data, Py_ssize_t pos, Py_ssize_t end):
    cdef uint64_t key
    cdef Py_ssize_t start
    cdef object name = ""
    while pos < end:
        if _varint(data, &pos, end, &key) != _OK:
            return None
        if key != (1 << 3 | 2):  # only the name
            return None
        if _length(data, &pos, end, &start) != _OK:
            return None
        name = _text(data, start, pos)
        if name is None:
            return None
    return name


def decode_simple_infer(bytes data):
    """See `_infer_codec_py.decode_simple_infer`."""
    cdef const unsigned char *raw = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t end = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t start
    cdef uint64_t key
    cdef object model_name = ""
    cdef object model_version = ""
    cdef object request_id = ""
    cdef list tensors = []
    cdef list spans = []
    cdef list outputs = []
    cdef object found
    while pos < end:
        if _varint(raw, &pos, end, &key) != _OK:
            return None
        if key & 7 != 2:
            return None
        if _length(raw, &pos, end, &start) != _OK:
            return None
        field = key >> 3
        if field == 1:
            model_name = _text(raw, start, pos)
        elif field == 2:
            model_version = _text(raw, start, pos)
        elif field == 3:
            request_id = _text(raw, start, pos)
        elif field == 5:
            found = _input(raw, start, pos)
            if found is None:
                return None
            tensors.append(found)
            continue
        elif field == 6:
            found = _output(raw, start, pos)
            if found is None:
                return None
            outputs.append(found)
            continue
        elif field == 7:
            spans.append((start, pos))
            continue
        else:  # parameters, unknown
            return None
        if model_name is None or model_version is None or request_id is None:
            return None
    if not tensors or len(spans) != len(tensors):
        return None
    view = memoryview(data)
    inputs = []
    for index in range(len(tensors)):
        tensor = tensors[index]
        span = spans[index]
        inputs.append((tensor[0], tensor[1], tensor[2], view[span[0]:span[1]]))
    return (model_name, model_version, request_id, inputs, outputs)
