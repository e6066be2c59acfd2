"""An online model of compute time per batch: t(n) = a*n + b.

Fitted by exponentially weighted least squares over (rows, seconds)
observations, so it follows a model whose speed drifts (thermal, contention)
while staying cheap: five running sums and no history."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LatencyEstimate:
    """Immutable snapshot of the fitted line, read by the batching policy."""

    per_row_s: float
    fixed_s: float
    samples: int
    mean_rows: float = 0.0  # the (weighted) mean batch seen, and its mean time
    mean_s: float = 0.0

    def predict(self, rows: int) -> float:
        return self.fixed_s + self.per_row_s * rows

    def bound(self, rows: int) -> float:
        """A time `rows` should not exceed, for decisions where guessing low
        costs (running a batch on the event loop): infinite before any
        measurement, and past the mean batch seen no cheaper per row than the
        mean (the fitted line may know only small batches, or only one size)."""
        if not self.samples or self.mean_rows <= 0:
            return math.inf
        return max(self.predict(rows), self.mean_s * rows / self.mean_rows)

    @property
    def trusted(self) -> bool:
        return self.samples >= 8


class LatencyModel:
    """Exponentially weighted least squares fit of seconds against rows."""

    def __init__(self, decay: float = 0.98) -> None:
        self._decay = decay
        self._w = 0.0
        self._x = 0.0
        self._y = 0.0
        self._xx = 0.0
        self._xy = 0.0
        self._samples = 0
        self.estimate = LatencyEstimate(0.0, 0.0, 0)

    def observe(self, rows: int, seconds: float) -> LatencyEstimate:
        d = self._decay
        self._w = self._w * d + 1.0
        self._x = self._x * d + rows
        self._y = self._y * d + seconds
        self._xx = self._xx * d + rows * rows
        self._xy = self._xy * d + rows * seconds
        self._samples += 1
        mean_x = self._x / self._w
        mean_y = self._y / self._w
        var_x = self._xx / self._w - mean_x * mean_x
        if var_x > 1e-9:
            slope = max(0.0, (self._xy / self._w - mean_x * mean_y) / var_x)
            intercept = max(0.0, mean_y - slope * mean_x)
        else:  # one batch size seen so far: attribute it all to the fixed cost
            slope, intercept = 0.0, mean_y
        self.estimate = LatencyEstimate(slope, intercept, self._samples, mean_x, mean_y)
        return self.estimate
