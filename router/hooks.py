"""The rollout's side of the request path: what the data plane reports about
routed and mirrored requests (runtime/routing.py's `RolloutHooks`).

Per routed request this is a few counter bumps and, while the evidence
samples have room, one summary value per output. Mirrored answers are not
compared here: their pairs queue (bounded; a full queue drops, counted) and
the controller's tick compares them, off the request path."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from mlserve.router.outputs import agree
from mlserve.router.plan import OutputComparison
from mlserve.router.rollout import Rollout
from mlserve.router.route_table import Track

PENDING_COMPARISONS = 10_000


class RolloutHooks:
    """Implements the data plane's hooks for every model's rollout."""

    def __init__(
        self, rollouts: Callable[[str], Rollout | None], clock: Callable[[], float] = time.time
    ) -> None:
        self._rollouts = rollouts
        self._clock = clock
        self._mirrored_inflight: dict[str, int] = {}
        self.mirror_dropped: dict[str, int] = {}
        self._pending: deque[tuple[str, Sequence[str], Sequence[np.ndarray], Sequence[np.ndarray]]]
        self._pending = deque()

    # -- the data plane's calls ----------------------------------------------

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
                agree(s, c, compare.get(name, OutputComparison()))
                for name, s, c in zip(names, stable, canary, strict=True)
            )
            rollout.observe_mirror(agreed=agreed)
            done += 1
        return done
