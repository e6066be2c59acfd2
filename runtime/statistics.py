"""Cumulative per-model-version statistics, as Triton's statistics extension
reports them. Updated on the event loop thread only, so plain integers suffice."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns

    def merge(self, other: Duration) -> None:
        self.count += other.count
        self.ns += other.ns


@dataclass(slots=True)
class BatchDurations:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class ModelStatistics:
    """Counters of one loaded model version (lost when it is unloaded)."""

    last_inference_ms: int = 0
    inference_count: int = 0  # rows (batch items)
    execution_count: int = 0  # model executions
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batches: dict[int, BatchDurations] = field(default_factory=dict)

    def record_execution(self, *, rows: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        self.execution_count += 1
        self.inference_count += rows
        batch = self.batches.get(rows)
        if batch is None:
            batch = self.batches[rows] = BatchDurations()
        batch.compute_input.add(input_ns)
        batch.compute_infer.add(infer_ns)
        batch.compute_output.add(output_ns)

    def record_success(
        self, total_ns: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.success.add(total_ns)
        self.queue.add(queue_ns)
        self.compute_input.add(input_ns)
        self.compute_infer.add(infer_ns)
        self.compute_output.add(output_ns)

    def record_failure(self, *, total_ns: int) -> None:
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.fail.add(total_ns)

    # -- across worker processes ------------------------------------------------

    _DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")

    def to_json(self) -> dict[str, Any]:
        return {
            "last_inference_ms": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            **{
                name: [getattr(self, name).count, getattr(self, name).ns]
                for name in self._DURATIONS
            },
            "batches": {
                str(size): [
                    [b.compute_input.count, b.compute_input.ns],
                    [b.compute_infer.count, b.compute_infer.ns],
                    [b.compute_output.count, b.compute_output.ns],
                ]
                for size, b in self.batches.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelStatistics:
        stats = cls(
            last_inference_ms=int(data["last_inference_ms"]),
            inference_count=int(data["inference_count"]),
            execution_count=int(data["execution_count"]),
        )
        for name in cls._DURATIONS:
            count, ns = data[name]
            setattr(stats, name, Duration(int(count), int(ns)))
        for size, parts in data["batches"].items():
            stats.batches[int(size)] = BatchDurations(*(Duration(int(c), int(n)) for c, n in parts))
        return stats

    def merge(self, other: ModelStatistics) -> None:
        """Add another process's counters for the same model version."""
        self.last_inference_ms = max(self.last_inference_ms, other.last_inference_ms)
        self.inference_count += other.inference_count
        self.execution_count += other.execution_count
        for name in self._DURATIONS:
            getattr(self, name).merge(getattr(other, name))
        for size, batch in other.batches.items():
            mine = self.batches.setdefault(size, BatchDurations())
            mine.compute_input.merge(batch.compute_input)
            mine.compute_infer.merge(batch.compute_infer)
            mine.compute_output.merge(batch.compute_output)
