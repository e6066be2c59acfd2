"""StreamCalls: a stream's queued requests, withdrawn if the stream ends
first, with answered ones pruned so a long stream's list stays bounded."""

from __future__ import annotations

from typing import Any

from mlserve.runtime.grpc_service import StreamCalls


class _Call:
    def __init__(self) -> None:
        self.finished = False
        self.withdrawn = 0

    def done(self) -> bool:
        return self.finished

    def withdraw(self) -> None:
        self.withdrawn += 1


def _calls(n: int) -> list[Any]:
    return [_Call() for _ in range(n)]


def test_answered_calls_are_pruned_and_the_list_stays_bounded() -> None:
    tracked = StreamCalls()
    stuck = _calls(100)  # never answered, as requests behind a slow batch
    for call in stuck:
        tracked.add(call)
    longest = 0
    for call in _calls(10_000):  # answered soon after they are added
        tracked.add(call)
        call.finished = True
        longest = max(longest, len(tracked))
    assert longest <= 2 * len(stuck) + 1
    tracked.withdraw_all()
    assert all(call.withdrawn == 1 for call in stuck)
    assert len(tracked) == 0


def test_withdraw_all_reaches_every_unanswered_call_once() -> None:
    tracked = StreamCalls()
    calls = _calls(5)
    for call in calls:
        tracked.add(call)
    tracked.withdraw_all()
    tracked.withdraw_all()  # a second end of the same stream: nothing left
    assert [call.withdrawn for call in calls] == [1] * 5
