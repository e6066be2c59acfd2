"""A minimal asyncio HTTP/1.1 keep-alive client for load: one connection per
request slot, the same precomputed request bytes written each time, and only
the status line and Content-Length read from each answer.

Each connection is an `asyncio.Protocol` that sends its next request from
inside `data_received`, so a request costs one write, one read callback and a
short header scan: no Task, Future or parser object per request. A general
client (aiohttp, httpx) spends several times that, and the benchmark would
measure the client instead of the server. The probe has already checked that
the server answers with Content-Length; chunked answers are not handled."""

from __future__ import annotations

import asyncio
import time
from typing import cast

from mlserve.bench.recorder import StepPlan, StepRecorder, wait_until
from mlserve.client import error_text

_now = time.monotonic_ns
RECONNECT_PAUSE_S = 0.1


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, load: HttpLoad) -> None:
        self._load = load
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._expect = -1  # total length of the current answer, -1 = headers not read
        self._status = b""
        self._close_after = False
        self._start_ns = 0
        self.busy = False
        self.finished = False  # this slot has sent its last request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance.
        self._transport = cast(asyncio.Transport, transport)

    def send(self) -> None:
        """Send the next request, or retire the slot when the plan says stop."""
        now = _now()
        recorder = self._load.recorder
        if recorder is None or not recorder.may_send(now):
            self.finished = True
            self._load.slot_finished()
            return
        if self._transport is None:  # closed while idle between steps
            recorder.record(now, now, "connection lost", "closed before the request was sent")
            self._load.replace(self)
            return
        self._start_ns = now
        self.busy = True
        self._transport.write(self._load.request)

    def data_received(self, data: bytes) -> None:
        if self._buffer:
            self._buffer += data
            view: bytes | bytearray = self._buffer
        else:
            view = data
        if self._expect < 0:
            end = view.find(b"\r\n\r\n")
            if end < 0:
                if view is data:
                    self._buffer += data
                return
            head = bytes(view[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            if at < 0:  # the probe rules this out; a server that changes its mind
                self._fail("no Content-Length", head[:200].decode("latin-1"))
                return
            stop = head.find(b"\r\n", at + 17)
            length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            self._status = bytes(view[9:12])
            self._close_after = b"\r\nconnection: close" in head
            self._expect = end + 4 + length
        if len(view) < self._expect:
            if view is data:
                self._buffer += data
            return
        now = _now()
        recorder = self._load.recorder
        assert recorder is not None
        self.busy = False
        if self._status == b"200":
            recorder.record(self._start_ns, now)
        else:
            kind = f"HTTP {self._status.decode('latin-1')}"
            detail = ""
            if recorder.wants_detail(kind):
                header_end = view.find(b"\r\n\r\n") + 4
                detail = error_text(bytes(view[header_end : self._expect]))
            recorder.record(self._start_ns, now, kind, detail)
        self._buffer.clear()
        self._expect = -1
        if self._close_after:  # the server closes it; connection_lost reconnects
            assert self._transport is not None
            self._transport.close()
        else:
            self.send()

    def _fail(self, kind: str, detail: str) -> None:
        recorder = self._load.recorder
        if self.busy and recorder is not None:
            recorder.record(self._start_ns, _now(), kind, detail)
        self.busy = False
        self._buffer.clear()
        self._expect = -1
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        recorder = self._load.recorder
        if self.busy and recorder is not None:
            self.busy = False
            detail = str(exc) if exc else "the server closed the connection"
            recorder.record(self._start_ns, _now(), "connection lost", detail)
        if not self.finished and recorder is not None:
            self._load.replace(self)

    def close(self) -> None:
        self.finished = True
        if self._transport is not None:
            self._transport.close()


class HttpLoad:
    """A worker's HTTP client: `prepare(slots)` connects, `run(plan)` sends."""

    def __init__(self, host: str, port: int, request: bytes) -> None:
        self._host = host
        self._port = port
        self.request = request
        self.recorder: StepRecorder | None = None
        self._connections: list[_Connection] = []
        self._active = 0
        self._done: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        """Connections are per step (prepare), so nothing to do here."""

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(
            lambda: _Connection(self), self._host, self._port
        )
        return protocol

    async def prepare(self, slots: int) -> None:
        """Open one connection per slot before the clock starts."""
        self._connections = list(await asyncio.gather(*(self._connect() for _ in range(slots))))

    async def run(self, plan: StepPlan, recorder: StepRecorder) -> None:
        loop = asyncio.get_running_loop()
        self.recorder = recorder
        self._done = loop.create_future()
        self._active = len(self._connections)
        await wait_until(plan.start_ns)
        for connection in list(self._connections):
            connection.send()
        if self._active:
            await self._done
        for connection in self._connections:
            connection.close()
        self._connections = []
        self.recorder = None

    def slot_finished(self) -> None:
        self._active -= 1
        if self._active == 0 and self._done is not None and not self._done.done():
            self._done.set_result(None)

    def replace(self, old: _Connection) -> None:
        """A connection closed mid-step: open another for the slot (from a
        callback, so the reconnect runs as a task)."""
        task = asyncio.get_running_loop().create_task(self._reconnect(old))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reconnect(self, old: _Connection) -> None:
        recorder = self.recorder
        while recorder is not None:
            try:
                fresh = await self._connect()
            except OSError as exc:
                now = _now()
                if not recorder.may_send(now):
                    old.finished = True
                    self.slot_finished()
                    return
                recorder.record(now, _now(), "connect failed", str(exc))
                await asyncio.sleep(RECONNECT_PAUSE_S)
                continue
            if old in self._connections:
                self._connections[self._connections.index(old)] = fresh
            fresh.send()
            return

    async def close(self) -> None:
        for connection in self._connections:
            connection.close()
        for task in list(self._tasks):
            task.cancel()
