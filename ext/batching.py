"""Selector for the batching kernels: compiled unless `MLSERVE_NO_EXTENSIONS=1`
or not built; `IMPLEMENTATION` says which."""

from __future__ import annotations

import os

IMPLEMENTATION: str
if os.environ.get("MLSERVE_NO_EXTENSIONS") == "1":
    from mlserve.ext._batching_py import gather_rows, select_batch, split_rows

    IMPLEMENTATION = "py"
else:
    try:
        from mlserve.ext._batching import gather_rows, select_batch, split_rows

        IMPLEMENTATION = "cy"
    except ImportError:  # not built
        from mlserve.ext._batching_py import gather_rows, select_batch, split_rows

        IMPLEMENTATION = "py"

__all__ = ["IMPLEMENTATION", "gather_rows", "select_batch", "split_rows"]
