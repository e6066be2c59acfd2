# cython: language_level=3
"""Compiled batching kernels; behaviour must equal `_batching_py`."""

cimport cython
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from libc.string cimport memcpy

import numpy as np

cimport numpy as cnp

cnp.import_array()


@cython.boundscheck(False)
@cython.wraparound(False)
def select_batch(list keys, list rows, Py_ssize_t max_rows):
    cdef Py_ssize_t count = PyList_GET_SIZE(keys)
    cdef list chosen = []
    cdef Py_ssize_t total = 0
    cdef Py_ssize_t index, n
    cdef object head
    if count == 0:
        return chosen, 0
    head = <object>PyList_GET_ITEM(keys, 0)
    for index in range(count):
        key = <object>PyList_GET_ITEM(keys, index)
        if key is not head and key != head:
            continue
        n = <Py_ssize_t><object>PyList_GET_ITEM(rows, index)
        if total + n > max_rows and total:
            break
        chosen.append(index)
        total += n
        if total >= max_rows:
            break
    return chosen, total


@cython.boundscheck(False)
@cython.wraparound(False)
def gather_rows(arrays, cnp.ndarray out):
    if out.dtype.hasobject or not out.flags.c_contiguous:
        np.concatenate(arrays, axis=0, out=out)
        return
    cdef char* dst = <char*>cnp.PyArray_DATA(out)
    cdef Py_ssize_t capacity = cnp.PyArray_NBYTES(out)
    cdef Py_ssize_t offset = 0
    cdef Py_ssize_t size
    cdef cnp.ndarray array
    for item in arrays:
        array = <cnp.ndarray>item
        if array.dtype != out.dtype or not array.flags.c_contiguous:
            array = np.ascontiguousarray(array, dtype=out.dtype)
        size = cnp.PyArray_NBYTES(array)
        if offset + size > capacity:
            raise ValueError("arrays hold more bytes than the batch buffer")
        with nogil:
            memcpy(dst + offset, cnp.PyArray_DATA(array), size)
        offset += size
    if offset != capacity:
        raise ValueError("arrays hold fewer bytes than the batch buffer")


@cython.boundscheck(False)
@cython.wraparound(False)
def split_rows(cnp.ndarray array, rows):
    cdef list views = []
    cdef Py_ssize_t start = 0
    cdef Py_ssize_t n
    for item in rows:
        n = item
        views.append(array[start:start + n])
        start += n
    return views
