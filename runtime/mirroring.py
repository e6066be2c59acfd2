"""Shadow traffic: a request answered by stable and also run, unseen, by the
canary.

The data plane submits the mirrored copy to the canary's batcher with a
`ShadowCall` as its completion (the batcher's `Completion` protocol), so the
copy queues, batches and runs as any request of that version does, while
nobody waits for it: the client has its answer from stable. `MirrorPair`
holds whichever answer comes first and hands both to the rollout hooks when
the second arrives. Mirrored work is bounded by the hooks
(`mirror_admitted`): past the bound a copy is not made, and the drop is
counted there."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlserve.runtime.routing import RolloutHooks

_now = time.perf_counter


class MirrorPair:
    """The two answers of one mirrored request."""

    __slots__ = (
        "_canary",
        "_canary_done",
        "_hooks",
        "_latency_s",
        "_model",
        "_names",
        "_stable",
        "_stable_done",
    )

    def __init__(self, hooks: RolloutHooks, model: str, names: Sequence[str]) -> None:
        self._hooks = hooks
        self._model = model
        self._names = names
        self._stable: Sequence[np.ndarray] | None = None
        self._canary: Sequence[np.ndarray] | None = None
        self._stable_done = self._canary_done = False
        self._latency_s = 0.0

    def stable_answered(self, outputs: Sequence[np.ndarray] | None) -> None:
        """Stable's outputs (None: stable failed, nothing to compare with)."""
        self._stable, self._stable_done = outputs, True
        if self._canary_done:
            self._report()

    def canary_answered(self, outputs: Sequence[np.ndarray] | None, latency_s: float) -> None:
        self._canary, self._canary_done, self._latency_s = outputs, True, latency_s
        if self._stable_done:
            self._report()

    def _report(self) -> None:
        self._hooks.mirrored(self._model, self._names, self._stable, self._canary, self._latency_s)


class ShadowCall:
    """The batcher's completion for a mirrored copy: no client, no answer."""

    __slots__ = ("_done", "_pair", "_started")

    def __init__(self, pair: MirrorPair) -> None:
        self._pair = pair
        self._done = False
        self._started = _now()

    def done(self) -> bool:
        return self._done

    def set_result(self, result: Any) -> None:
        if not self._done:
            self._done = True
            self._pair.canary_answered(result.outputs, _now() - self._started)

    def set_exception(self, exc: BaseException) -> None:
        if not self._done:
            self._done = True
            self._pair.canary_answered(None, _now() - self._started)

    def cancel(self) -> bool:
        if self._done:
            return False
        self._done = True
        return True
