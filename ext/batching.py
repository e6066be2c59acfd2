"""Selector for the batching kernels (see ext/_select.py); `IMPLEMENTATION`
says which one was loaded. Typed as the twin, which the compiled one matches."""

from __future__ import annotations

from mlserve.ext import _batching_py as _twin
from mlserve.ext._select import select

_module, IMPLEMENTATION = select("batching")
gather_rows = _twin.gather_rows
select_batch = _twin.select_batch
split_rows = _twin.split_rows
if _module is not _twin:
    gather_rows = _module.gather_rows
    select_batch = _module.select_batch
    split_rows = _module.split_rows

__all__ = ["IMPLEMENTATION", "gather_rows", "select_batch", "split_rows"]
