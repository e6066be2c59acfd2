"""The batching policy as a plain function: Triton's rules, work conservation
and the latency budget, with time given as data."""

from __future__ import annotations

import math

import pytest

from mlserve.runtime.batching.latency_model import LatencyEstimate, LatencyModel
from mlserve.runtime.batching.policy import (
    BatchPolicy,
    Idle,
    QueueView,
    SendNow,
    Wait,
    admit,
    best_preferred_prefix,
    decide,
    lone_preferred_rows,
)

UNTRUSTED = LatencyEstimate(0.0, 0.0, 0)
# 1 ms fixed + 0.1 ms per row.
TRUSTED = LatencyEstimate(0.0001, 0.001, 100)


def view(**changes: float | bool) -> QueueView:
    base = {
        "now_s": 10.0,
        "oldest_enqueue_s": 10.0,
        "ready_rows": 3,
        "best_preferred_rows": 0,
        "free_instances": 1,
        "busy_instances": 1,
        "wait_gain_rows": 1.0,
        "probe_due": False,
        "arrival_gap_s": 0.0,
        "last_arrival_s": 10.0,
    }
    base.update(changes)
    return QueueView(**base)  # type: ignore[arg-type]


def test_nothing_to_do_without_rows_or_instances() -> None:
    policy = BatchPolicy(max_batch_size=8)
    assert decide(view(ready_rows=0), policy, UNTRUSTED) == Idle()
    assert decide(view(free_instances=0), policy, UNTRUSTED) == Idle()


def test_no_delay_sends_what_is_there() -> None:
    assert decide(view(), BatchPolicy(max_batch_size=8), UNTRUSTED) == SendNow(3)


def test_full_batch_goes_at_once() -> None:
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_s=1.0)
    assert decide(view(ready_rows=8), policy, UNTRUSTED) == SendNow(8)


def test_preferred_sizes() -> None:
    """Triton's GetDynamicBatch: within the delay, the best preferred prefix
    goes at once, even when more rows wait; past it, everything pending."""
    policy = BatchPolicy(max_batch_size=16, preferred_batch_sizes=(4, 8), max_queue_delay_s=1.0)
    assert decide(view(ready_rows=4, best_preferred_rows=4), policy, UNTRUSTED) == SendNow(4)
    assert decide(view(ready_rows=5, best_preferred_rows=4), policy, UNTRUSTED) == SendNow(4)
    assert decide(view(ready_rows=12, best_preferred_rows=8), policy, UNTRUSTED) == SendNow(8)
    assert decide(view(ready_rows=16, best_preferred_rows=8), policy, UNTRUSTED) == SendNow(8)
    assert decide(view(ready_rows=3), policy, UNTRUSTED) == Wait(1.0)
    late = view(now_s=11.0, ready_rows=12, best_preferred_rows=8)
    assert decide(late, policy, UNTRUSTED) == SendNow(12)
    # One request with more rows than the largest preferred size goes as it is.
    assert decide(view(ready_rows=10), policy, UNTRUSTED) == SendNow(10)


def test_preferred_sizes_without_a_delay() -> None:
    """No delay is never exceeded: the preferred prefix whenever there is one."""
    policy = BatchPolicy(max_batch_size=16, preferred_batch_sizes=(4, 8))
    assert decide(view(ready_rows=5, best_preferred_rows=4), policy, UNTRUSTED) == SendNow(4)
    assert decide(view(ready_rows=16, best_preferred_rows=8), policy, UNTRUSTED) == SendNow(8)
    assert decide(view(ready_rows=3), policy, UNTRUSTED) == SendNow(3)


@pytest.mark.parametrize(
    ("rows", "chosen", "preferred", "best"),
    [
        ([1] * 12, range(12), (4, 8), 8),  # the last preferred size reached
        ([1] * 5, range(5), (4, 8), 4),
        ([1, 5, 1, 1, 1], [0, 2, 3, 4], (4, 8), 4),  # only the head's shape counts
        ([3, 3, 3], range(3), (4, 8), 6),  # none reached: the prefix before passing 8
        ([10], [0], (4, 8), 0),  # a lone request past the largest: no prefix
        ([3], [0], (4, 8), 0),
        ([1] * 8, range(8), (), 8),  # no preferred sizes: max_batch_size is the one
        ([3, 3, 3], range(3), (), 6),
    ],
)
def test_best_preferred_prefix(
    rows: list[int], chosen: range | list[int], preferred: tuple[int, ...], best: int
) -> None:
    policy = BatchPolicy(max_batch_size=8 if not preferred else 16, preferred_batch_sizes=preferred)
    assert best_preferred_prefix(rows, list(chosen), policy) == best


@pytest.mark.parametrize("preferred", [(4, 8), ()])
def test_a_lone_request_gets_the_prefix_of_a_queue_of_one(preferred: tuple[int, ...]) -> None:
    policy = BatchPolicy(max_batch_size=16, preferred_batch_sizes=preferred)
    for n in range(1, 20):
        assert lone_preferred_rows(n, policy) == best_preferred_prefix([n], [0], policy)
    assert [n for n in range(1, 20) if lone_preferred_rows(n, policy)] == list(preferred or (16,))


