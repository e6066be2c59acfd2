"""Statistics survive the trip between worker processes and add up exactly."""

from __future__ import annotations

from mlserve.runtime.statistics import ModelStatistics
from mlserve.runtime.worker_peers import merge


def sample(rows: int, runs: int) -> ModelStatistics:
    stats = ModelStatistics()
    for _ in range(runs):
        stats.record_execution(rows=rows, input_ns=10, infer_ns=100, output_ns=5)
        stats.record_success(total_ns=200, queue_ns=50, input_ns=10, infer_ns=100, output_ns=5)
    stats.record_failure(total_ns=30)
    return stats


def test_json_round_trip_is_exact() -> None:
    stats = sample(4, 3)
    assert ModelStatistics.from_json(stats.to_json()) == stats


def test_merge_adds_counters_and_batches() -> None:
    a, b = sample(4, 3), sample(8, 2)
    merged = merge([("m", "1", a), ("m", "1", b), ("m", "2", sample(1, 1))])
    assert [(n, v) for n, v, _ in merged] == [("m", "1"), ("m", "2")]
    total = merged[0][2]
    assert total.inference_count == 4 * 3 + 8 * 2
    assert total.execution_count == 5
    assert (total.success.count, total.success.ns) == (5, 1000)
    assert (total.fail.count, total.fail.ns) == (2, 60)
    assert sorted(total.batches) == [4, 8]
    assert total.batches[4].compute_infer.count == 3
    assert total.last_inference_ms == max(a.last_inference_ms, b.last_inference_ms)
    assert a.inference_count == 12  # the parts are left as they were
