"""The batcher's wait timer: fires once, never early, and a sub-millisecond
wait is not a busy loop of re-arms (uvloop's millisecond timers are)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest
import uvloop

from mlserve.errors import DeadlineExceeded
from mlserve.runtime.batching.batcher import Batcher, BatcherSettings
from mlserve.runtime.batching.instance_pool import InstancePool
from mlserve.runtime.batching.policy import BatchPolicy
from mlserve.runtime.batching.wake_timer import TIMERFD, WakeTimer

from .batcher_support import GATE_WAIT_S, FakeModel, rows, submit


class HoldFirst(FakeModel):
    """A run whose input starts at 0 waits for the gate; the others run at once."""

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        held = feeds["x"][0, 0] == 0 and self.gate is not None
        if held and not self.gate.wait(GATE_WAIT_S):  # type: ignore[union-attr]
            raise AssertionError("the test never opened the gate")
        x = feeds["x"]
        return [x * 2 + 1]


LOOPS: dict[str, Callable[[Coroutine[Any, Any, Any]], Any]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}
BACKENDS = ["timerfd", "loop-timer"]


async def until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Let the loop run until `condition` holds (the bound is for a hang only)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "not within the hang bound"
        await asyncio.sleep(0.001)


def recording_timer(backend: str) -> tuple[WakeTimer, list[float]]:
    """A timer on `backend` that notes when it fired."""
    fired: list[float] = []
    timer = WakeTimer(lambda: fired.append(time.monotonic()), use_timerfd=backend == "timerfd")
    return timer, fired


def test_linux_has_the_precise_timer() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("timerfd is Linux only; elsewhere waits round up to milliseconds")
    assert TIMERFD is not None
    assert WakeTimer(lambda: None).precise


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loop", LOOPS)
def test_fires_once_and_never_early(loop: str, backend: str) -> None:
    async def scenario() -> None:
        timer, fired = recording_timer(backend)
        for delay in (0.0003, 0.0008, 0.0015):
            fired.clear()
            start = time.monotonic()
            timer.arm(delay)
            await until(lambda: bool(fired))
            assert fired[0] - start >= delay
            await asyncio.sleep(0.02)  # and no second time
            assert len(fired) == 1
        timer.close()

    LOOPS[loop](scenario())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loop", LOOPS)
def test_rearm_replaces_and_cancel_stops(loop: str, backend: str) -> None:
    async def scenario() -> None:
        timer, fired = recording_timer(backend)
        start = time.monotonic()
        timer.arm(0.5)
        timer.arm(0.0005)  # earlier: the 500 ms expiry is gone
        await until(lambda: bool(fired))
        assert 0.0005 <= fired[0] - start < 0.5
        await asyncio.sleep(0.6 - (time.monotonic() - start))
        assert len(fired) == 1  # once, not again at 500 ms
        timer.arm(0.002)
        timer.cancel()
        await asyncio.sleep(0.02)
        assert len(fired) == 1
        timer.close()

    LOOPS[loop](scenario())


def test_close_gives_the_descriptor_back() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("timerfd is Linux only; elsewhere there is no descriptor to give back")

    async def scenario() -> None:
        timer = WakeTimer(lambda: None)
        timer.arm(1.0)
        fd = timer._fd
        os.fstat(fd)  # open
        timer.close()
        with pytest.raises(OSError):
            os.fstat(fd)
        timer.close()  # twice is harmless

    asyncio.run(scenario())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_batch_wait_wakes_the_batcher_once(loop: str) -> None:
    """A request waits for company (another instance is busy, so there is
    load) for a sub-millisecond queue delay: the batcher is woken once for it,
    not once per loop turn, and the request is answered."""

    async def scenario() -> tuple[int, int]:
        """(waits armed, wakeups) for one waiting request."""
        gate = threading.Event()
        model = HoldFirst(gate)
        executor = InstancePool(2, "test")
        # The batcher's clock stands still while the waiting request is
        # submitted, so its decision always finds the whole 0.4 ms ahead (a
        # thread descheduled that long would otherwise find it over).
        frozen: list[float] = []
        batcher = Batcher(
            BatcherSettings(
                policy=BatchPolicy(max_batch_size=8, max_queue_delay_s=0.0004),
                batching=True,
                instances=2,
                max_queue_size=100,
            ),
            model.run,
            executor,
            clock=lambda: frozen[0] if frozen else time.monotonic(),
        )
        wakeups = arms = 0
        on_timer, arm = batcher._on_timer, batcher._wake.arm

        def counting() -> None:
            nonlocal wakeups
            wakeups += 1
            on_timer()

        def counting_arm(seconds: float) -> None:
            nonlocal arms
            arms += 1
            arm(seconds)

        batcher._wake._callback = counting
        batcher._wake.arm = counting_arm  # type: ignore[method-assign]
        busy = submit(batcher, rows(1))  # holds one instance until the gate opens
        assert batcher._free == 1
        wakeups = arms = 0
        frozen.append(time.monotonic())
        waiting = submit(batcher, rows(1, 10))  # an instance is free but one is busy: wait
        frozen.clear()
        result = await waiting
        assert result.outputs[0].tolist() == (rows(1, 10) * 2 + 1).tolist()
        gate.set()
        await busy
        batcher.close()
        executor.shutdown()
        return arms, wakeups

    arms, wakeups = LOOPS[loop](scenario())
    assert arms == 1
    assert wakeups == 1


@pytest.mark.parametrize("loop", LOOPS)
def test_a_sub_millisecond_timeout_never_expires_early(loop: str) -> None:
    """Per-request deadlines are loop timers; uvloop would fire a 300 us one on
    the next loop turn. The request still expires only once its time is up."""

    async def scenario() -> None:
        gate = threading.Event()
        executor = InstancePool(1, "test")
        batcher = Batcher(
            BatcherSettings(
                policy=BatchPolicy(max_batch_size=8), batching=True, instances=1, max_queue_size=10
            ),
            FakeModel(gate).run,
            executor,
        )
        running = submit(batcher, rows(1))  # holds the only instance
        for timeout in (0.0003, 0.0008):
            start = time.monotonic()
            doomed = submit(batcher, rows(1), timeout_s=timeout)
            with pytest.raises(DeadlineExceeded):
                await doomed
            assert time.monotonic() - start >= timeout
        gate.set()
        await running
        batcher.close()
        executor.shutdown()

    LOOPS[loop](scenario())
