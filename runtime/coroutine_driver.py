"""Run a coroutine to its end without wrapping it in an asyncio Task.

A Task costs a WeakSet registration in Python on 3.11 and a loop round trip
before its first step: 2.9 us for create_task + await against 0.2 us for
driving the coroutine directly (timeit under uvloop). The transports drive
each request's handler coroutine here instead: one that answers without
waiting runs to the end inside the caller; one that awaits a future is resumed
from that future's done callback, as a Task would be. There is no
cancellation: a request, once started, runs to its answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def drive(
    coro: Coroutine[Any, Any, T],
    on_done: Callable[[T], None],
    on_error: Callable[[BaseException], None],
) -> None:
    """Step `coro` until it waits or ends; `on_done(result)` or `on_error(exc)` at the end."""
    try:
        waiting = coro.send(None)
    except StopIteration as stop:
        on_done(stop.value)
        return
    except BaseException as exc:
        on_error(exc)
        if not isinstance(exc, Exception):
            raise
        return
    if waiting is None:  # a bare yield (asyncio.sleep(0))
        asyncio.get_running_loop().call_soon(drive, coro, on_done, on_error)
        return
    waiting._asyncio_future_blocking = False
    waiting.add_done_callback(lambda _: drive(coro, on_done, on_error))
