"""The part of Cython's pure-Python mode the request-path modules use, for
their pure twin where Cython itself is not installed (it is a build
dependency only), and for mypy (which sees these typed stand-ins).

A module of mlserve/compiled.py declares a per-request record as

    if TYPE_CHECKING:
        from mlserve import cython_shim as cython
    else:
        try:
            import cython
        except ImportError:
            from mlserve import cython_shim as cython

    @cython.dataclasses.dataclass
    @cython.cclass
    class Record: ...

Compiled, `cython` is Cython's compile-time module and the record a cdef
class with a C __init__: 80-90 ns to build against 390-540 ns for a slotted
dataclass, whose generated __init__ runs in the interpreter even in a compiled
module (measured in one process, 2026-11-29). From source, the record is a
slotted dataclass, as before. No `default_factory` in such records: Cython
builds those in Python again (430 ns) and warns, which our build refuses."""

from __future__ import annotations

from typing import TypeVar

from mlserve.cython_shim import dataclasses

T = TypeVar("T")


# C types of cdef class fields and typed locals; here, what Python holds them in.
longlong = int
double = float
Py_ssize_t = int


def cclass(cls: T) -> T:
    """Cython: a cdef class. Here: the class as it is."""
    return cls


def ccall(function: T) -> T:
    """Cython: a cpdef method (called in C by typed callers). Here: the method."""
    return function


__all__ = ["Py_ssize_t", "ccall", "cclass", "dataclasses", "double", "longlong"]
