"""The batcher running batches inline on the event loop: a batch takes the
loop's turn, a lone request runs at the turn's end unless joined, and the
inline limit sends long batches to the instance thread."""

from __future__ import annotations

import asyncio
import math
import threading

import numpy as np
import pytest

from mlserve.errors import InferenceFailed
from mlserve.runtime.batching.batcher import Batcher, BatcherSettings, BatchResult
from mlserve.runtime.batching.instance_pool import InstancePool
from mlserve.runtime.batching.policy import BatchPolicy
from tests.unit.batcher_support import FakeModel, make, rows, submit


class ThreadRecordingModel(FakeModel):
    """Also records which thread ran each batch."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.threads.append(threading.current_thread().name)
        return super().run(names, feeds)


def test_inline_batches_run_on_the_loop_and_take_the_whole_turn() -> None:
    """Inline: every request submitted in one loop turn joins one batch, run on
    the event loop thread (no lone first request sent ahead of the rest)."""

    async def scenario() -> None:
        model = ThreadRecordingModel()
        batcher, executor = make(model, inline_limit_s=math.inf)
        inputs = [rows(1, i * 10) for i in range(5)]
        results = await asyncio.gather(*(submit(batcher, x) for x in inputs))
        executor.shutdown()
        assert model.batches == [5]
        assert model.threads == [threading.current_thread().name]
        for x, result in zip(inputs, results, strict=True):
            np.testing.assert_array_equal(result.outputs[0], x * 2 + 1)

    asyncio.run(scenario())


def test_inline_lone_request_runs_alone_at_the_end_of_its_turn() -> None:
    """Inline, idle batcher: a lone request runs on the loop thread at the end
    of its turn (not inside submit), counted as a batch of one; the next turn's
    request, alone again, runs alone too."""

    async def scenario() -> None:
        model = ThreadRecordingModel()
        seen: list[BatchResult] = []
        executor = InstancePool(1, "test")
        batcher = Batcher(
            BatcherSettings(
                policy=BatchPolicy(max_batch_size=8),
                batching=True,
                instances=1,
                max_queue_size=100,
                inline_limit_s=math.inf,
            ),
            model.run,
            executor,
            on_batch=seen.append,
        )
        first = submit(batcher, rows(2))
        assert not first.done() and batcher.queued == 1
        assert not any(batcher._queues)  # held aside, not in the batch queue
        result = await first
        second = await submit(batcher, rows(1, 5))
        executor.shutdown()
        assert model.batches == [2, 1]
        assert model.threads == [threading.current_thread().name] * 2
        np.testing.assert_array_equal(result.outputs[0], rows(2) * 2 + 1)
        np.testing.assert_array_equal(second.outputs[0], rows(1, 5) * 2 + 1)
        assert [(r.batch_rows, r.batch_requests) for r in seen] == [(2, 1), (1, 1)]
        assert batcher.queued == 0 and batcher.stats.batches == 2

    asyncio.run(scenario())


def test_inline_lone_request_joined_in_its_turn_keeps_its_priority() -> None:
    """A lone request that another request joins in the same turn goes back to
    its own priority queue: the later, higher-priority request runs first."""

    async def scenario() -> None:
        model = FakeModel()
        batcher, executor = make(model, inline_limit_s=math.inf, priority_levels=2)
        low = submit(batcher, rows(1, 100), priority=2)
        high = submit(batcher, rows(1), priority=1)
        order: list[str] = []
        low.add_done_callback(lambda _: order.append("low"))
        high.add_done_callback(lambda _: order.append("high"))
        await asyncio.gather(low, high)
        executor.shutdown()
        assert order == ["high", "low"]
        assert model.batches == [1, 1]
        assert batcher.queued == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("batching", [True, False])
@pytest.mark.parametrize("leave", ["cancel", "withdraw"])
def test_inline_lone_request_that_leaves_before_its_turn_ends_never_runs(
    batching: bool, leave: str
) -> None:
    """Its caller cancelled it, or its client left (`withdraw` finds it among
    the turn's lone requests), before the turn's end, batching on or off."""

    async def scenario() -> None:
        model = FakeModel()
        batcher, executor = make(model, batching=batching, inline_limit_s=math.inf)
        lone = submit(batcher, rows(1))
        if leave == "cancel":
            lone.cancel()
        else:
            batcher.withdraw(lone)
        assert lone.cancelled()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        executor.shutdown()
        assert model.batches == []
        assert batcher.queued == 0

    asyncio.run(scenario())


def test_inline_next_batch_waits_for_the_last_answers() -> None:
    """The callbacks that answer one inline batch run before the next batch
    computes, so replies are never held behind a computation."""

    async def scenario() -> None:
        model = FakeModel()
        batcher, executor = make(model, max_batch=2, inline_limit_s=math.inf)
        events: list[str] = []
        original = model.run

        def run(names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            events.append(f"run {feeds['x'].shape[0]}")
            return original(names, feeds)

        batcher._run = run
        futures = [submit(batcher, rows(1, i)) for i in range(4)]
        for index, future in enumerate(futures):
            future.add_done_callback(lambda _, i=index: events.append(f"answer {i}"))
        await asyncio.gather(*futures)
        executor.shutdown()
        assert events == ["run 2", "answer 0", "answer 1", "run 2", "answer 2", "answer 3"]

    asyncio.run(scenario())


def test_inline_limit_sends_long_batches_to_the_instance_thread() -> None:
    """A batch the latency model expects to outlast the limit runs on the
    instance thread; a short one inline."""

    async def scenario() -> None:
        model = ThreadRecordingModel()
        batcher, executor = make(model, max_batch=8, inline_limit_s=0.005)
        for _ in range(10):  # 1 ms a row: 2 rows fit the limit, 8 do not
            batcher.latency.observe(1, 0.001)
            batcher.latency.observe(8, 0.008)
        await submit(batcher, rows(2))
        await submit(batcher, rows(8))
        executor.shutdown()
        loop_thread = threading.current_thread().name
        assert model.threads[0] == loop_thread
        assert model.threads[1] != loop_thread

    asyncio.run(scenario())


def test_inline_without_batching_runs_the_turn_back_to_back() -> None:
    """Batching off, inline: the requests of one loop turn run at its end, each
    alone, on the loop thread; a failure stays with its request."""

    async def scenario() -> None:
        model = ThreadRecordingModel()
        batcher, executor = make(model, batching=False, inline_limit_s=math.inf)
        futures = [submit(batcher, rows(n)) for n in (3, 1, 2)]
        bad = submit(batcher, np.full((1, 3), np.nan, np.float32))
        assert not any(f.done() for f in futures)  # nothing runs inside submit
        results = await asyncio.gather(*futures)
        with pytest.raises(InferenceFailed):
            await bad
        assert batcher.queued == 0
        executor.shutdown()
        assert model.batches == [3, 1, 2, 1]
        assert model.threads == [threading.current_thread().name] * 4
        for n, result in zip((3, 1, 2), results, strict=True):
            np.testing.assert_array_equal(result.outputs[0], rows(n) * 2 + 1)

    asyncio.run(scenario())


def test_inline_without_batching_yields_to_the_loop_past_the_inline_limit() -> None:
    """A burst read in one turn runs in stretches of about the inline limit;
    between them the loop runs what else is ready (a health check, the close
    of a client that gave up), and a request withdrawn there never runs."""

    async def scenario() -> None:
        model = FakeModel(delay_s=0.003)
        batcher, executor = make(model, batching=False, inline_limit_s=0.005)
        for _ in range(20):  # teach it: a row takes about 3 ms, inside the limit
            batcher.latency.observe(1, 0.003)
        futures = [submit(batcher, rows(1, i)) for i in range(10)]
        seen: list[int] = []

        def between() -> None:  # queued behind the first stretch
            seen.append(len(model.batches))
            batcher.withdraw(futures[-1])

        asyncio.get_running_loop().call_soon(between)
        results = await asyncio.gather(*futures[:-1])
        executor.shutdown()
        assert 1 <= seen[0] < 9  # it ran between stretches, not after the burst
        assert futures[-1].cancelled()
        assert len(model.batches) == 9  # the withdrawn one never ran
        for i, result in enumerate(results):
            np.testing.assert_array_equal(result.outputs[0], rows(1, i) * 2 + 1)
        assert batcher.queued == 0

    asyncio.run(scenario())


def test_inline_failure_stays_with_the_request_at_fault() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher, executor = make(model, inline_limit_s=math.inf)
        good = [submit(batcher, rows(1, i)) for i in range(3)]
        bad = submit(batcher, np.full((1, 3), np.nan, np.float32))
        results = await asyncio.gather(*good)
        with pytest.raises(InferenceFailed):
            await bad
        executor.shutdown()
        assert all(r.outputs[0].shape == (1, 3) for r in results)

    asyncio.run(scenario())
