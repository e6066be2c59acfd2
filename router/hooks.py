"""The rollout's side of the request path: what the data plane reports about
routed and mirrored requests (runtime/routing.py's `RolloutHooks`).

Per routed request this is a few counter bumps and, while the evidence
samples have room, one summary value per output. Mirrored answers are not
compared here: their pairs queue (bounded; a full queue drops, counted) and
the controller's tick compares them, off the request path."""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mlserve.router.plan import OutputComparison
from mlserve.router.rollout import Rollout
from mlserve.router.route_table import Track

PENDING_COMPARISONS = 10_000


class RolloutHooks:
    """Implements the data plane's hooks for every model's rollout."""

    # Latency histogram bounds, seconds (router/metrics.py exports them).
    BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

    def __init__(
        self, rollouts: Callable[[str], Rollout | None], clock: Callable[[], float] = time.time
    ) -> None:
        self._rollouts = rollouts
        self._clock = clock
        self._mirrored_inflight: dict[str, int] = {}
        self.mirror_dropped: dict[str, int] = {}
        # For metrics: requests by (model, track, outcome); latency bucket
        # counts (the last one past every bound) and their sum, by (model, track).
        self.routed: dict[tuple[str, str, str], int] = {}
        self.durations: dict[tuple[str, str], tuple[list[int], float]] = {}
        self._pending: deque[tuple[str, Sequence[str], Sequence[np.ndarray], Sequence[np.ndarray]]]
        self._pending = deque()

    # -- the data plane's calls ----------------------------------------------

    def observe(self, model: str, route: Any, failed: bool, latency_s: float, outputs: Any) -> None:
        self._count(model, route.track.value, failed, latency_s)
        rollout = self._rollouts(model)
        if rollout is None:
            return
        summary, categorical = (
            (None, frozenset()) if outputs is None else _summaries(outputs, rollout.plan.compare)
        )
        rollout.observe(
            route.track,
            failed=failed,
            latency_s=latency_s,
            now=self._clock(),
            outputs=summary,
            categorical=categorical,
        )

    def _count(self, model: str, track: str, failed: bool, latency_s: float) -> None:
        key = (model, track, "error" if failed else "ok")
        self.routed[key] = self.routed.get(key, 0) + 1
        if failed:
            return
        counts, total = self.durations.get((model, track)) or ([0] * (len(self.BUCKETS) + 1), 0.0)
        counts[bisect.bisect_left(self.BUCKETS, latency_s)] += 1
        self.durations[(model, track)] = (counts, total + latency_s)

    def mirror_admitted(self, model: str) -> bool:
        rollout = self._rollouts(model)
        inflight = self._mirrored_inflight.get(model, 0)
        if rollout is None or inflight >= rollout.plan.shadow_max_inflight:
            self.mirror_dropped[model] = self.mirror_dropped.get(model, 0) + 1
            return False
        self._mirrored_inflight[model] = inflight + 1
        return True

    def mirrored(
        self,
        model: str,
        names: Sequence[str],
        stable: Sequence[np.ndarray] | None,
        canary: Sequence[np.ndarray] | None,
        canary_latency_s: float,
    ) -> None:
        self._mirrored_inflight[model] = max(0, self._mirrored_inflight.get(model, 1) - 1)
        rollout = self._rollouts(model)
        if rollout is None:
            return
        rollout.observe(
            Track.CANARY, failed=canary is None, latency_s=canary_latency_s, now=self._clock()
        )
        if stable is None or canary is None:
            return
        if len(self._pending) >= PENDING_COMPARISONS:
            self.mirror_dropped[model] = self.mirror_dropped.get(model, 0) + 1
            return
        self._pending.append((model, names, stable, canary))

    # -- the controller's tick -------------------------------------------------

    def compare_pending(self) -> int:
        """Compare the queued mirrored pairs; returns how many."""
        done = 0
        while self._pending:
            model, names, stable, canary = self._pending.popleft()
            rollout = self._rollouts(model)
            if rollout is None:
                continue
            compare = rollout.plan.compare
            agreed = all(
                _agree(s, c, compare.get(name, OutputComparison()))
                for name, s, c in zip(names, stable, canary, strict=True)
            )
            rollout.observe_mirror(agreed=agreed)
            done += 1
        return done


def _agree(stable: np.ndarray, canary: np.ndarray, how: OutputComparison) -> bool:
    if stable.shape != canary.shape:
        return False
    if how.kind == "argmax":
        axis = -1 if stable.ndim > 1 else None
        return bool(np.array_equal(np.argmax(stable, axis=axis), np.argmax(canary, axis=axis)))
    if how.kind == "equal" or stable.dtype.kind not in "fc":
        return bool(np.array_equal(stable, canary))
    return bool(np.allclose(canary, stable, rtol=how.rtol, atol=how.atol))


def _summaries(
    outputs: Any, compare: Mapping[str, OutputComparison]
) -> tuple[dict[str, float], frozenset[str]]:
    """One value per output of one answer, for the distribution check: the
    class (argmax, or an integer output's first value), else the mean; and
    the names of the outputs whose values are classes."""
    summary = {}
    classes = []
    for output in outputs:
        data = output.data
        if data.size == 0 or data.dtype.kind not in "biuf":
            continue
        how = compare.get(output.name)
        if how is not None and how.kind == "argmax":
            row = data.reshape(data.shape[0], -1)[0] if data.ndim > 1 else data
            summary[output.name] = float(np.argmax(row))
            classes.append(output.name)
        elif data.dtype.kind in "biu":
            summary[output.name] = float(data.flat[0])
            classes.append(output.name)
        else:
            summary[output.name] = float(data.mean())
    return summary, frozenset(classes)
