"""Reusable batch input buffers, one set per thread that runs batches.

A batch is gathered into one contiguous buffer per input. Made afresh with
np.empty each time, a large buffer is a fresh allocation whose pages fault on
their first write. Gathering 8 requests of 602 KB in process: 341 us into a
fresh buffer, 168 us into a reused one; 64 such rows: 10.7 ms against 4.5 ms.
Each thread keeps one buffer of bytes per input name and lays each batch
over its start, whatever the batch's row shape and datatype (requests of
other shapes form their own batches): it grows only when a batch needs more
bytes than any before, so what it holds is bounded by the largest batch this
thread has run (max_batch_size rows of the largest row), however many
shapes a model with variable dimensions sees."""

from __future__ import annotations

import bisect
import math
import threading

import numpy as np

from mlserve.ext.batching import gather_rows

_Buffers = dict[str, np.ndarray]


def padded_rows(sizes: tuple[int, ...], rows: int) -> int:
    """The smallest of `sizes` that holds `rows` (`rows` itself without sizes)."""
    return sizes[bisect.bisect_left(sizes, rows)] if sizes else rows


class GatherBuffers:
    """Per-thread byte buffers keyed by input name."""

    def __init__(self) -> None:
        self._local = threading.local()

    def take(self, name: str, dtype: np.dtype, row_shape: tuple[int, ...], rows: int) -> np.ndarray:
        """A C-contiguous `(rows, *row_shape)` array for this thread's next batch:
        valid until this thread takes `name` again. BYTES (object) inputs get a
        new array: a kept one would keep their strings alive."""
        if dtype.hasobject:
            return np.empty((rows, *row_shape), dtype=dtype)
        buffers: _Buffers | None = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = {}
        nbytes = rows * math.prod(row_shape) * dtype.itemsize
        buffer = buffers.get(name)
        if buffer is None or buffer.nbytes < nbytes:
            buffer = buffers[name] = np.empty(nbytes, dtype=np.uint8)
        return buffer[:nbytes].view(dtype).reshape((rows, *row_shape))

    def gather(
        self, feeds: list[dict[str, np.ndarray]], total: int, padded: int
    ) -> dict[str, np.ndarray]:
        """One contiguous buffer per input (this thread's, reused): the
        requests' rows (`total` in all), then zero rows up to `padded`."""
        gathered = {}
        for name, first in feeds[0].items():
            out = self.take(name, first.dtype, first.shape[1:], padded)
            gather_rows([f[name] for f in feeds], out[:total] if padded > total else out)
            if padded > total:
                out[total:] = 0 if out.dtype != object else ""
            gathered[name] = out
        return gathered

    def forget_aliased(self, outputs: list[np.ndarray]) -> None:
        """Drop a buffer an output may alias (onnxruntime copies its outputs,
        but a buffer reused under a live output would corrupt it)."""
        buffers: _Buffers | None = getattr(self._local, "buffers", None)
        if not buffers:
            return
        for name, buffer in list(buffers.items()):
            if any(np.may_share_memory(buffer, out) for out in outputs):
                del buffers[name]
