"""A one-shot timer on the event loop, precise to microseconds: the end of a
batcher wait.

Event loop timers ride on epoll_wait's millisecond timeout. uvloop rounds a
delay to the nearest millisecond: a 300 us wait fires on the next loop turn,
finds its time not yet come and re-arms, a busy loop for the whole wait
(counted on one server, two models with a 1 ms queue delay, 8 s at
concurrency 8: 10,500 and 43,200 wait decisions, against 2,100 and 3,000
with a timerfd); an 800 us wait fires after 1.1 ms. asyncio rounds up: every wait
under a millisecond takes 1.1 ms. Triton's `max_queue_delay_microseconds` is a
microsecond setting, so on Linux the wait is a timerfd (nanosecond
resolution) that the loop watches like any socket. Python 3.13 has
`os.timerfd_*`; before that the two libc calls go through ctypes. Elsewhere
the loop's timer serves, with delays rounded up to whole milliseconds: late,
but never a busy loop."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import os
import sys
import time
import weakref
from collections.abc import Callable

_NS = 1_000_000_000


class _TimeSpec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _ITimerSpec(ctypes.Structure):
    _fields_ = [("it_interval", _TimeSpec), ("it_value", _TimeSpec)]


def _libc_timerfd() -> tuple[Callable[[], int], Callable[[int, int], None]] | None:
    """timerfd_create / timerfd_settime from libc (Linux, Python < 3.13)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc's
        create, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    create.argtypes = [ctypes.c_int, ctypes.c_int]
    create.restype = ctypes.c_int
    settime.argtypes = [
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(_ITimerSpec),
        ctypes.POINTER(_ITimerSpec),
    ]
    settime.restype = ctypes.c_int

    def make() -> int:
        fd = int(create(time.CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC))
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        return fd

    def set_ns(fd: int, delay_ns: int) -> None:  # relative; 0 disarms
        spec = _ITimerSpec(_TimeSpec(0, 0), _TimeSpec(*divmod(delay_ns, _NS)))
        if settime(fd, 0, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    return make, set_ns


def _os_timerfd() -> tuple[Callable[[], int], Callable[[int, int], None]] | None:
    """Python 3.13's os.timerfd_create / os.timerfd_settime_ns."""
    create = getattr(os, "timerfd_create", None)
    settime_ns = getattr(os, "timerfd_settime_ns", None)
    if create is None or settime_ns is None:
        return None
    flags = os.O_NONBLOCK | os.O_CLOEXEC  # TFD_NONBLOCK / TFD_CLOEXEC

    def make() -> int:
        return int(create(time.CLOCK_MONOTONIC, flags=flags))

    def set_ns(fd: int, delay_ns: int) -> None:
        settime_ns(fd, initial=delay_ns)

    return make, set_ns


TIMERFD = _os_timerfd() or _libc_timerfd()


class WakeTimer:
    """Calls `callback` on the event loop thread once an armed delay passes.
    Arming again replaces the pending expiry; arm, cancel and close from the
    loop thread."""

    def __init__(self, callback: Callable[[], None], *, use_timerfd: bool = True) -> None:
        self._callback = callback
        self._timerfd = TIMERFD if use_timerfd else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0  # loop-timer backend: when the armed delay ends
        self._finalizer: weakref.finalize[[int], WakeTimer] | None = None

    @property
    def precise(self) -> bool:
        """Whether waits end on time (a timerfd) rather than on the loop's ms tick."""
        return self._timerfd is not None

    def arm(self, delay_s: float) -> None:
        """Fire once `delay_s` from now (at least a microsecond)."""
        loop = asyncio.get_running_loop()
        if self._timerfd is None:
            self._due = time.monotonic() + delay_s
            self._call_later(loop, delay_s)
            return
        if self._loop is not loop:
            self._open(loop)
        self._timerfd[1](self._fd, max(int(delay_s * _NS), 1000))

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._fd >= 0 and self._timerfd is not None:
            self._timerfd[1](self._fd, 0)

    def close(self) -> None:
        """Give the file descriptor back (the loop stops watching it)."""
        self.cancel()
        if self._fd < 0:
            return
        loop, fd = self._loop, self._fd
        self._loop, self._fd = None, -1
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if loop is not None and not loop.is_closed():
            loop.remove_reader(fd)
        os.close(fd)

    def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._timerfd is not None
        self.close()
        fd = self._timerfd[0]()
        loop.add_reader(fd, self._fired_fd)
        self._loop, self._fd = loop, fd
        # A batcher dropped without close() (a test's loop ending) still
        # gives the descriptor back.
        self._finalizer = weakref.finalize(self, _close_quietly, fd)

    def _fired_fd(self) -> None:
        try:
            os.read(self._fd, 8)  # the expiry count; resets readiness
        except BlockingIOError:  # re-armed or cancelled after it became readable
            return
        self._callback()

    def _call_later(self, loop: asyncio.AbstractEventLoop, delay_s: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        # Whole milliseconds, rounded up: uvloop would round 0.3 ms down to 0.
        rounded = math.ceil(max(delay_s, 1e-6) * 1000) / 1000
        self._handle = loop.call_later(rounded, self._fired_handle)

    def _fired_handle(self) -> None:
        self._handle = None
        early = self._due - time.monotonic()
        if early > 0:  # uvloop counts from the loop turn's cached time
            self._call_later(asyncio.get_running_loop(), early)
            return
        self._callback()


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):  # closed already
        os.close(fd)
