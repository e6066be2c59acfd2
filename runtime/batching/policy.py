"""The batching policy as a pure function: given what the queue looks like
now, send a batch of N rows now, or wait (and for how long).

Triton's rules, as its dynamic batcher applies them (`GetDynamicBatch` in
triton-inference-server/core): the batch is the queue's prefix up to
`max_batch_size`. The best preferred prefix is the last one whose rows equal a
preferred size, or else the one just before the largest preferred size is
exceeded. While the oldest request is within `max_queue_delay` (or with no
delay set), that prefix goes at once. Otherwise everything pending goes once
it reaches the largest preferred size or the delay is exceeded. With no
preferred sizes, `max_batch_size` is the one preferred size. Plus two of ours:

- work conservation: an idle server does not make a lone request sit out the
  timer. It waits only when waiting has recently paid off (rows gathered per
  wait) or when other instances are busy, i.e. there is load; and only while
  requests keep arriving: a wait ends once ARRIVAL_GAPS mean arrival gaps
  pass with none (a burst that is over gains nothing from the rest of the
  timer, it only idles the server);
- a latency budget (`max_latency_s`): never wait past the point where the
  oldest request, plus the predicted compute time, would miss it.

`admit` is the matching admission check: refuse up front a request that
cannot finish within the budget, rather than serve it late."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlserve import cython_shim as cython
else:
    try:
        import cython
    except ImportError:  # from source, without Cython installed
        from mlserve import cython_shim as cython

from mlserve.runtime.batching.latency_model import LatencyEstimate

# Waiting must gather at least this many extra rows on average to be worth it.
MIN_WAIT_GAIN_ROWS = 0.5
# Every Nth idle decision waits anyway, so a rising load is noticed; N
# doubles after each wait that gathered nothing (the batcher keeps it), so a
# steady lone client pays for few probes. A probe holds its request for about
# two arrival gaps; at 1 in 256 that cost a lone gRPC client on the MLP 2.8 us
# a request (queue time, 1.4% of its round trip); at 1 in 1024 about 0.7 us,
# and rising load is still noticed within 1024 arrivals.
PROBE_EVERY = 16
PROBE_EVERY_MAX = 1024
# A wait lasts at most this many mean gaps between arrivals past the last one.
ARRIVAL_GAPS = 2.0


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """A model's batching settings, in seconds and rows."""

    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_s: float = 0.0
    max_latency_s: float = 0.0  # 0 = no latency budget
    # Derived once: `decide` reads it for every batch, and a property computing
    # max() cost 0.35 us of an 11 us batched request (py-spy, in process).
    largest_preferred: int = field(init=False)
    # The preferred sizes as Triton takes them: [max_batch_size] when none.
    preferred_or_max: frozenset[int] = field(init=False)

    def __post_init__(self) -> None:
        largest = max(self.preferred_batch_sizes, default=self.max_batch_size)
        object.__setattr__(self, "largest_preferred", largest)
        sizes = frozenset(self.preferred_batch_sizes or (self.max_batch_size,))
        object.__setattr__(self, "preferred_or_max", sizes)


def lone_preferred_rows(rows: int, policy: BatchPolicy) -> int:
    """best_preferred_prefix of a request alone: its rows, if a preferred size
    (no lists to build on the path of a lone request)."""
    return rows if rows in policy.preferred_or_max else 0


def best_preferred_prefix(rows: list[int], chosen: list[int], policy: BatchPolicy) -> int:
    """Rows of the best preferred prefix of a batch (0: none), Triton's way:
    the last prefix whose rows equal a preferred size, or else the prefix just
    before one more request would pass the largest preferred size.

    `chosen` indexes `rows`: the requests that share the head's batch, in
    queue order, as `select_batch` picks them."""
    sizes = policy.preferred_or_max
    largest: cython.Py_ssize_t = policy.largest_preferred
    best: cython.Py_ssize_t = 0
    pending: cython.Py_ssize_t = 0
    n: cython.Py_ssize_t
    for index in chosen:
        n = rows[index]
        if pending + n > largest:
            return best or pending
        pending += n
        if pending in sizes:
            best = pending
    return best


# Built per decision: cdef classes when compiled (a C __init__; see
# mlserve/cython_shim), slotted dataclasses from source; not frozen.
@cython.dataclasses.dataclass
@cython.cclass
class QueueView:
    """What the mechanism tells the policy about the queue at one instant."""

    now_s: float
    oldest_enqueue_s: float  # enqueue time of the head request
    ready_rows: int  # rows of requests batchable with the head, capped at max_batch_size
    best_preferred_rows: int  # best_preferred_prefix of those requests (0: none)
    free_instances: int
    busy_instances: int
    wait_gain_rows: float  # recent average of rows gathered by waiting
    probe_due: bool  # wait even if idle and waiting has not paid off lately
    arrival_gap_s: float  # recent mean gap between arrivals (0 = unknown)
    last_arrival_s: float  # when the newest request arrived


# Decisions are built per request, as QueueView is.
@cython.dataclasses.dataclass
@cython.cclass
class SendNow:
    rows: int


@cython.dataclasses.dataclass
@cython.cclass
class Wait:
    seconds: float


@dataclass(slots=True)
class Idle:
    """Nothing to do until a request arrives or an instance frees."""


IDLE = Idle()


Decision = SendNow | Wait | Idle


def decide(view: QueueView, policy: BatchPolicy, latency: LatencyEstimate) -> Decision:
    """Send a batch of how many rows now, or how long to wait."""
    if view.ready_rows <= 0 or view.free_instances <= 0:
        return IDLE
    rows = view.ready_rows
    remaining = policy.max_queue_delay_s - (view.now_s - view.oldest_enqueue_s)
    exceeded = policy.max_queue_delay_s > 0 and remaining <= 0
    if view.best_preferred_rows and not exceeded:
        return SendNow(view.best_preferred_rows)
    if rows >= policy.largest_preferred or policy.max_queue_delay_s <= 0 or exceeded:
        return SendNow(rows)
    if policy.max_latency_s > 0 and latency.trusted:
        slack = (
            policy.max_latency_s
            - (view.now_s - view.oldest_enqueue_s)
            - latency.predict(policy.max_batch_size)
        )
        remaining = min(remaining, slack)
    if remaining <= 0:
        return SendNow(rows)
    loaded = view.busy_instances > 0
    worth_it = view.wait_gain_rows >= MIN_WAIT_GAIN_ROWS
    if not (loaded or worth_it or view.probe_due):
        return SendNow(rows)
    if view.arrival_gap_s > 0:
        quiet_at = view.last_arrival_s + ARRIVAL_GAPS * view.arrival_gap_s
        remaining = min(remaining, quiet_at - view.now_s)
        if remaining <= 0:
            return SendNow(rows)
    return Wait(remaining)


def admit(
    *,
    rows_ahead: int,
    rows: int,
    instances: int,
    policy: BatchPolicy,
    latency: LatencyEstimate,
) -> float:
    """Predicted seconds over the latency budget if this request is queued
    (<= 0: admit). Only a trusted latency model refuses anything."""
    if policy.max_latency_s <= 0 or not latency.trusted:
        return 0.0
    full = policy.max_batch_size
    batches_ahead = (rows_ahead + rows + full - 1) // full
    rounds = (batches_ahead + instances - 1) // max(1, instances)
    predicted = rounds * latency.predict(min(full, rows_ahead + rows))
    return predicted - policy.max_latency_s
