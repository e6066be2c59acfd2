"""The serving process raises the cyclic collector's thresholds (see
mlserve.server.GC_THRESHOLDS for the measurement behind them)."""

from __future__ import annotations

import gc

from mlserve.server import GC_THRESHOLDS, tune_gc


def test_tune_gc_sets_the_serving_thresholds() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
    finally:
        gc.set_threshold(*before)
