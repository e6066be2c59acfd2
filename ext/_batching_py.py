"""Pure-Python twin of the batching kernels (`_batching.pyx` must match it).

- `select_batch`: which queued requests join the head request's batch: same
  shape key, in queue order, up to a row limit, skipping others (they stay
  queued and lead a later batch).
- `gather_rows`: copy requests' row-major arrays into one batch buffer.
- `split_rows`: per-request views of a batch output, no copies."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def select_batch(
    keys: Sequence[object], rows: Sequence[int], max_rows: int
) -> tuple[list[int], int]:
    """Indices of the entries that form the head's batch, and their rows."""
    if not keys:
        return [], 0
    head = keys[0]
    chosen: list[int] = []
    total = 0
    for index in range(len(keys)):
        if keys[index] != head:
            continue
        n = rows[index]
        if total + n > max_rows and total:
            break  # (a lone request over the limit still goes: validated upstream)
        chosen.append(index)
        total += n
        if total >= max_rows:
            break
    return chosen, total


def gather_rows(arrays: Sequence[np.ndarray], out: np.ndarray) -> None:
    """Write `arrays` one after another (along axis 0) into C-contiguous `out`."""
    np.concatenate(arrays, axis=0, out=out)


def split_rows(array: np.ndarray, rows: Sequence[int]) -> list[np.ndarray]:
    """Views of `array` with rows[i] rows each, in order."""
    views = []
    start = 0
    for n in rows:
        views.append(array[start : start + n])
        start += n
    return views
