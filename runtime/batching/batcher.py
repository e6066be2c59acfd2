"""The batcher of one model version: queue, form batches, run, split.

Requests wait in per-priority FIFO queues. Whenever a request arrives or an
instance frees, `_dispatch` asks the pure policy what to do; a batch is formed
only when an instance is free (so under load the queue, and the next batch,
grow by themselves). A batch is gathered into one contiguous buffer per input,
run on the version's thread pool, and its outputs are split back into views
for each request. With batching off each request goes straight to the
version's threads (their own queue orders the work), under the same queue
limit and deadlines.

Everything here runs on the event loop thread except `_run_and_report` /
`_run_batch` and `_run_alone`, which run on a worker thread (gather,
onnxruntime, split; the GIL is released for the copies and the model) and
hand their results back with `call_soon_threadsafe`.

Inline execution: where a worker thread has no core to run on beside the
event loop (the model's intra-op threads already cover every core; see
model_version.inline_limit), handing a batch to it only adds two thread
switches and the wakeups (measured on one core: 10 us per request on the
convnet, 7 on the MLP).
Batches the latency model bounds within `inline_limit_s` then run on the
event loop thread itself (a model's first batches, of unknown cost, go to the
thread and teach it). Dispatch is deferred to the end of the loop
turn, so that every request read in that turn joins the batch, and the next
batch waits until the replies of the last one have been handed to their
transports (two loop turns), so answers are never held behind a computation.

A lone request, inline: when the batcher is idle and the policy says send, the
first request of a loop turn goes where batching off puts a turn's requests
(`_alone_inline`) and runs alone at the end of the turn, on that short path; a
second request in the same turn moves it to the queue and both batch as above.
At concurrency 1 every request starts with cold caches, so the code a request
touches is what it costs: the queue's dispatch machinery cost a lone MLP
request over gRPC 6-15% of its throughput (h2load at c=1, one core,
alternating windows)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from mlserve import cython_shim as cython
else:
    try:
        import cython
    except ImportError:  # from source, without Cython installed
        from mlserve import cython_shim as cython

from mlserve.errors import (
    DeadlineExceeded,
    InferenceFailed,
    LatencyBudgetExceeded,
    MlserveError,
    Overloaded,
)
from mlserve.ext.batching import select_batch, split_rows
from mlserve.runtime.batching import policy as batch_policy
from mlserve.runtime.batching.gather_buffers import GatherBuffers, padded_rows
from mlserve.runtime.batching.instance_pool import InstancePool
from mlserve.runtime.batching.latency_model import LatencyModel
from mlserve.runtime.batching.policy import (
    BatchPolicy,
    Decision,
    Idle,
    QueueView,
    SendNow,
    Wait,
    best_preferred_prefix,
    lone_preferred_rows,
)
from mlserve.runtime.batching.wake_timer import WakeTimer

RunFn = Callable[[list[str], dict[str, np.ndarray]], list[np.ndarray]]


class Completion(Protocol):
    """Where a request's outcome goes: an asyncio future, or the data plane's
    InferCall, which answers at once (no callback scheduled, no coroutine)."""

    def done(self) -> bool: ...
    def set_result(self, result: BatchResult, /) -> None: ...
    def set_exception(self, exc: BaseException, /) -> None: ...
    def cancel(self) -> bool: ...


ShapeKey = tuple[object, ...]


# The two records built for every request are cdef classes when compiled (a
# C __init__; see mlserve/cython_shim), slotted dataclasses from source.
@cython.dataclasses.dataclass
@cython.cclass
class Pending:
    """One queued request."""

    feeds: dict[str, np.ndarray]
    rows: int
    output_names: list[str]
    key: ShapeKey
    future: Completion
    enqueue_s: float
    deadline_s: float  # 0 = none
    sequence: int
    timer: asyncio.TimerHandle | None = None
    level: int = 0  # priority queue index; kept for a lone request that queues later


def _remove(queue: deque[Pending], entry: Pending) -> bool:
    """Take `entry` itself out of `queue`. (Not `deque.remove`: it compares
    with ==, and a dataclass's == compares the requests' arrays, which raises.)"""
    for index, queued in enumerate(queue):
        if queued is entry:
            del queue[index]
            return True
    return False


@cython.dataclasses.dataclass  # not frozen: one per request, and a frozen init costs 3x
@cython.cclass
class BatchResult:
    """What one request gets back: its outputs and its share of the timings."""

    outputs: list[np.ndarray]
    queue_ns: int
    input_ns: int
    infer_ns: int
    output_ns: int
    batch_rows: int
    batch_requests: int


@dataclass(slots=True)
class BatcherStatistics:
    """Counters for metrics; read by the data plane after each batch."""

    shed: int = 0
    expired: int = 0
    rejected_full: int = 0
    batches: int = 0


@dataclass(frozen=True, slots=True)
class BatcherSettings:
    policy: BatchPolicy
    batching: bool
    instances: int
    max_queue_size: int  # requests, across priorities
    default_timeout_s: float = 0.0
    priority_levels: int = 0  # 0 = one level
    default_priority: int = 0
    preserve_ordering: bool = False
    # Batches predicted to take at most this long run on the event loop thread
    # (0: never, math.inf: always); see the module docstring.
    inline_limit_s: float = 0.0
    # Every input's dims are fixed and checked before submit: requests then
    # differ only in the outputs they ask for, and that alone keys the batch.
    fixed_shapes: bool = False
    # Batches are padded with zero rows up to the next of these sizes
    # (ascending, the last max_batch_size); empty = run every size as it comes.
    pad_sizes: tuple[int, ...] = ()


def shape_key(feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> ShapeKey:
    """Requests batch together only if everything but the first dimension matches."""
    key: list[object] = [tuple(output_names)]
    for name, array in feeds.items():
        key.append((name, array.dtype, array.shape[1:]))  # not .str: it builds a string
    return tuple(key)


class Batcher:
    """Queues and batches the requests of one model version."""

    def __init__(
        self,
        settings: BatcherSettings,
        run: RunFn,
        executor: InstancePool,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_batch: Callable[[BatchResult], None] | None = None,
    ) -> None:
        self.settings = settings
        self._run = run
        self._executor = executor
        self._clock = clock
        levels = max(1, settings.priority_levels)
        self._queues: list[deque[Pending]] = [deque() for _ in range(levels)]
        self._queued = 0
        self._queued_rows = 0
        self._free = settings.instances
        self._wake = WakeTimer(self._on_timer)
        self._timer_armed = False
        self._timer_at = 0.0
        self._sequence = 1
        self._order: deque[Pending] = deque()  # submission order, with preserve_ordering
        self._held: dict[int, BatchResult | BaseException] = {}
        # Nothing learned yet: an idle model does not wait (a lone request must
        # not sit out the delay; from 1.0, the first four lone requests to a
        # model with a 1 s delay each waited 0.4-0.8 s). Load teaches it: a
        # request that finds an instance busy waits, and probes measure gains.
        # Probes start every other arrival (once a gap between arrivals is
        # known, so a probe waits a couple of gaps, not the whole delay) and
        # space out as they gather nothing: a burst at start-up batches from
        # its fourth request, a lone client meets a probe at arrivals 4, 8, 16...
        self._wait_gain = 0.0
        self._probe_every = 2
        self._last_arrival_s = 0.0
        self._arrival_gap_s = 0.0  # EWMA of gaps between batched arrivals
        self._waited_from_rows = 0
        self._buffers = GatherBuffers()
        self.latency = LatencyModel()
        self.stats = BatcherStatistics()
        self._on_batch = on_batch
        self._inline = settings.inline_limit_s > 0
        # This turn's requests to run alone, inline: batching off, all of them;
        # batching on, an idle batcher's lone request (a second one queues both).
        self._alone_inline: list[Pending] = []
        # Batching off, on the instance threads: requests handed to the threads
        # that none has begun, by id of their completion. A thread takes its
        # request out as it begins, so `withdraw` can tell waiting from running.
        self._alone_waiting: dict[int, Pending] = {}
        self._dispatch_hops = 0  # loop turns until a deferred _dispatch runs; 0 = none pending
        self._loop: asyncio.AbstractEventLoop | None = None  # _event_loop

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, looked up once per loop: asyncio.get_running_loop
        makes a getpid system call each time (CPython's check against a fork;
        185 ns here), and submit would pay it for every request."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def close(self) -> None:
        """Stop the wait timer (event loop thread); queued requests are the
        caller's to drain first."""
        self._wake.close()

    # -- submission (event loop) ----------------------------------------------

    @property
    def queued(self) -> int:
        return self._queued

    def submit(  # noqa: PLR0917 (positional: once per request, keywords cost more)
        self,
        feeds: dict[str, np.ndarray],
        rows: int,
        output_names: list[str],
        priority: int = 0,
        timeout_s: float = 0.0,
        completion: Completion | None = None,
    ) -> Completion:
        """Queue one request; `completion` (a new future if None, returned)
        gets its outputs or its error. (Positional: the data plane calls this
        for every request.)"""
        settings = self.settings
        if settings.max_queue_size and self._queued >= settings.max_queue_size:
            self.stats.rejected_full += 1
            raise Overloaded(
                f"the queue of this model is full ({settings.max_queue_size} requests); "
                "retry later",
                retry_after_s=self.latency.estimate.predict(settings.policy.max_batch_size),
            )
        over = (
            batch_policy.admit(
                rows_ahead=self._queued_rows,
                rows=rows,
                instances=settings.instances,
                policy=settings.policy,
                latency=self.latency.estimate,
            )
            if settings.policy.max_latency_s > 0
            else 0.0
        )
        if over > 0:
            self.stats.shed += 1
            raise LatencyBudgetExceeded(
                f"this request would finish about {over * 1000:.1f} ms after the model's "
                f"latency budget of {settings.policy.max_latency_s * 1000:.1f} ms; retry later",
                retry_after_s=over,
            )
        now = self._clock()
        timeout = settings.default_timeout_s
        if timeout_s > 0:
            timeout = min(timeout, timeout_s) if timeout else timeout_s
        loop = self._event_loop()
        if completion is None:
            completion = loop.create_future()
        if not settings.batching:
            deadline_s = now + timeout if timeout else 0.0
            alone = Pending(feeds, rows, output_names, (), completion, now, deadline_s, 0)
            return self._submit_alone(alone)
        level = self._level(priority) if settings.priority_levels else 0
        if settings.policy.max_queue_delay_s:  # the gap caps waits; no delay, no wait
            # A gap longer than the queue delay is idle time, not a rate: clamp it.
            if self._last_arrival_s:  # the first arrival has no gap to measure
                gap = min(now - self._last_arrival_s, settings.policy.max_queue_delay_s)
                self._arrival_gap_s += 0.2 * (gap - self._arrival_gap_s)
            self._last_arrival_s = now
        entry = Pending(  # positional: keywords cost 0.3 us here
            feeds,
            rows,
            output_names,
            (),  # key: computed below, only if the request has to queue
            completion,
            now,
            now + timeout if timeout else 0.0,
            self._sequence,
        )
        self._sequence += 1
        if self._queued == 0 and self._free > 0 and not settings.preserve_ordering:
            # Empty queue and a free instance: ask the policy about this request
            # alone, and if it says go, skip the queue entirely.
            decision = self._decide(now, now, rows, lone_preferred_rows(rows, settings.policy))
            if isinstance(decision, SendNow):
                if not self._inline:
                    self._free -= 1
                    self._launch([entry], now)
                    return entry.future
                if self._runs_inline(rows):  # alone at the turn's end, unless joined
                    entry.level = level
                    self._alone_inline.append(entry)
                    self._queued += 1
                    self._queued_rows += rows
                    loop.call_soon(self._run_alone_inline)
                    return entry.future
        if self._alone_inline:  # another request this turn: the lone one queues too
            (lone,), self._alone_inline = self._alone_inline, []
            self._queued -= 1
            self._queued_rows -= lone.rows
            self._enqueue(lone, now, loop)
        entry.level = level
        self._enqueue(entry, now, loop)
        if self._inline:  # the rest of this loop turn's requests may join the batch
            self._dispatch_later(1)
        else:
            self._dispatch()
        return entry.future

    def _enqueue(self, entry: Pending, now: float, loop: asyncio.AbstractEventLoop) -> None:
        """Into its priority queue (entry.level), keyed, with its expiry timer."""
        settings = self.settings
        queue = self._queues[entry.level]
        if settings.fixed_shapes:
            entry.key = tuple(entry.output_names)
        else:
            entry.key = shape_key(entry.feeds, entry.output_names)
        if entry.deadline_s:
            entry.timer = loop.call_at(
                loop.time() + (entry.deadline_s - now),
                self._expire_one,
                entry,
                queue,
            )
        queue.append(entry)
        if settings.preserve_ordering:
            self._order.append(entry)
        self._queued += 1
        self._queued_rows += entry.rows

    def _submit_alone(self, entry: Pending) -> Completion:
        """Batching off: straight to the version's threads. Their own queue
        orders the work and a free thread takes the next request without a
        round trip through the event loop; limits and deadlines still hold.
        Inline, the requests of one loop turn run one after another at its end
        (not each as it arrives: running the model between one request's Python
        and the next's evicts both from the cache)."""
        loop = self._event_loop()
        rows = entry.rows
        self._queued += 1
        self._queued_rows += rows
        if self._runs_inline(rows):
            self._alone_inline.append(entry)
            if len(self._alone_inline) == 1:
                loop.call_soon(self._run_alone_inline)
        else:
            self._alone_waiting[id(entry.future)] = entry
            self._executor.submit(self._run_alone, entry, loop)
        return entry.future

    def _run_alone_inline(self) -> None:
        """Event loop thread: this turn's requests, each alone, back to back,
        for up to the inline limit; the rest run a loop turn later, once the
        loop has polled its sockets again. So a burst of requests holds the
        loop no longer than one batch may (health checks, other models), and
        a client that left meanwhile is withdrawn before its request runs."""
        pending, self._alone_inline = self._alone_inline, []
        limit = self.settings.inline_limit_s
        began = self._clock()
        for index, entry in enumerate(pending):
            if entry.future.done():  # cancelled while it waited: nothing to run
                self._queued -= 1
                self._queued_rows -= entry.rows
                continue
            self._alone_done(entry, self._outcome_alone(entry))
            if self._clock() - began >= limit and index + 1 < len(pending):
                self._alone_inline = pending[index + 1 :] + self._alone_inline
                self._event_loop().call_soon(self._run_alone_inline)
                return

    def _run_alone(self, entry: Pending, loop: asyncio.AbstractEventLoop) -> None:
        """Worker thread: one request, unless `withdraw` took it out first;
        the answer goes straight back to the loop (no concurrent.futures
        wrapper)."""
        if self._alone_waiting.pop(id(entry.future), None) is None:
            outcome: BatchResult | BaseException = _WITHDRAWN
        else:
            outcome = self._outcome_alone(entry)
        loop.call_soon_threadsafe(self._alone_done, entry, outcome)

    def _outcome_alone(self, entry: Pending) -> BatchResult | BaseException:
        """Run one request, unless it was withdrawn or its deadline passed
        while it was queued."""
        if entry.future.done():  # withdrawn: its client went away
            return _WITHDRAWN
        start = self._clock()
        if entry.deadline_s and start > entry.deadline_s:
            return DeadlineExceeded("the request's timeout expired while it waited in the queue")
        try:
            return self._run_one(entry, start)
        except BaseException as exc:  # delivered to the caller, never lost
            return exc

    def _run_one(self, entry: Pending, started_s: float) -> BatchResult:
        """Run one request on its own: nothing to gather or split (unless padded)."""
        began = time.perf_counter_ns()
        rows = entry.rows
        padded = padded_rows(self.settings.pad_sizes, rows)
        if padded == rows:
            outputs = self._run(entry.output_names, entry.feeds)
        else:
            ran = self._run(entry.output_names, self._buffers.gather([entry.feeds], rows, padded))
            self._buffers.forget_aliased(ran)
            outputs = [array[:rows] for array in ran]
        return BatchResult(  # positional: keywords cost more here
            outputs,
            int((started_s - entry.enqueue_s) * 1e9),
            0,
            time.perf_counter_ns() - began,
            0,
            entry.rows,
            1,
        )

    def _alone_done(self, entry: Pending, outcome: BatchResult | BaseException) -> None:
        self._queued -= 1
        self._queued_rows -= entry.rows
        if isinstance(outcome, BatchResult):
            self.stats.batches += 1
            self._executed(outcome)
        elif isinstance(outcome, DeadlineExceeded):
            self.stats.expired += 1
        _resolve(entry, outcome)

    def withdraw(self, future: Completion) -> None:
        """The caller stopped waiting (its client went away and the handler was
        cancelled): give the queue slot back at once. Called only then, so the
        common path pays no done-callback per request. A request whose run has
        begun (in a batch, or alone on a thread) runs, its answer dropped,
        with batching on or off alike."""
        for queue in self._queues:
            for entry in queue:
                if entry.future is future:
                    _remove(queue, entry)
                    self._forget(entry)
                    if not future.done():
                        future.cancel()
                    return
        if future.done():
            return
        for entry in self._alone_inline:  # to run alone at this turn's end: skipped
            if entry.future is future:
                future.cancel()
                return
        # Handed to the instance threads: cancelled if no thread has begun it
        # (the thread then skips it); one that has runs.
        if self._alone_waiting.pop(id(future), None) is not None:
            future.cancel()

    def _level(self, priority: int) -> int:
        levels = self.settings.priority_levels
        if not levels:
            return 0
        if priority <= 0:
            priority = self.settings.default_priority or levels
        return min(priority, levels) - 1

    # -- forming batches (event loop) -----------------------------------------

    def _head_queue(self) -> deque[Pending] | None:
        for queue in self._queues:
            while queue and queue[0].future.done():  # cancelled or expired
                self._forget(queue.popleft())
            if queue:
                return queue
        return None

    def _forget(self, entry: Pending) -> None:
        self._queued -= 1
        self._queued_rows -= entry.rows
        if entry.timer is not None:
            entry.timer.cancel()

    def _decide(self, now: float, oldest_s: float, ready_rows: int, best: int) -> Decision:
        """Ask the pure policy, describing the queue as it is now."""
        return batch_policy.decide(
            QueueView(  # positional: keywords cost 0.5 us here
                now,
                oldest_s,
                ready_rows,
                best,
                self._free,
                self.settings.instances - self._free,
                self._wait_gain,
                # Counted in arrivals, so that every decision about one
                # arrival (the fast path's, then the queue's) agrees.
                self._sequence % self._probe_every == 0 and self._arrival_gap_s > 0,
                self._arrival_gap_s,
                self._last_arrival_s,
            ),
            self.settings.policy,
            self.latency.estimate,
        )

    def _dispatch(self) -> None:
        settings = self.settings
        while self._free > 0:
            queue = self._head_queue()
            if queue is None:
                return
            now = self._clock()
            if settings.batching:
                chosen: list[int] | None
                if len(queue) == 1:  # the common case at low load: nothing to scan
                    chosen, ready = None, queue[0].rows
                    best = lone_preferred_rows(ready, settings.policy)
                else:
                    keys = [e.key for e in queue]
                    rows = [e.rows for e in queue]
                    chosen, ready = select_batch(keys, rows, settings.policy.max_batch_size)
                    best = best_preferred_prefix(rows, chosen, settings.policy)
                decision = self._decide(now, queue[0].enqueue_s, ready, best)
                if isinstance(decision, Wait):
                    if not self._waited_from_rows:
                        self._waited_from_rows = ready
                    self._arm(now + decision.seconds)
                    return
                if isinstance(decision, Idle):
                    return
                assert isinstance(decision, SendNow)
                if self._waited_from_rows:
                    gained = ready - self._waited_from_rows
                    self._wait_gain = 0.8 * self._wait_gain + 0.2 * gained
                    self._waited_from_rows = 0
                    self._probe_every = (
                        batch_policy.PROBE_EVERY
                        if gained > 0
                        else min(2 * self._probe_every, batch_policy.PROBE_EVERY_MAX)
                    )
                if chosen is None:
                    batch = [queue.popleft()]
                else:
                    chosen = self._trim(queue, chosen, decision.rows)
                    batch = [queue[i] for i in chosen]
                    for index in reversed(chosen):
                        del queue[index]
            else:
                batch = [queue.popleft()]
            for entry in batch:
                self._forget(entry)
                if entry.deadline_s and now >= entry.deadline_s:  # its timer is late
                    self._expire_now(entry)
            if len(batch) == 1:  # the common case: no list to build
                if batch[0].future.done():  # cancelled while it waited
                    continue
                live, live_rows = batch, batch[0].rows
            else:
                live = [e for e in batch if not e.future.done()]
                if not live:
                    continue
                live_rows = sum(e.rows for e in live)
            self._free -= 1
            if self._runs_inline(live_rows):
                self._run_inline(live, now)
                return  # the next batch once these answers are out
            self._launch(live, now)

    @staticmethod
    def _trim(queue: deque[Pending], chosen: list[int], rows: int) -> list[int]:
        """Keep the first chosen entries whose rows fit `rows` (at least one)."""
        kept: list[int] = []
        total = 0
        for index in chosen:
            n = queue[index].rows
            if kept and total + n > rows:
                break
            kept.append(index)
            total += n
        return kept

    def _arm(self, at: float) -> None:
        """(Re)set the wait timer: a new arrival can move it either way."""
        if self._timer_armed and self._timer_at == at:
            return
        self._timer_at = at
        self._timer_armed = True
        self._wake.arm(at - self._clock())

    def _on_timer(self) -> None:
        self._timer_armed = False
        self._dispatch()

    def _dispatch_later(self, turns: int) -> None:
        """Run `_dispatch` after `turns` more loop turns (at least)."""
        if self._dispatch_hops == 0:
            self._event_loop().call_soon(self._deferred_dispatch)
        self._dispatch_hops = max(self._dispatch_hops, turns)

    def _deferred_dispatch(self) -> None:
        self._dispatch_hops -= 1
        if self._dispatch_hops > 0:
            self._event_loop().call_soon(self._deferred_dispatch)
            return
        self._dispatch()

    def _expire_one(self, entry: Pending, queue: deque[Pending]) -> None:
        entry.timer = None
        if entry.future.done():
            return
        early = entry.deadline_s - self._clock()
        if early > 0:  # uvloop rounds to whole ms from the turn's cached time
            entry.timer = self._event_loop().call_later(early, self._expire_one, entry, queue)
            return
        self._expire_now(entry)
        if _remove(queue, entry):  # else already taken into a batch not yet started
            self._forget(entry)

    def _expire_now(self, entry: Pending) -> None:
        if entry.future.done():
            return
        self.stats.expired += 1
        entry.future.set_exception(
            DeadlineExceeded("the request's timeout expired while it waited in the queue")
        )

    # -- running batches ------------------------------------------------------

    def _runs_inline(self, rows: int) -> bool:
        limit = self.settings.inline_limit_s
        return limit > 0 and self.latency.estimate.bound(rows) <= limit

    def _run_inline(self, batch: list[Pending], dispatched_s: float) -> None:
        """Event loop thread: run the batch here. The next batch waits two loop
        turns: a future's handler replies a turn after it resolves and its
        transport writes the turn after; an InferCall hands its answer over at
        once, but one turn measured worse there too (two cores, c=32: 7.4-7.7k
        against 7.8-9.0k requests/s preferring 8), the second turn reading
        more requests into the next batch."""
        try:
            results = self._run_batch(batch, dispatched_s)
        except Exception as exc:  # every request still gets an answer
            results = [exc for _ in batch]
        self._finish(batch, results, dispatch=False)
        if self._queued:  # else the next request's submit dispatches
            self._dispatch_later(2)

    def _launch(self, batch: list[Pending], dispatched_s: float) -> None:
        self._executor.submit(self._run_and_report, batch, dispatched_s, self._event_loop())

    def _run_and_report(
        self, batch: list[Pending], dispatched_s: float, loop: asyncio.AbstractEventLoop
    ) -> None:
        """Worker thread: run the batch and hand the results to the loop."""
        try:
            results = self._run_batch(batch, dispatched_s)
        except BaseException as exc:  # every request still gets an answer
            results = [exc for _ in batch]
        loop.call_soon_threadsafe(self._finish, batch, results)

    def _run_batch(
        self, batch: list[Pending], dispatched_s: float = 0.0
    ) -> list[BatchResult | BaseException]:
        """Worker thread: gather, run, split. Isolates a failing request."""
        if len(batch) == 1:
            try:
                return [self._run_one(batch[0], dispatched_s)]
            except MlserveError as exc:
                return [exc]
        start = time.perf_counter_ns()
        names = batch[0].output_names
        rows = [e.rows for e in batch]
        total_rows = sum(rows)
        try:
            feeds = self._buffers.gather(
                [e.feeds for e in batch],
                total_rows,
                padded_rows(self.settings.pad_sizes, total_rows),
            )
            gathered = time.perf_counter_ns()
            outputs = self._run(names, feeds)
            ran = time.perf_counter_ns()
            self._buffers.forget_aliased(outputs)
        except InferenceFailed as exc:
            if len(batch) == 1:
                return [exc]
            # Rerun each request alone: only the one(s) at fault get an error.
            return [r for entry in batch for r in self._run_batch([entry], dispatched_s)]
        except MlserveError as exc:
            return [exc for _ in batch]
        per_request = [split_rows(array, rows) for array in outputs]  # padding rows: left out
        done = time.perf_counter_ns()
        results: list[BatchResult | BaseException] = []
        for index, entry in enumerate(batch):
            results.append(
                BatchResult(
                    outputs=[views[index] for views in per_request],
                    queue_ns=int((dispatched_s - entry.enqueue_s) * 1e9),
                    input_ns=gathered - start,
                    infer_ns=ran - gathered,
                    output_ns=done - ran,
                    batch_rows=total_rows,
                    batch_requests=len(batch),
                )
            )
        return results

    def _executed(self, result: BatchResult) -> None:
        """One run of the model: teach the latency model, record the execution."""
        self.latency.observe(result.batch_rows, result.infer_ns / 1e9)
        if self._on_batch is not None:
            self._on_batch(result)

    def _finish(
        self,
        batch: list[Pending],
        results: list[BatchResult | BaseException],
        *,
        dispatch: bool = True,
    ) -> None:
        self._free += 1
        stats = self.stats
        stats.batches += 1
        first = results[0]
        if isinstance(first, BatchResult) and first.batch_requests == len(batch):
            self._executed(first)
        elif len(batch) > 1:  # the batch failed and each request was rerun alone
            for result in results:
                if isinstance(result, BatchResult):
                    self._executed(result)
        if self.settings.preserve_ordering:
            for entry, result in zip(batch, results, strict=True):
                self._held[entry.sequence] = result
            self._release_in_order()
        elif len(batch) == 1:  # a lone request, the common case at low load
            _resolve(batch[0], first)
        else:
            for entry, result in zip(batch, results, strict=True):
                _resolve(entry, result)
        if dispatch:
            self._dispatch()

    def _release_in_order(self) -> None:
        """Answer in submission order; requests that ended without running
        (expired, cancelled) do not hold later ones back."""
        order = self._order
        while order:
            head = order[0]
            result = self._held.pop(head.sequence, None)
            if result is not None:
                _resolve(head, result)
            elif not head.future.done():
                return
            order.popleft()


# What a withdrawn request's thread hands back instead of running it (its
# future is done already: _resolve drops this).
_WITHDRAWN = asyncio.CancelledError("withdrawn before it ran")


def _resolve(entry: Pending, result: BatchResult | BaseException) -> None:
    if entry.future.done():
        return
    if isinstance(result, BaseException):
        entry.future.set_exception(result)
    else:
        entry.future.set_result(result)
