"""One concurrency level's figures from every worker's `StepResult`: counts
added up, latency arrays concatenated, and percentiles taken on the merged
array (nearest rank), so they are exact rather than averaged per process."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mlserve.bench.recorder import StepResult

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True, slots=True)
class LevelSummary:
    concurrency: int
    processes: int
    requests: int  # measured successes
    errors: int  # measured failures
    warmup_requests: int
    warmup_errors: int
    duration_s: float  # from the measured start to the last measured answer
    requests_per_s: float
    infer_per_s: float  # requests_per_s x rows per request
    latency_us: dict[str, float]  # p50 p90 p95 p99 mean min max; empty without successes
    error_counts: dict[str, int] = field(default_factory=dict)  # by kind, e.g. "HTTP 503"
    error_examples: dict[str, str] = field(default_factory=dict)  # one message per kind


def summarize(
    *,
    concurrency: int,
    results: list[StepResult],
    measure_ns: int,
    rows: int,
) -> LevelSummary:
    latencies = np.concatenate(
        [np.frombuffer(r.latencies_ns, dtype=np.int64) for r in results] or [np.empty(0, np.int64)]
    )
    ok = int(latencies.size)
    errors = sum(r.errors for r in results)
    last_ns = max((r.last_ns for r in results), default=0)
    duration_s = max(0.0, (last_ns - measure_ns) / 1e9)
    rate = (ok / duration_s) if duration_s > 0 else 0.0
    latency_us: dict[str, float] = {}
    if ok:
        values = np.percentile(latencies, PERCENTILES, method="inverted_cdf") / 1e3
        latency_us = {f"p{p}": float(v) for p, v in zip(PERCENTILES, values, strict=True)}
        latency_us["mean"] = float(latencies.mean()) / 1e3
        latency_us["min"] = float(latencies.min()) / 1e3
        latency_us["max"] = float(latencies.max()) / 1e3
    counts: dict[str, int] = {}
    examples: dict[str, str] = {}
    for result in results:
        for kind, count in result.error_counts.items():
            counts[kind] = counts.get(kind, 0) + count
            examples.setdefault(kind, result.error_examples.get(kind, ""))
    return LevelSummary(
        concurrency=concurrency,
        processes=len(results),
        requests=ok,
        errors=errors,
        warmup_requests=sum(r.warmup_ok for r in results),
        warmup_errors=sum(r.warmup_errors for r in results),
        duration_s=duration_s,
        requests_per_s=rate,
        infer_per_s=rate * rows,
        latency_us=latency_us,
        error_counts=counts,
        error_examples=examples,
    )
