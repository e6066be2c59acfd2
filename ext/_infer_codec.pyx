# cython: language_level=3
"""ModelInferRequest fast decoder and ModelInferResponse encoder, compiled:
see `_infer_codec_py.py`, the reference they must match. Parsing runs over the
bytes in C; Python objects are made only for what the caller gets; an answer
is sized first, then written once into its bytes object."""

from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_AsString,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

cimport numpy as cnp

cnp.import_array()

cdef enum:
    _MAX_DIMS = 32  # numpy 1's limit (2 allows 64): more is left to the caller


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


cdef object _as_array(bytes data, Py_ssize_t start, Py_ssize_t stop, cnp.dtype dtype,
                      tuple shape):
    """A read-only array of `shape` over data[start:stop], or None where the
    bytes are not exactly what the shape needs (see the twin's `_as_array`)."""
    cdef Py_ssize_t nd = len(shape)
    cdef cnp.npy_intp dims[_MAX_DIMS]
    cdef cnp.npy_intp strides[_MAX_DIMS]
    cdef cnp.npy_intp count = 1
    cdef cnp.npy_intp itemsize = dtype.itemsize
    cdef cnp.npy_intp stride
    cdef Py_ssize_t i
    cdef int64_t dim
    cdef bint empty = False
    if nd > _MAX_DIMS:
        return None
    for i in range(nd):
        dim = shape[i]
        if dim < 0:
            return None
        dims[i] = <cnp.npy_intp>dim
        empty = empty or dim == 0
    if empty:
        count = 0
    else:
        for i in range(nd):  # every factor >= 1: past the bytes given, stop (no overflow)
            count *= dims[i]
            if count > stop - start:
                return None
    if count * itemsize != stop - start:
        return None
    stride = itemsize
    for i in range(nd - 1, -1, -1):
        strides[i] = stride
        stride *= dims[i]
    # Flags 0: read-only; given strides, numpy works out alignment and contiguity.
    array = cnp.PyArray_New(cnp.ndarray, <int>nd, dims, dtype.type_num, strides,
                            <void*>(PyBytes_AS_STRING(data) + start), <int>itemsize, 0,
                            None)
    cnp.set_array_base(array, data)
    return array


def raw_array(bytes data, Py_ssize_t start, Py_ssize_t stop, cnp.dtype dtype, tuple shape):
    """See `_infer_codec_py.raw_array`."""
    if start < 0 or stop < start or stop > PyBytes_GET_SIZE(data):
        return None
    return _as_array(data, start, stop, dtype, shape)


def decode_simple_infer(bytes data, dtypes=None):
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
    cdef object view = None
    cdef object array
    cdef object dtype
    inputs = []
    for index in range(len(tensors)):
        tensor = tensors[index]
        span = spans[index]
        if dtypes:
            dtype = dtypes.get(tensor[1])
            if dtype is not None:
                array = _as_array(data, span[0], span[1], dtype, tensor[2])
                if array is not None:
                    inputs.append((tensor[0], tensor[1], tensor[2], array))
                    continue
        if view is None:
            view = memoryview(data)
        inputs.append((tensor[0], tensor[1], tensor[2], view[span[0]:span[1]]))
    return (model_name, model_version, request_id, inputs, outputs)


# -- ModelInferResponse, written straight to the wire ------------------------


cdef inline Py_ssize_t _varint_size(uint64_t value) noexcept nogil:
    cdef Py_ssize_t n = 1
    while value > 0x7F:
        value >>= 7
        n += 1
    return n


cdef inline Py_ssize_t _field_size(Py_ssize_t length) noexcept nogil:
    """Tag, length and payload of a length-delimited field."""
    return 1 + _varint_size(<uint64_t>length) + length


cdef inline char *_put_varint(char *at, uint64_t value) noexcept nogil:
    while value > 0x7F:
        at[0] = <char>((value & 0x7F) | 0x80)
        at += 1
        value >>= 7
    at[0] = <char>value
    return at + 1


