"""`mlserve bench` from settings to report: read the model's metadata, build and
encode the request once, probe it, then for each concurrency level split the
slots over the worker processes, run the step on a shared start time, and
merge what the workers measured. The one place that wires the parts together."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from mlserve.bench.input_data import build_inputs, rows_per_request
from mlserve.bench.model_metadata import fetch_metadata
from mlserve.bench.pool import WorkerPool, split
from mlserve.bench.probe import probe
from mlserve.bench.progress import ProgressDisplay
from mlserve.bench.recorder import StepPlan
from mlserve.bench.report import (
    now_utc,
    print_level,
    report_document,
    table_header,
    write_json,
)
from mlserve.bench.settings import BenchSettings, check_settings
from mlserve.bench.summary import LevelSummary, summarize
from mlserve.bench.wire import encode_request

START_MARGIN_NS = 20_000_000  # time for the "run" messages to reach every worker
CHECK_REQUESTS = 1


@dataclass(frozen=True, slots=True)
class BenchOutcome:
    levels: list[LevelSummary]
    document: dict[str, Any]  # what --json writes

    @property
    def errors(self) -> int:
        return sum(level.errors for level in self.levels)


def run_bench(
    settings: BenchSettings, *, out: TextIO | None = None, err: TextIO | None = None
) -> BenchOutcome:
    """Run every level; print rows to `out` and progress to `err` as it goes."""
    out = out or sys.stdout
    err = err or sys.stderr
    check_settings(settings)
    started_at = now_utc()
    metadata = fetch_metadata(settings)
    inputs = build_inputs(settings, metadata)
    request = encode_request(settings, inputs, rows_per_request(metadata, inputs))
    probe(settings, request.data)
    size = min(settings.processes, max(settings.concurrency))
    display = ProgressDisplay(err)
    levels: list[LevelSummary] = []
    with WorkerPool(
        size=size,
        protocol=settings.protocol,
        streaming=settings.streaming,
        url=settings.url,
        request=request.data,
    ) as pool:
        out.write(table_header() + "\n")
        out.flush()
        for concurrency in settings.concurrency:
            level = _run_level(settings, pool, display, concurrency, request.rows)
            levels.append(level)
            print_level(out, level)
    document = report_document(
        settings=settings,
        metadata=metadata,
        inputs=inputs,
        request=request,
        levels=levels,
        check_requests=CHECK_REQUESTS,
        started_at=started_at,
    )
    if settings.json_path is not None:
        write_json(settings.json_path, document)
    return BenchOutcome(levels, document)


def _run_level(
    settings: BenchSettings,
    pool: WorkerPool,
    display: ProgressDisplay,
    concurrency: int,
    rows: int,
) -> LevelSummary:
    shares = split(concurrency, pool.size)
    quotas = _quotas(settings.requests, shares) if settings.requests is not None else None
    pool.prepare(shares)
    start_ns = time.monotonic_ns() + START_MARGIN_NS
    measure_ns = start_ns + round(settings.warmup_s * 1e9)
    end_ns = None if quotas is not None else measure_ns + round(settings.duration_s * 1e9)
    plans = {
        index: StepPlan(
            slots=share,
            start_ns=start_ns,
            measure_ns=measure_ns,
            end_ns=end_ns,
            quota=None if quotas is None else quotas[index],
        )
        for index, share in enumerate(shares)
        if share
    }
    display.begin(
        concurrency=concurrency,
        processes=len(plans),
        measure_ns=measure_ns,
        warmup_s=settings.warmup_s,
        duration_s=None if quotas is not None else settings.duration_s,
        quota=settings.requests,
    )
    try:
        results = pool.run(plans, display.tick)
    finally:
        display.end()
    return summarize(concurrency=concurrency, results=results, measure_ns=measure_ns, rows=rows)


def _quotas(requests: int, shares: list[int]) -> list[int]:
    """`requests` split in proportion to each worker's slots."""
    total = sum(shares)
    quotas = [requests * share // total for share in shares]
    for index in range(requests - sum(quotas)):
        quotas[index % len(quotas)] += 1
    return quotas
