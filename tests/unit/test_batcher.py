"""The batcher mechanism with a fake model: batches form when an instance is
free, results split back exactly, failures stay with their request, and
queue limits, deadlines, priorities and ordering hold."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlserve.errors import DeadlineExceeded, InferenceFailed, Overloaded
from mlserve.runtime.batching.batcher import Batcher, BatcherSettings, BatchResult
from mlserve.runtime.batching.instance_pool import InstancePool
from mlserve.runtime.batching.policy import BatchPolicy
from tests.unit.batcher_support import GATE_WAIT_S, FakeModel, make, rows, submit


def test_queue_grows_while_the_instance_is_busy() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher, _ = make(model)
        inputs = [rows(1, i * 10) for i in range(5)]
        futures = [submit(batcher, x) for x in inputs]
        results = await asyncio.gather(*futures)
        assert model.batches == [1, 4]
        assert [r.batch_requests for r in results] == [1, 4, 4, 4, 4]
        for x, result in zip(inputs, results, strict=True):
            np.testing.assert_array_equal(result.outputs[0], x * 2 + 1)

    asyncio.run(scenario())


def test_preferred_sizes_hold_within_the_delay_and_give_way_after_it() -> None:
    """Triton's rules through the batcher: within the delay a full queue goes
    out in preferred-size batches, not at max_batch_size; once the oldest
    request has waited the delay out, everything pending goes."""

    async def scenario(delay_s: float) -> list[int]:
        model = FakeModel()
        batcher, _ = make(model, max_batch=16, preferred=(8,), max_queue_delay_s=delay_s)
        await asyncio.gather(*(submit(batcher, rows(1)) for _ in range(17)))
        return model.batches

    # The first request finds the instance free; the 16 behind it queue.
    assert asyncio.run(scenario(1.0)) == [1, 8, 8]

    async def late() -> list[int]:
        model = FakeModel(delay_s=0.005)
        batcher, _ = make(model, max_batch=16, preferred=(8,), max_queue_delay_s=0.001)
        await asyncio.gather(*(submit(batcher, rows(1)) for _ in range(13)))
        return model.batches

    # The lone first run takes 5 ms: by then the 12 behind it have waited
    # the 1 ms delay out, and go together.
    assert asyncio.run(late()) == [1, 12]


def test_batching_off_runs_requests_alone() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher, _ = make(model, batching=False)
        await asyncio.gather(*(submit(batcher, rows(2)) for _ in range(4)))
        assert model.batches == [2, 2, 2, 2]

    asyncio.run(scenario())


def test_different_shapes_never_share_a_batch_and_do_not_starve() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher, _ = make(model)
        futures = [
            submit(batcher, rows(1, width=3)),
            submit(batcher, rows(1, width=4)),
            submit(batcher, rows(2, width=3)),
            submit(batcher, rows(1, width=4)),
        ]
        results = await asyncio.gather(*futures)
        # [w3] runs at once; then the head (w4) takes the other w4, and w3 x2 goes next.
        assert model.batches == [1, 2, 2]
        assert [r.outputs[0].shape for r in results] == [(1, 3), (1, 4), (2, 3), (1, 4)]

    asyncio.run(scenario())


@settings(max_examples=60, deadline=None)
@given(
    requests=st.lists(
        st.tuples(st.sampled_from([3, 4]), st.integers(1, 3)), min_size=2, max_size=12
    ),
    max_batch=st.integers(3, 16),
    preferred=st.one_of(st.none(), st.integers(1, 8)),
)
def test_batches_take_the_heads_shape_in_queue_order_up_to_the_limit(
    requests: list[tuple[int, int]], max_batch: int, preferred: int | None
) -> None:
    """Whatever the mix of shapes: each batch is the head request and the
    queued requests of its shape behind it, in order, while they fit
    max_batch_size, then trimmed to the size the policy sends (Triton's rule
    without a queue delay: the last prefix of a preferred size, else the one
    before passing the largest, else all). (A queue of one shape whose rows
    all fit is taken without a scan: the same batches.)"""
    if preferred is not None and preferred > max_batch:
        preferred = None  # as a model drops it (model_version)
    sizes = {max_batch} if preferred is None else {preferred}

    def target(chosen_rows: list[int]) -> int:
        best = pending = 0
        for n in chosen_rows:
            if pending + n > max(sizes):
                return best or pending or sum(chosen_rows)
            pending += n
            if pending in sizes:
                best = pending
        return best or pending

    def expected() -> list[int]:
        queue = [(width, n) for width, n in requests[1:]]
        batches = [requests[0][1]]  # the first request finds the instance free
        while queue:
            head_width = queue[0][0]
            chosen, total = [], 0
            for index, (width, n) in enumerate(queue):
                if width != head_width:
                    continue
                if total + n > max_batch and total:
                    break
                chosen.append(index)
                total += n
                if total >= max_batch:
                    break
            kept, sent = [], 0
            size = target([queue[index][1] for index in chosen])
            for index in chosen:
                n = queue[index][1]
                if kept and sent + n > size:
                    break
                kept.append(index)
                sent += n
            batches.append(sent)
            queue = [item for index, item in enumerate(queue) if index not in kept]
        return batches

    async def scenario() -> None:
        model = FakeModel()
        batcher, executor = make(
            model, max_batch=max_batch, preferred=() if preferred is None else (preferred,)
        )
        futures = [submit(batcher, rows(n, width=width)) for width, n in requests]
        await asyncio.gather(*futures)
        executor.shutdown()
        assert model.batches == expected()

    asyncio.run(scenario())


def test_failure_stays_with_the_request_at_fault() -> None:
    async def scenario() -> None:
        gate = threading.Event()
        model = FakeModel(gate)
        batcher, _ = make(model)
        first = submit(batcher, rows(1))  # occupies the instance
        good = submit(batcher, rows(2, 5))
        bad_input = rows(1)
        bad_input[0, 1] = np.nan
        bad = submit(batcher, bad_input)
        also_good = submit(batcher, rows(1, 9))
        gate.set()
        await first
        np.testing.assert_array_equal((await good).outputs[0], rows(2, 5) * 2 + 1)
        np.testing.assert_array_equal((await also_good).outputs[0], rows(1, 9) * 2 + 1)
        with pytest.raises(InferenceFailed, match="NaN"):
            await bad

    asyncio.run(scenario())


def test_the_reruns_after_a_failed_batch_are_counted_as_executions() -> None:
    """A batch that fails is rerun request by request: each rerun that succeeds
    is an execution the statistics and the latency model see (the failed
    batch and the failed rerun are not)."""

    async def scenario() -> None:
        gate = threading.Event()
        model = FakeModel(gate)
        seen: list[BatchResult] = []
        batcher, executor = make(model, on_batch=seen.append)
        first = submit(batcher, rows(1))  # occupies the instance
        good = submit(batcher, rows(2, 5))
        bad_input = rows(1)
        bad_input[0, 1] = np.nan
        bad = submit(batcher, bad_input)
        gate.set()
        await first
        await good
        with pytest.raises(InferenceFailed):
            await bad
        executor.shutdown()
        assert model.batches == [1, 3, 2, 1]  # the batch of 3 rows failed; reruns
        assert [(r.batch_rows, r.batch_requests) for r in seen] == [(1, 1), (2, 1)]

    asyncio.run(scenario())


def test_a_fresh_model_sends_lone_requests_at_once() -> None:
    """Nothing learned yet about waiting: a lone request to an idle model is
    sent to its instance at once, not held for the queue delay (here a
    second), the first time as every time after."""

    async def scenario() -> None:
        model = FakeModel()
        batcher, executor = make(model, max_queue_delay_s=1.0)
        waits: list[float] = []  # each wait armed, in seconds from when it was armed
        arm = batcher._arm

        def recording_arm(at: float) -> None:
            waits.append(at - batcher._clock())
            arm(at)

        batcher._arm = recording_arm  # type: ignore[method-assign]
        gaps = []
        for index in range(20):
            future = submit(batcher, rows(1, index))
            if index < 2:  # no probe before a gap between arrivals is known
                assert batcher.queued == 0, f"request {index} was held"
            await future
            gaps.append(batcher._arrival_gap_s)
        executor.shutdown()
        assert model.batches == [1] * 20
        # Only the probes waited (arrivals 4, 8, 16), each about two arrival
        # gaps (the average then), not the 1 s delay.
        assert 1 <= len(waits) <= 3
        assert max(waits) <= 2 * max(gaps) + 1e-3

    asyncio.run(scenario())


def test_full_queue_is_refused_at_once() -> None:
    async def scenario() -> None:
        gate = threading.Event()
        batcher, _ = make(FakeModel(gate), max_queue_size=2)
        futures = [submit(batcher, rows(1)) for _ in range(3)]  # 1 running + 2 queued
        with pytest.raises(Overloaded, match="queue of this model is full"):
            submit(batcher, rows(1))
        assert batcher.stats.rejected_full == 1
        gate.set()
        await asyncio.gather(*futures)

    asyncio.run(scenario())


def test_a_withdrawn_request_frees_its_queue_slot_at_once() -> None:
    """A handler cancelled while its request queues (the client went away)
    withdraws it: the slot is free for the next request and the model never
    sees the withdrawn rows."""

    async def scenario() -> None:
        gate = threading.Event()
        model = FakeModel(gate)
        batcher, _ = make(model, max_queue_size=2)
        running = submit(batcher, rows(1))
        gone = submit(batcher, rows(1, 5))
        kept = submit(batcher, rows(1, 7))
        with pytest.raises(Overloaded):
            submit(batcher, rows(1))
        batcher.withdraw(gone)
        assert gone.cancelled()
        assert batcher.queued == 1  # `kept`; the running one has left the queue
        late = submit(batcher, rows(1, 9))  # the freed slot takes it
        gate.set()
        await running
        np.testing.assert_array_equal((await kept).outputs[0], rows(1, 7) * 2 + 1)
        np.testing.assert_array_equal((await late).outputs[0], rows(1, 9) * 2 + 1)
        assert sum(model.batches) == 3  # the withdrawn row never ran
        assert batcher.queued == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("batching", [True, False])
def test_a_request_withdrawn_once_its_run_began_runs_and_is_answered(batching: bool) -> None:
    """Its client left too late: the run had begun. It is not cancelled, and
    its result is delivered (the transport drops it), with batching on or off
    alike; a request withdrawn while still waiting never runs."""

    class Entered(FakeModel):
        def __init__(self, gate: threading.Event) -> None:
            super().__init__(gate)
            self.entered = threading.Event()

        def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            self.entered.set()
            return super().run(names, feeds)

    async def scenario() -> None:
        gate = threading.Event()
        model = Entered(gate)
        batcher, _ = make(model, batching=batching)
        running = submit(batcher, rows(1))
        waiting = submit(batcher, rows(1, 5))
        deadline = time.monotonic() + 5
        while not model.entered.is_set():
            assert time.monotonic() < deadline, "the first request never ran"
            await asyncio.sleep(0.001)
        batcher.withdraw(running)
        batcher.withdraw(waiting)
        assert not running.cancelled()
        assert waiting.cancelled()
        gate.set()
        np.testing.assert_array_equal((await running).outputs[0], rows(1) * 2 + 1)
        # Batching off, the thread hands the withdrawn request back (skipped)
        # after the first one's answer: its queue slot returns then.
        while batcher.queued:
            assert time.monotonic() < deadline, "the withdrawn request kept its queue slot"
            await asyncio.sleep(0.001)
        assert model.batches == [1]  # the waiting one never ran

    asyncio.run(scenario())


def test_requests_behind_others_are_withdrawn_and_expired_by_identity() -> None:
    """Withdrawing or expiring a request queued behind others takes that very
    request out (a dataclass's == would compare the requests' arrays, and
    raise), and frees its slot at once."""

    async def scenario() -> None:
        gate = threading.Event()
        model = FakeModel(gate)
        batcher, _ = make(model)
        running = submit(batcher, rows(1))
        kept = submit(batcher, rows(1, 7))
        doomed = submit(batcher, rows(1, 3), timeout_s=0.02)
        gone = submit(batcher, rows(1, 5))
        batcher.withdraw(gone)
        assert gone.cancelled()
        assert batcher.queued == 2
        with pytest.raises(DeadlineExceeded):
            await asyncio.wait_for(doomed, 30)
        assert batcher.queued == 1  # `kept`: the expired one left the queue
        gate.set()
        await running
        np.testing.assert_array_equal((await kept).outputs[0], rows(1, 7) * 2 + 1)
        assert model.batches == [1, 1]

    asyncio.run(scenario())


def test_expired_requests_are_answered_before_compute() -> None:
    async def scenario() -> None:
        gate = threading.Event()
        model = FakeModel(gate)
        batcher, _ = make(model)
        running = submit(batcher, rows(1))
        doomed = submit(batcher, rows(1), timeout_s=0.02)
        survivor = submit(batcher, rows(1, 7))
        with pytest.raises(DeadlineExceeded):
            await asyncio.wait_for(doomed, 30)
        gate.set()
        await running
        np.testing.assert_array_equal((await survivor).outputs[0], rows(1, 7) * 2 + 1)
        assert model.batches == [1, 1]  # the expired request never reached the model
        assert batcher.stats.expired == 1
        assert batcher.queued == 0

    asyncio.run(scenario())


def test_a_request_past_its_deadline_never_joins_a_batch() -> None:
    """Expiry does not rest on the loop timer alone (it can fire late): a
    request whose deadline has passed when its batch forms is answered
    DEADLINE_EXCEEDED and the model never sees it."""

    async def scenario() -> None:
        now = [100.0]
        gate = threading.Event()
        model = FakeModel(gate)
        executor = InstancePool(1, "test")
        batcher = Batcher(
            BatcherSettings(
                policy=BatchPolicy(max_batch_size=8), batching=True, instances=1, max_queue_size=10
            ),
            model.run,
            executor,
            clock=lambda: now[0],
        )
        running = submit(batcher, rows(1))
        late = submit(batcher, rows(1, 3), timeout_s=60.0)  # its timer: a minute away
        kept = submit(batcher, rows(1, 7))
        now[0] += 120.0  # two minutes pass on the batcher's clock
        gate.set()
        await running
        with pytest.raises(DeadlineExceeded):
            await late
        np.testing.assert_array_equal((await kept).outputs[0], rows(1, 7) * 2 + 1)
        assert model.batches == [1, 1]
        assert batcher.stats.expired == 1
        executor.shutdown()

    asyncio.run(scenario())


def test_higher_priority_goes_first() -> None:
    async def scenario() -> None:
        gate = threading.Event()
        model = FakeModel(gate)
        batcher, _ = make(model, max_batch=1, priority_levels=2, default_priority=2)
        order: list[str] = []
        running = submit(batcher, rows(1))
        low = submit(batcher, rows(1))
        high = submit(batcher, rows(1), priority=1)
        low.add_done_callback(lambda _: order.append("low"))
        high.add_done_callback(lambda _: order.append("high"))
        gate.set()
        await asyncio.gather(running, low, high)
        assert order == ["high", "low"]

    asyncio.run(scenario())


def test_preserve_ordering_across_instances() -> None:
    """Two instances, one request a batch: the first request's run waits
    until the second's has finished, so the second is done first. With
    preserve_ordering the answers still come in request order; without, the
    second comes first (which shows the premise holds)."""

    class Uneven(FakeModel):
        def __init__(self) -> None:
            super().__init__()
            self.second_done = threading.Event()

        def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            first = feeds["x"][0, 0] == 0
            if first and not self.second_done.wait(GATE_WAIT_S):
                raise AssertionError("the second request never ran")
            outputs = super().run(names, feeds)
            if feeds["x"][0, 0] == 100:
                self.second_done.set()
            return outputs

    async def scenario(preserve: bool) -> list[int]:
        batcher, _ = make(Uneven(), max_batch=1, instances=2, preserve_ordering=preserve)
        order: list[int] = []
        futures = [submit(batcher, rows(1, i * 100)) for i in range(4)]
        for index, future in enumerate(futures):
            future.add_done_callback(lambda _, i=index: order.append(i))
        await asyncio.gather(*futures)
        return order

    assert asyncio.run(scenario(True)) == [0, 1, 2, 3]
    assert asyncio.run(scenario(False))[0] == 1


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5), min_size=1, max_size=30),
    max_batch=st.integers(5, 16),
    instances=st.integers(1, 3),
    preserve=st.booleans(),
    gaps=st.lists(st.booleans(), min_size=30, max_size=30),
    inline=st.booleans(),
    pad=st.booleans(),
)
def test_batched_results_equal_unbatched(  # noqa: PLR0917 (Hypothesis passes keywords)
    sizes: list[int],
    max_batch: int,
    instances: int,
    preserve: bool,
    gaps: list[bool],
    inline: bool,
    pad: bool,
) -> None:
    """Random request sizes and arrival order, on the instance threads or
    inline on the loop, padded to allowed sizes or not: every request gets
    exactly its own rows."""
    pad_sizes = (*(n for n in (1, 2, 4, 8) if n < max_batch), max_batch) if pad else ()

    async def scenario() -> None:
        model = FakeModel()
        batcher, executor = make(
            model,
            max_batch=max_batch,
            instances=instances,
            preserve_ordering=preserve,
            inline_limit_s=math.inf if inline else 0.0,
            pad_sizes=pad_sizes,
        )
        inputs = [rows(n, start=i * 100.0) for i, n in enumerate(sizes)]
        futures = []
        resolved: list[int] = []
        for index, x in enumerate(inputs):
            future = submit(batcher, x)
            future.add_done_callback(lambda _, i=index: resolved.append(i))
            futures.append(future)
            if gaps[index]:
                await asyncio.sleep(0)  # let some batches start between arrivals
        results = await asyncio.gather(*futures)
        executor.shutdown()
        for x, result in zip(inputs, results, strict=True):
            np.testing.assert_array_equal(result.outputs[0], x * 2 + 1)
        if pad:
            assert set(model.batches) <= set(pad_sizes)
        else:
            assert sum(model.batches) == sum(sizes)  # nothing lost or run twice
        assert all(b <= max_batch for b in model.batches)
        assert sorted(resolved) == list(range(len(sizes)))
        if preserve:
            assert resolved == list(range(len(sizes)))

    asyncio.run(scenario())


def test_a_lone_client_pays_for_ever_fewer_probes() -> None:
    """With a queue delay, an idle batcher still probes now and then (waits,
    to notice rising load); each probe that gathers nothing doubles the
    interval to the next, so a steady lone client meets few of them."""

    async def scenario() -> None:
        batcher, executor = make(FakeModel(), max_batch=8, max_queue_delay_s=0.005)
        waits = 0
        arm = batcher._arm

        def counting_arm(at: float) -> None:
            nonlocal waits
            waits += 1
            arm(at)

        batcher._arm = counting_arm  # type: ignore[method-assign]
        for index in range(300):
            result = await submit(batcher, rows(1, index))
            np.testing.assert_array_equal(result.outputs[0], rows(1, index) * 2 + 1)
        executor.shutdown()
        # Probes from every other arrival at start-up, each doubling the
        # interval (arrivals 4, 8, 16, ..., 256): seven waits in 300 requests,
        # the interval then 256. Without the doubling, about 150.
        assert 1 <= waits <= 8
        assert batcher._probe_every == 256

    asyncio.run(scenario())


def test_batches_are_padded_up_to_the_allowed_sizes() -> None:
    """The model sees only allowed sizes (zero rows appended); each request
    gets its own rows, and the batch is reported by its real rows."""

    async def scenario() -> None:
        gate = threading.Event()
        model = FakeModel(gate)
        batcher, executor = make(model, pad_sizes=(4, 8))
        inputs = [rows(1), rows(1, 10), rows(2, 20), rows(2, 30)]
        futures = [submit(batcher, x) for x in inputs]
        gate.set()
        results = await asyncio.gather(*futures)
        executor.shutdown()
        assert model.batches == [4, 8]  # 1 row alone, then 5 rows
        assert [r.batch_rows for r in results] == [1, 5, 5, 5]
        for x, result in zip(inputs, results, strict=True):
            np.testing.assert_array_equal(result.outputs[0], x * 2 + 1)

    asyncio.run(scenario())


def test_fixed_shapes_batch_by_requested_outputs() -> None:
    """With every dim fixed (checked before submit) the outputs asked for are
    all that keeps two requests apart."""

    async def scenario() -> None:
        model = FakeModel()
        batcher, executor = make(model, fixed_shapes=True, inline_limit_s=math.inf)
        futures = [
            batcher.submit({"x": rows(1, i)}, 1, ["y"] if i % 2 else ["z"]) for i in range(6)
        ]
        await asyncio.gather(*futures)
        executor.shutdown()
        assert sorted(model.batches) == [3, 3]

    asyncio.run(scenario())
