"""glibc malloc settings for the serving process.

A request's tensor bytes (a 602 KB image is one bytes object) are allocated
and freed on every request. glibc serves blocks over its mmap threshold
(128 KB at start, rising with use) with a fresh mmap, and gives the top of
the heap back to the kernel once more than the trim threshold is free there.
Either way the next request's bytes land on new pages, and every page faults
on its first write. With these settings the freed blocks are reused. A/B on
3x224x224 FP32 requests (602 KB) at c=8, native gRPC, server on one core,
alternating server runs: 257-342 instead of 324-681 us of server CPU a
request with batching off, 463-533 instead of 603-760 with batching on. The
MLP and the convnet showed no change.

The price is that up to TRIM_THRESHOLD_BYTES of freed memory stays with the
process instead of going back to the kernel at once. An operator who sets
glibc's own malloc environment variables keeps them: then nothing changes."""

from __future__ import annotations

import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # the largest glibc accepts on 64-bit
TRIM_THRESHOLD_BYTES = 128 << 20  # a GPU batch of 64 ImageNet rows is 38 MB
_OPERATOR_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def tune_malloc() -> bool:
    """Apply the thresholds; False where this is not glibc or the operator
    set malloc's own variables."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in _OPERATOR_SETTINGS):
        return False
    if "malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
