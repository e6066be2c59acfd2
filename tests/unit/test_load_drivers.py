"""The load runner reads h2load's summary as h2load prints it, including a
window that closes just under one second (printed in ms: it once broke the
runner's --quick run)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.load import report
from benchmarks.load.drivers import h2load_figures
from benchmarks.load.workload import preferred_batch

_SUMMARY = """
finished in {finished}, {rps} req/s, 107.45KB/s
requests: 56 total, 57 started, 56 done, 55 succeeded, 1 failed, 0 errored, 0 timeout
status codes: 57 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 107.45KB (110029) total, 246B (246) headers (space savings 94.67%), 96.55KB (98863) data
"""


@pytest.mark.parametrize(
    ("finished", "seconds"), [("999.95ms", 0.99995), ("2.00s", 2.0), ("1.5s", 1.5)]
)
def test_h2load_summary(finished: str, seconds: float) -> None:
    times = np.array([100.0, 200.0, 300.0, 400.0])
    figures = h2load_figures(_SUMMARY.format(finished=finished, rps="56.00"), times)
    assert figures.seconds == pytest.approx(seconds)
    assert figures.rps == 56.0
    assert figures.requests == 55
    assert figures.bad == 1
    assert figures.data_bytes == 98863
    assert figures.p50_us == 250.0
    assert figures.mean_us == 250.0


def test_h2load_output_without_a_summary_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not understood"):
        h2load_figures("connect failed\n", np.empty(0))


def test_the_preferred_batch_is_the_largest_about_as_fast_as_the_best() -> None:
    # The convnet's raw rates of one run (one thread): 16 fastest, 8 and 32
    # more than 2% behind it, so 16.
    assert preferred_batch({1: 9_509, 8: 9_617, 16: 9_988, 32: 8_929, 128: 8_251}) == 16
    # Another run: 8, 16 and 32 within 1%, so the largest of them.
    assert preferred_batch({1: 6_523, 8: 6_900, 16: 6_924, 32: 6_949, 128: 6_248}) == 32
    # The MLP's: 128, the maximum, fastest by 12%: no preferred size.
    assert preferred_batch({1: 95_251, 8: 395_400, 16: 478_646, 32: 539_472, 128: 603_301}) is None


def test_batching_is_judged_by_window_pairs() -> None:
    """Window i of batching on is compared with window i of batching off
    (measured back to back); the report gives their median and range."""

    def run(batched: bool, rps: list[float], p50: list[float]) -> dict:
        windows = [{"rps": r, "p50_us": p} for r, p in zip(rps, p50, strict=True)]
        return {
            "server": "mlserve", "mode": "grpc", "model": "mlp", "concurrency": 1,
            "batched": batched, "windows": windows,
        }  # fmt: skip

    # The machine slowed down between pairs (4,000 -> 5,000 -> 3,000), and each
    # pair's ratio is 0.9x, 1.0x, 1.1x: the median is the middle pair's.
    off = run(False, [4_000, 5_000, 3_000], [200, 200, 300])
    on = run(True, [3_600, 5_000, 3_300], [220, 200, 270])
    assert report.pair_ratios(on, off, "rps") == pytest.approx([0.9, 1.0, 1.1])
    lines = report._batching_pairs([off, on], "mlp", [1])
    assert "| grpc | 1.00x (0.90-1.10) | 1.00x (0.90-1.10) |" in lines
    assert report._batching_pairs([off], "mlp", [1]) == []  # nothing to pair


def test_mlserve_is_read_against_raw_window_by_window() -> None:
    """Each batched window is divided by the raw window measured right after
    it: a machine that slows down between rounds moves both alike."""
    windows = [
        {"rps": 8_000.0, "raw_rows_per_s": 10_000.0, "raw_batch": 8},
        {"rps": 6_000.0, "raw_rows_per_s": 8_000.0, "raw_batch": 8},
        {"rps": 9_900.0, "raw_rows_per_s": 11_000.0, "raw_batch": 8},
    ]
    run = {
        "server": "mlserve", "mode": "grpc", "model": "convnet", "concurrency": 64,
        "batched": True, "windows": windows,
    }  # fmt: skip
    unbatched = {**run, "batched": False}
    (line, _) = report._against_raw_pairs([unbatched, run], "convnet", 64)
    assert "at batch 8, c=64" in line
    assert "grpc 80% (75%-90%)" in line
    assert report._against_raw_pairs([run], "convnet", 32) == []  # no raw windows at c=32


def test_the_on_off_table_names_raw_onnxruntimes_own_gain() -> None:
    """The ceiling of batching's gain is raw onnxruntime's, best batch over batch 1."""
    raw = {"1": 14_000.0, "8": 21_000.0, "16": 20_700.0}
    (line, _) = report._raw_gain(raw)
    assert "batch 8 against batch 1: 1.50x" in line
    assert report._raw_gain({1: 14_000.0, 8: 21_000.0}) == [line, ""]  # as the runner has them
    assert report._raw_gain({"1": 9_000.0}) == []  # nothing batched to compare
    assert report._raw_gain({"1": 9_000.0, "8": 8_000.0}) == []  # batch 1 is best


def test_the_report_names_the_sweep_behind_the_preferred_size() -> None:
    from benchmarks.load.report import _preferred_note

    settings = {
        "preferred_batch_size": {"convnet": 32},
        "preferred_batch_rule": "the one mlserve served fastest",
        "preferred_batch_sweep": {"convnet": {"8": 7400.0, "32": 10200.4, "none": 9000.0}},
    }
    note = _preferred_note({"settings": settings}, "convnet")
    assert "prefers batches of 32" in note
    assert "requests/s by preferred size: 8 7,400, 32 10,200, none 9,000" in note
    assert "on grpcio" not in note  # a run recorded before grpcio had its own repository


def test_the_report_says_how_mlserve_on_grpcio_batches() -> None:
    from benchmarks.load.__main__ import GRPCIO_BATCHING
    from benchmarks.load.report import _preferred_note

    settings = {
        "preferred_batch_size": {"mlp": 32},
        "grpcio_batching": GRPCIO_BATCHING.format(delay=1000),
    }
    note = _preferred_note({"settings": settings}, "mlp")
    assert "prefers batches of 32" in note
    assert "on grpcio, max_queue_delay_us 1000 and no preferred size" in note
