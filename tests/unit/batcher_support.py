"""The fake model and the helpers the batcher's unit tests share."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import numpy as np

from mlserve.errors import InferenceFailed
from mlserve.runtime.batching.batcher import Batcher, BatcherSettings, BatchResult
from mlserve.runtime.batching.instance_pool import InstancePool
from mlserve.runtime.batching.policy import BatchPolicy

# Only a hang reaches this: every test opens its gate once it has set the scene.
GATE_WAIT_S = 60.0


class FakeModel:
    """y = 2x + 1 row by row; NaN input fails the whole run, as a bad row can.
    With `gate`, every run waits until the test sets it."""

    def __init__(self, gate: threading.Event | None = None, delay_s: float = 0.0) -> None:
        self.gate = gate
        self.delay_s = delay_s
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.gate is not None and not self.gate.wait(GATE_WAIT_S):
            raise AssertionError("the test never opened the gate")
        if self.delay_s:
            time.sleep(self.delay_s)
        x = feeds["x"]
        with self.lock:
            self.batches.append(x.shape[0])
        if np.isnan(x).any():
            raise InferenceFailed("NaN in the input")
        return [x * 2 + 1]


def make(
    model: FakeModel,
    *,
    max_batch: int = 8,
    instances: int = 1,
    batching: bool = True,
    on_batch: Callable[[BatchResult], None] | None = None,
    **kw: object,
) -> tuple[Batcher, InstancePool]:
    executor = InstancePool(instances, "test")
    delay = float(kw.pop("max_queue_delay_s", 0.0))  # type: ignore[arg-type]
    preferred: tuple[int, ...] = kw.pop("preferred", ())  # type: ignore[assignment]
    settings_ = BatcherSettings(
        policy=BatchPolicy(
            max_batch_size=max_batch, preferred_batch_sizes=preferred, max_queue_delay_s=delay
        ),
        batching=batching,
        instances=instances,
        max_queue_size=kw.pop("max_queue_size", 100),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )
    return Batcher(settings_, model.run, executor, on_batch=on_batch), executor


def rows(n: int, start: float = 0.0, width: int = 3) -> np.ndarray:
    return np.arange(n * width, dtype=np.float32).reshape(n, width) + start


def submit(batcher: Batcher, x: np.ndarray, **kw: object) -> asyncio.Future[BatchResult]:
    return batcher.submit({"x": x}, x.shape[0], ["y"], **kw)  # type: ignore[arg-type]