def test_timer_runs_from_the_oldest_request() -> None:
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_s=0.002)
    assert decide(view(now_s=10.0005), policy, UNTRUSTED) == Wait(pytest.approx(0.0015))
    assert decide(view(now_s=10.002), policy, UNTRUSTED) == SendNow(3)


def test_idle_server_does_not_make_a_lone_request_wait() -> None:
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_s=0.002)
    lonely = view(ready_rows=1, busy_instances=0, wait_gain_rows=0.0)
    assert decide(lonely, policy, UNTRUSTED) == SendNow(1)
    # ...unless waiting has been paying off, or it is time to probe for load.
    assert isinstance(decide(view(ready_rows=1, busy_instances=0), policy, UNTRUSTED), Wait)
    probe = view(ready_rows=1, busy_instances=0, wait_gain_rows=0.0, probe_due=True)
    assert isinstance(decide(probe, policy, UNTRUSTED), Wait)


def test_a_wait_ends_when_arrivals_stop() -> None:
    """Requests 100 us apart: wait at most two gaps past the newest one,
    never past the queue delay, and send once the burst is over."""
    policy = BatchPolicy(max_batch_size=64, max_queue_delay_s=0.002)
    flowing = view(now_s=10.0001, last_arrival_s=10.0001, arrival_gap_s=0.0001)
    assert decide(flowing, policy, UNTRUSTED) == Wait(pytest.approx(2 * 0.0001))
    slow = view(now_s=10.0001, last_arrival_s=10.0001, arrival_gap_s=0.005)
    assert decide(slow, policy, UNTRUSTED) == Wait(pytest.approx(0.0019))
    over = view(now_s=10.0004, last_arrival_s=10.0001, arrival_gap_s=0.0001)
    assert decide(over, policy, UNTRUSTED) == SendNow(3)


def test_latency_budget_caps_the_wait() -> None:
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_s=0.050, max_latency_s=0.010)
    # Budget 10 ms, full batch predicted 1.8 ms, oldest waited 2 ms: 6.2 ms of slack left.
    decision = decide(view(now_s=10.002), policy, TRUSTED)
    assert decision == Wait(pytest.approx(0.0062))
    assert decide(view(now_s=10.009), policy, TRUSTED) == SendNow(3)
    # An untrusted model does not cap anything.
    assert decide(view(now_s=10.009), policy, UNTRUSTED) == Wait(pytest.approx(0.041))


def test_admission_against_the_latency_budget() -> None:
    policy = BatchPolicy(max_batch_size=8, max_latency_s=0.005)
    assert admit(rows_ahead=0, rows=1, instances=1, policy=policy, latency=TRUSTED) < 0
    # 40 rows ahead = 5 full batches of 1.8 ms each on one instance: 9 ms > 5 ms.
    over = admit(rows_ahead=40, rows=1, instances=1, policy=policy, latency=TRUSTED)
    assert over == pytest.approx(6 * 0.0018 - 0.005)
    assert admit(rows_ahead=40, rows=1, instances=1, policy=policy, latency=UNTRUSTED) == 0
    assert (
        admit(
            rows_ahead=40,
            rows=1,
            instances=1,
            policy=BatchPolicy(max_batch_size=8),
            latency=TRUSTED,
        )
        == 0
    )


def test_latency_model_learns_the_line() -> None:
    model = LatencyModel()
    for rows in (1, 2, 4, 8, 16, 32) * 4:
        estimate = model.observe(rows, 0.002 + 0.0005 * rows)
    assert estimate.trusted
    assert estimate.fixed_s == pytest.approx(0.002, rel=1e-6)
    assert estimate.per_row_s == pytest.approx(0.0005, rel=1e-6)
    assert estimate.predict(10) == pytest.approx(0.007, rel=1e-6)


def test_latency_bound_never_guesses_low_from_little() -> None:
    """The bound that decides inline execution: unknown before any batch, and
    no cheaper per row than the mean batch once asked past it."""
    model = LatencyModel()
    assert model.estimate.bound(1) == math.inf
    estimate = model.observe(1, 0.003)  # one size seen: the line is flat
    assert estimate.predict(512) == pytest.approx(0.003)
    assert estimate.bound(512) == pytest.approx(0.003 * 512)
    assert estimate.bound(1) == pytest.approx(0.003)
    for rows in (1, 2, 4, 8, 16, 32) * 4:
        estimate = model.observe(rows, 0.002 + 0.0005 * rows)
    assert estimate.bound(4) == pytest.approx(estimate.predict(4))  # below the mean: the line
    mean_rows = estimate.mean_rows
    assert estimate.bound(64) == pytest.approx(estimate.mean_s * 64 / mean_rows)
    assert estimate.bound(64) > estimate.predict(64)
