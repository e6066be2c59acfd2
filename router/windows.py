"""What each track did, gathered for the judge: counts, and bounded samples
of latencies and outputs.

The request path adds one observation per routed request (`TrackWindow.add`:
two integer bumps and, while the sample has room or the reservoir picks it,
a store); the controller takes a `snapshot()` for the judge and starts a new
step with `reset()`. Samples are reservoirs (Vitter's algorithm R) of at most
`SAMPLE_SIZE` values, so memory stays flat however long a step runs, and
the sample is uniform over the step; an answer's outputs are summarized only
when it enters the sample."""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlserve.router.judge import OutputSample, TrackEvidence

SAMPLE_SIZE = 2000
_random = random.Random(0x5EED).random
_bucket = bisect.bisect_left


# One answer's outputs -> a summary value per output, and the names of those
# whose values are classes (router/hooks.py); run only for sampled answers.
Summarize = Callable[[Any], tuple[dict[str, float], frozenset[str]]]


@dataclass
class TrackWindow:
    """One track's requests over a span (a step, or the whole rollout)."""

    requests: int = 0
    errors: int = 0
    latencies_s: list[float] = field(default_factory=list)
    outputs: dict[str, list[float]] = field(default_factory=dict)
    categorical: set[str] = field(default_factory=set)
    _answered: int = 0

    def add(
        self,
        failed: bool,
        latency_s: float,
        outputs: Any = None,
        summarize: Summarize | None = None,
    ) -> None:
        """One request: failed on the server's side, or answered in
        `latency_s`. `outputs` (the answer's, summarized by `summarize`) is
        read only when this answer enters the sample: past SAMPLE_SIZE
        answers, rarely (the cost per request stays flat)."""
        self.requests += 1
        if failed:
            self.errors += 1
            return
        self._answered += 1
        slot = self._answered - 1
        if slot >= SAMPLE_SIZE:
            slot = int(_random() * self._answered)
            if slot >= SAMPLE_SIZE:
                return
        _store(self.latencies_s, slot, latency_s)
        if outputs is not None and summarize is not None:
            values, classes = summarize(outputs)
            if classes and not classes <= self.categorical:
                self.categorical |= classes
            for name, value in values.items():
                _store(self.outputs.setdefault(name, []), slot, value)

    def snapshot(self) -> TrackEvidence:
        return TrackEvidence(
            self.requests,
            self.errors,
            np.asarray(self.latencies_s, np.float64),
            {
                name: OutputSample(np.asarray(values, np.float64), name in self.categorical)
                for name, values in self.outputs.items()
            },
        )


def _store(values: list[float], slot: int, value: float) -> None:
    """Put `value` at `slot`, or append it while the sample is filling (an
    output sample may be shorter than the latency one: not every answer
    carries every output)."""
    if slot >= len(values):
        values.append(value)
    else:
        values[slot] = value


# Latency histogram bounds, seconds (router/metrics.py exports them).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class TrackCounters:
    """Routed requests per track (0 stable, 1 canary) for the metrics: ok and
    failed counts, and a latency histogram of the answered (bucket counts,
    one more past every bound, then their sum). Never reset: Prometheus
    counters."""

    __slots__ = ("failed", "histograms", "ok")

    def __init__(self) -> None:
        self.ok = [0, 0]
        self.failed = [0, 0]
        self.histograms = ([0.0] * (len(BUCKETS) + 2), [0.0] * (len(BUCKETS) + 2))

    def add(self, track: int, failed: bool, latency_s: float) -> None:
        if failed:
            self.failed[track] += 1
            return
        self.ok[track] += 1
        histogram = self.histograms[track]
        histogram[_bucket(BUCKETS, latency_s)] += 1
        histogram[-1] += latency_s
