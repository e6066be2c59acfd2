"""What one worker process sends and records during one concurrency level.

The parent hands each worker a `StepPlan` (times on the shared monotonic
clock); every request slot asks `may_send()` before each request and calls
`record()` after it. Latencies go into one `array('q')` of nanoseconds, not a
Python object per request, and travel back to the parent as bytes in a
`StepResult`, where all workers' arrays are merged for exact percentiles.

A request is measured when it was *sent* at or after `measure_ns`; earlier
ones are warmup. In duration mode no request is sent at or after `end_ns`, and
the ones in flight are awaited and counted: every request the server answers
is in the report, so its figures add up to the server's own counters."""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import MutableSequence
from dataclasses import dataclass, field

MAX_ERROR_KINDS = 32  # distinct error kinds kept per worker; the rest are "other"


@dataclass(frozen=True, slots=True)
class StepPlan:
    slots: int  # requests this worker keeps in flight
    start_ns: int  # time.monotonic_ns() at which all workers start sending
    measure_ns: int  # start_ns + warmup
    end_ns: int | None  # duration mode: send nothing from here on
    quota: int | None  # request-count mode: measured requests this worker sends


@dataclass(slots=True)
class StepResult:
    ok: int = 0
    errors: int = 0
    warmup_ok: int = 0
    warmup_errors: int = 0
    last_ns: int = 0  # completion time of the last measured request
    latencies_ns: bytes = b""  # int64 per measured success, native byte order
    error_counts: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, str] = field(default_factory=dict)


async def wait_until(deadline_ns: int) -> None:
    """Sleep until the shared clock reaches `deadline_ns`. Event loops may wake a
    timer early (uvloop by up to a millisecond), and a slot that started early
    would send warmup requests in a run that asked for none."""
    while (left_ns := deadline_ns - time.monotonic_ns()) > 0:
        await asyncio.sleep(left_ns / 1e9)


class StepRecorder:
    """The per-process ledger of one step; cheap enough to call per request."""

    __slots__ = (
        "_end_ns",
        "_measure_ns",
        "_progress",
        "_progress_at",
        "_remaining",
        "error_counts",
        "error_examples",
        "errors",
        "last_ns",
        "latencies",
        "warmup_errors",
        "warmup_ok",
    )

    def __init__(self, plan: StepPlan, progress: MutableSequence[int], index: int) -> None:
        self._measure_ns = plan.measure_ns
        self._end_ns = plan.end_ns
        self._remaining = plan.quota
        # Shared-memory counters the parent reads for the progress display:
        # [2 * index] = measured requests done, [2 * index + 1] = warmup done.
        self._progress = progress
        self._progress_at = 2 * index
        self.latencies = array("q")
        self.errors = 0
        self.warmup_ok = 0
        self.warmup_errors = 0
        self.last_ns = 0
        self.error_counts: dict[str, int] = {}
        self.error_examples: dict[str, str] = {}

    def may_send(self, now_ns: int) -> bool:
        """Whether a slot may send a request now (takes one from the quota)."""
        if self._remaining is None:
            assert self._end_ns is not None
            return now_ns < self._end_ns
        if now_ns < self._measure_ns:
            return True
        if self._remaining > 0:
            self._remaining -= 1
            return True
        return False

    def record(
        self, start_ns: int, end_ns: int, error: str | None = None, detail: str = ""
    ) -> None:
        """One answered (or failed) request; `error` is its kind, e.g. 'HTTP 503'."""
        if start_ns < self._measure_ns:
            if error is None:
                self.warmup_ok += 1
            else:
                self.warmup_errors += 1
                self._note(error, detail)
            self._progress[self._progress_at + 1] += 1
            return
        if error is None:
            self.latencies.append(end_ns - start_ns)
        else:
            self.errors += 1
            self._note(error, detail)
        self.last_ns = max(self.last_ns, end_ns)
        self._progress[self._progress_at] += 1

    def wants_detail(self, error: str) -> bool:
        """Whether `record` would keep a message for this kind (decode it only then)."""
        return error not in self.error_examples

    def _note(self, error: str, detail: str) -> None:
        if error not in self.error_counts and len(self.error_counts) >= MAX_ERROR_KINDS:
            error = "other"
        self.error_counts[error] = self.error_counts.get(error, 0) + 1
        self.error_examples.setdefault(error, detail)

    def result(self) -> StepResult:
        return StepResult(
            ok=len(self.latencies),
            errors=self.errors,
            warmup_ok=self.warmup_ok,
            warmup_errors=self.warmup_errors,
            last_ns=self.last_ns,
            latencies_ns=self.latencies.tobytes(),
            error_counts=dict(self.error_counts),
            error_examples=dict(self.error_examples),
        )
