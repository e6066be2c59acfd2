"""The serving process's malloc thresholds: an 8 MB block (a batch of a dozen
ImageNet rows) comes from the heap, not a fresh mmap, and an operator's own
malloc settings are left alone."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt and mallinfo2 are glibc's: elsewhere tune_malloc changes nothing",
)

# In a fresh interpreter: how many blocks glibc serves by mmap (mallinfo2's
# hblks) while an 8 MB bytearray is alive, less before it.
_PROBE = """
import ctypes, sys
from mlserve.allocator import tune_malloc
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    ).split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
applied = tune_malloc() if sys.argv[1] == "tune" else False
before = libc.mallinfo2().hblks
block = bytearray(8 << 20)
print(applied, libc.mallinfo2().hblks - before)
"""


def _probe(mode: str, **env: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env,
    ).stdout.split()
    return out[0], int(out[1])


def test_large_blocks_come_from_the_heap_once_tuned() -> None:
    assert _probe("plain") == ("False", 1)  # glibc's default: a fresh mmap
    assert _probe("tune") == ("True", 0)  # mallopt accepted both thresholds


def test_the_operators_malloc_settings_win() -> None:
    applied, mapped = _probe("tune", MALLOC_TRIM_THRESHOLD_="1048576")
    assert applied == "False"
    assert mapped == 1