cdef inline char *_put_field(char *at, unsigned char tag, const char *data,
                             Py_ssize_t length) noexcept nogil:
    at[0] = <char>tag
    at = _put_varint(at + 1, <uint64_t>length)
    if length:
        memcpy(at, data, length)
    return at + length


def encode_infer_response(str model_name, str model_version, str request_id, list outputs):
    """See `_infer_codec_py.encode_infer_response`."""
    cdef bytes name_b = model_name.encode()
    cdef bytes version_b = model_version.encode()
    cdef bytes id_b = request_id.encode()
    cdef Py_ssize_t count = len(outputs)
    cdef Py_ssize_t total = 0, index, dims_size, tensor_size, n_dims, d
    cdef Py_buffer *views = NULL
    cdef Py_ssize_t acquired = 0
    cdef list texts = []  # per output: name bytes, datatype bytes, shape tuple
    cdef list sizes = []  # per output: (dims_size, tensor_size)
    cdef object shape
    cdef char *at
    cdef char *start
    cdef object result
    if name_b:
        total += _field_size(len(name_b))
    if version_b:
        total += _field_size(len(version_b))
    if id_b:
        total += _field_size(len(id_b))
    views = <Py_buffer*>PyMem_Malloc(sizeof(Py_buffer) * (count if count else 1))
    if views == NULL:
        raise MemoryError()
    try:
        for index in range(count):
            item = outputs[index]
            out_name = (<str>item[0]).encode()
            datatype = (<str>item[1]).encode()
            shape = item[2]
            n_dims = len(shape)
            dims_size = 0
            for d in range(n_dims):
                if shape[d] < 0:
                    raise ValueError(f"negative dimension in output shape {shape}")
                dims_size += _varint_size(<uint64_t>shape[d])
            tensor_size = 0
            if out_name:
                tensor_size += _field_size(len(out_name))
            if datatype:
                tensor_size += _field_size(len(datatype))
            if n_dims:
                tensor_size += _field_size(dims_size)
            PyObject_GetBuffer(item[3], &views[index], PyBUF_C_CONTIGUOUS)
            acquired += 1
            total += _field_size(tensor_size) + _field_size(views[index].len)
            texts.append((out_name, datatype, shape))
            sizes.append((dims_size, tensor_size))
        result = PyBytes_FromStringAndSize(NULL, total)
        start = PyBytes_AsString(result)
        at = start
        if name_b:
            at = _put_field(at, 0x0A, name_b, len(name_b))
        if version_b:
            at = _put_field(at, 0x12, version_b, len(version_b))
        if id_b:
            at = _put_field(at, 0x1A, id_b, len(id_b))
        for index in range(count):
            out_name, datatype, shape = texts[index]
            dims_size, tensor_size = sizes[index]
            at[0] = <char>0x2A
            at = _put_varint(at + 1, <uint64_t>tensor_size)
            if out_name:
                at = _put_field(at, 0x0A, out_name, len(out_name))
            if datatype:
                at = _put_field(at, 0x12, datatype, len(datatype))
            n_dims = len(shape)
            if n_dims:
                at[0] = <char>0x1A
                at = _put_varint(at + 1, <uint64_t>dims_size)
                for d in range(n_dims):
                    at = _put_varint(at, <uint64_t>shape[d])
        for index in range(count):
            at = _put_field(at, 0x32, <const char*>views[index].buf, views[index].len)
        assert at - start == total
        return result
    finally:
        for index in range(acquired):
            PyBuffer_Release(&views[index])
        PyMem_Free(views)


def wrap_stream_response(bytes infer_response):
    """See `_infer_codec_py.wrap_stream_response`."""
    cdef Py_ssize_t length = len(infer_response)
    cdef object result = PyBytes_FromStringAndSize(NULL, _field_size(length))
    _put_field(PyBytes_AsString(result), 0x12, infer_response, length)
    return result
