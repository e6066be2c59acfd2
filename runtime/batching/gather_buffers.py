"""Reusable batch input buffers, one set per thread that runs batches.

A batch is gathered into one contiguous buffer per input. Made afresh with
np.empty each time, a large buffer is a fresh allocation whose pages fault on
their first write. Gathering 8 requests of 602 KB in process: 341 us into a
fresh buffer, 168 us into a reused one; 64 such rows: 10.7 ms against 4.5 ms.
Each thread keeps its buffer per input and reuses its first rows; it grows
only when a larger batch than any before arrives, so what it holds is the
largest batch this thread has run (bounded by max_batch_size)."""

from __future__ import annotations

import threading

import numpy as np

_Buffers = dict[tuple[object, ...], np.ndarray]


class GatherBuffers:
    """Per-thread buffers keyed by input name, dtype and row shape."""

    def __init__(self) -> None:
        self._local = threading.local()

    def take(self, name: str, dtype: np.dtype, row_shape: tuple[int, ...], rows: int) -> np.ndarray:
        """A C-contiguous `(rows, *row_shape)` array for this thread's next batch:
        valid until this thread takes the same key again. BYTES (object)
        inputs get a new array: a kept one would keep their strings alive."""
        if dtype.hasobject:
            return np.empty((rows, *row_shape), dtype=dtype)
        buffers: _Buffers | None = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = {}
        key = (name, dtype, row_shape)
        buffer = buffers.get(key)
        if buffer is None or len(buffer) < rows:
            buffer = buffers[key] = np.empty((rows, *row_shape), dtype=dtype)
        return buffer[:rows]

    def forget_aliased(self, outputs: list[np.ndarray]) -> None:
        """Drop a buffer an output may alias (onnxruntime copies its outputs,
        but a buffer reused under a live output would corrupt it)."""
        buffers: _Buffers | None = getattr(self._local, "buffers", None)
        if not buffers:
            return
        for key, buffer in list(buffers.items()):
            if any(np.may_share_memory(buffer, out) for out in outputs):
                del buffers[key]
