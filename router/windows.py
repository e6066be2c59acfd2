"""What each track did, gathered for the judge: counts, and bounded samples
of latencies and outputs.

The request path adds one observation per routed request (`TrackWindow.add`:
two integer bumps and, while the sample has room or the reservoir picks it,
a store); the controller takes a `snapshot()` for the judge and starts a new
step with `reset()`. Samples are reservoirs (Vitter's algorithm R) of at most
`SAMPLE_SIZE` values, so memory stays flat however long a step runs, and
the sample is uniform over the step. Windows from several worker processes
merge by adding counts and pooling samples (`merge`)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from mlserve.router.judge import OutputSample, TrackEvidence

SAMPLE_SIZE = 2000


@dataclass
class TrackWindow:
    """One track's requests over a span (a step, or the whole rollout)."""

    requests: int = 0
    errors: int = 0
    latencies_s: list[float] = field(default_factory=list)
    outputs: dict[str, list[float]] = field(default_factory=dict)
    categorical: set[str] = field(default_factory=set)
    _answered: int = 0
    _rng: random.Random = field(default_factory=lambda: random.Random(0x5EED))

    def add(
        self,
        *,
        failed: bool,
        latency_s: float,
        outputs: dict[str, float] | None = None,
        categorical: frozenset[str] = frozenset(),
    ) -> None:
        """One request: failed on the server's side, or answered in
        `latency_s` with one summary value per output (`categorical`: the
        outputs whose values are classes)."""
        if categorical and not categorical <= self.categorical:
            self.categorical |= categorical
        self.requests += 1
        if failed:
            self.errors += 1
            return
        self._answered += 1
        slot = self._answered - 1
        if slot >= SAMPLE_SIZE:
            slot = self._rng.randrange(self._answered)
            if slot >= SAMPLE_SIZE:
                return
        _store(self.latencies_s, slot, latency_s)
        for name, value in (outputs or {}).items():
            _store(self.outputs.setdefault(name, []), slot, value)

    def merge(self, other: TrackWindow) -> None:
        """Add another process's window for the same track and span."""
        self.requests += other.requests
        self.errors += other.errors
        self._answered += other._answered
        self.latencies_s = (self.latencies_s + other.latencies_s)[-2 * SAMPLE_SIZE :]
        for name, values in other.outputs.items():
            self.outputs[name] = (self.outputs.get(name, []) + values)[-2 * SAMPLE_SIZE :]
        self.categorical |= other.categorical

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
