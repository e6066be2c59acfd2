"""A bare HTTP/1.1 server: an asyncio Protocol driving the httptools parser.

No web framework sits on the request path (a bare protocol costs about 8 us a
request here, uvicorn's ASGI about 38 us). Keep-alive and pipelining are
supported; requests on one connection are answered in order. The protocol
knows nothing of V2: it hands each complete request to a handler coroutine,
or to a starter that answers it by callback (the inference endpoint)."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

import httptools

from mlserve.runtime.closing import close_gently
from mlserve.runtime.coroutine_driver import drive

if TYPE_CHECKING:
    from mlserve import cython_shim as cython
else:
    try:
        import cython
    except ImportError:  # from source, without Cython installed
        from mlserve import cython_shim as cython

_MAX_PIPELINE = 32
# A request's line and headers, together, and its target alone: past these a
# client is answered 431 / 414 and the connection closed (httptools holds a
# header whole until it ends, so without a bound one header could fill memory).
MAX_HEADER_BYTES = 64 * 1024
MAX_URL_BYTES = 8 * 1024
_now = time.monotonic


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request answered at once."""


_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


@cython.dataclasses.dataclass
@cython.cclass
class HttpRequest:
    """One request read whole. A cdef class compiled (one is built per
    request: a C __init__, not the dataclass's Python one), a slotted
    dataclass from source (mlserve/cython_shim)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool
    # Not a request: the connection's refusal (status, message), queued so
    # that it is answered after the answers owed before it, then closes.
    refusal: tuple[int, str] | None = None
    # What the starter queued for it (the data plane's InferCall), withdrawn
    # if the client leaves before its answer: `withdraw()`.
    call: Any = None


def body_over_limit(size: int, limit: int) -> str:
    """The refusal of a body over --http-max-input-size, worded once."""
    return (
        f"request body is {size} bytes, over the server's limit of {limit} bytes "
        "(--http-max-input-size)"
    )


@dataclass(slots=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[HttpRequest], Coroutine[Any, Any, HttpResponse]]
# A handler that answers by callback instead, for the requests it takes:
# start(request, answer, context) is True if it took `request` and will call
# answer(context, response) once (perhaps before returning); False leaves the
# request to the coroutine handler.
Answer = Callable[[Any, HttpResponse], None]
Starter = Callable[[HttpRequest, Answer, Any], bool]


class TurnWrites:
    """Keep-alive answers made in one event loop turn: the first is written at
    once, the rest together once the turn's callbacks have run (one
    `call_soon`).

    A batch answers its requests one after another, each on its own
    connection. Written as each is made, every write finds the client asleep
    and wakes it: on loopback the writer pays for that wake-up, a
    cross-core interrupt, and on a VM an exit. Written back to back after
    the batch, the first wakes the client and most of the rest find it
    awake (perf, MLP over HTTP binary at c=64, the two builds in turn: the
    writes took 25 us of a request's 137 before, 15 of 105 after). A lone
    answer (c=1) still goes out at once; a later one waits at most for the
    rest of its batch's answers to be made. Anything else a connection
    writes, or its close, first writes what it has waiting here, so its
    bytes stay in order."""

    def __init__(self) -> None:
        # Built on the loop it serves; looked up once, as each lookup makes a
        # getpid system call (Batcher._event_loop).
        self._loop = asyncio.get_running_loop()
        self._open = False  # a turn's first answer went out; the flush is due
        self._waiting: list[HttpProtocol] = []

    def first(self) -> bool:
        """True for the first answer of this turn: write it now (later ones
        `wait`)."""
        if self._open:
            return False
        self._open = True
        self._loop.call_soon(self.flush)
        return True

    def wait(self, protocol: HttpProtocol) -> None:
        """`protocol` has answers waiting (its first since the last flush)."""
        self._waiting.append(protocol)

    def flush(self) -> None:
        self._open = False
        waiting, self._waiting = self._waiting, []
        for protocol in waiting:
            protocol.write_waiting()


@cython.cclass
class HttpProtocol:
    """One client connection: an asyncio protocol by its methods. A cdef
    class compiled, so the attributes every request reads and resets are C
    fields, not dict entries (perf, MLP over HTTP binary at c=64: attribute
    lookups and stores on this class took about 4 us a request); a plain
    class from source."""

    _handler: Handler
    _writes: TurnWrites
    _waiting: list[bytes]
    _start: Starter | None
    _max_body: int
    _connections: set[HttpProtocol]
    _transport: asyncio.Transport | None
    _parser: httptools.HttpRequestParser
    _pipeline: deque[HttpRequest]
    _current: HttpRequest | None
    _paused: bool
    _closing: bool
    _linger: asyncio.TimerHandle | None
    _url: bytes
    _headers: dict[str, str]
    _body: list[bytes]
    _size: int
    _in_headers: bool
    _header_bytes: int
    _refusal: tuple[int, str] | None
    _last_read: float
    _begun: float
    _begun_here: bool
    _suspect: float
    _failed: bool
    _continue_owed: bool

    def __init__(
        self,
        handler: Handler,
        max_body_bytes: int,
        connections: set[HttpProtocol],
        writes: TurnWrites,
        start: Starter | None = None,
    ) -> None:
        self._handler = handler
        self._writes = writes
        self._waiting = []  # answers made, written at the turn's end
        self._start = start
        self._max_body = max_body_bytes
        self._connections = connections
        self._transport = None
        self._parser = httptools.HttpRequestParser(self)
        self._pipeline = deque()
        self._current = None  # the request being answered, if any
        self._paused = False
        self._closing = False  # shutting down: the last answer says Connection: close
        self._linger = None
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0
        self._in_headers = False  # a request begun whose headers have not ended
        self._header_bytes = 0  # bytes read while in its headers
        self._refusal = None
        self._last_read = 0.0
        self._begun = 0.0  # when the request being read began (0: none)
        self._begun_here = False  # ... in the read being parsed now
        self._suspect = 0.0  # what a sweep last found overdue (expire_stalled)
        self._failed = False  # refused: nothing more is read on this connection
        self._continue_owed = False  # Expect: 100-continue met with answers owed

    # -- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self._connections.add(self)

    def eof_received(self) -> bool:
        return False  # the transport closes

    def pause_writing(self) -> None:
        pass  # as asyncio.Protocol's: a connection's answers are bounded by _MAX_PIPELINE

    def resume_writing(self) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        """The client left. An inference it is owed that has not run yet
        leaves its queue (counted cancelled, as a gRPC client's cancel is):
        an overloaded server's clients give up on their own timeouts, and
        computing answers nobody reads would keep it overloaded."""
        self._connections.discard(self)
        self._transport = None
        self._waiting.clear()
        if self._linger is not None:
            self._linger.cancel()
        current = self._current
        if current is not None and current.call is not None:
            current.call.withdraw()

    def data_received(self, data: bytes) -> None:
        if self._transport is None or self._failed:  # answered for the last time: discard
            return
        self._last_read = _now()
        self._begun_here = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # The request asking for it is queued; we answer it in HTTP/1.1
            # (RFC 9110 7.8: a server may ignore Upgrade) and read on.
            self._parser = httptools.HttpRequestParser(self)
            self._in_headers = False
            self.data_received(data[upgrade.args[0] :])
            return
        except httptools.HttpParserError as exc:
            status, message = self._refusal or (400, f"malformed HTTP request: {exc}")
            self._fail(status, message)
            return
        if self._in_headers:
            # A request begun in this read counted its own header bytes by
            # callback (the read may carry whole requests before it); after
            # that, every byte read while in its headers is one of them.
            if not self._begun_here:
                self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self._fail(
                    431,
                    f"the request's headers are over the server's limit of {MAX_HEADER_BYTES} "
                    "bytes",
                )

    # -- httptools callbacks --------------------------------------------------

    def on_message_begin(self) -> None:
        self._begun = self._last_read
        self._begun_here = True
        self._continue_owed = False
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0
        self._in_headers = True
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if self._begun_here:
            self._header_bytes += len(url)
        if len(self._url) > MAX_URL_BYTES:
            self._refusal = (
                414,
                f"the request's target is over the server's limit of {MAX_URL_BYTES} bytes",
            )
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        if self._begun_here:
            self._header_bytes += len(name) + len(value) + 4  # ": " and CRLF

    def on_headers_complete(self) -> None:
        self._in_headers = False
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            # Refused at its headers (in turn, _fail), before its body is read.
            self._refusal = (400, body_over_limit(int(length), self._max_body))
            raise _Refused
        expect = self._headers.get("expect")
        if expect is not None and expect.lower() == "100-continue":
            self._answer_expectation()

    def _answer_expectation(self) -> None:
        """curl sends `Expect: 100-continue` with bodies over 1 MiB and waits
        up to a second for our go-ahead before sending them: say go on (a body
        declared over the limit never gets here: it is refused at its headers).
        With an answer still owed on the connection, an interim answer would
        be read as part of that one: the go-ahead then waits until the answers
        owed are out (`_done`), unless the body starts arriving first."""
        if self._transport is None or self._closing:
            return
        if not self.idle:
            self._continue_owed = True  # said once the answers owed are out
            return
        if self._parser.get_http_version() == "1.1":
            self.write_waiting()
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._continue_owed = False  # the client did not wait for it
        self._size += len(body)
        if self._size > self._max_body:  # a chunked body: refused now, in turn
            self._body = []
            self._refusal = (400, body_over_limit(self._size, self._max_body))
            raise _Refused
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._begun = 0.0
        self._continue_owed = False
        self._queue(self._request(self._body[0] if len(self._body) == 1 else b"".join(self._body)))

    def _request(self, body: bytes) -> HttpRequest:
        target = self._url
        if target[:1] == b"/" and b"?" not in target and b"#" not in target:
            path, query = target, b""  # origin-form, no query: as parse_url would split it
        else:
            url = httptools.parse_url(target)
            path, query = url.path, url.query or b""
        return HttpRequest(  # positional: one is built per request
            self._parser.get_method().decode("ascii", "replace"),
            path.decode("utf-8", "replace"),
            query.decode("utf-8", "replace"),
            self._headers,
            body,
            self._parser.should_keep_alive(),
        )

    def _queue(self, request: HttpRequest) -> None:
        self._pipeline.append(request)
        if len(self._pipeline) > _MAX_PIPELINE and self._transport is not None:
            self._transport.pause_reading()
            self._paused = True
        if self._current is None:
            self._next()

    # -- answering ------------------------------------------------------------
    #
    # A request the starter takes is answered through `_done` by callback;
    # any other's handler coroutine is driven by coroutine_driver.drive rather
    # than wrapped in a Task (see there for what that saves). Requests on one
    # connection are answered in order, one at a time.

    def _next(self) -> None:
        while self._pipeline and self._current is None and self._transport is not None:
            request = self._pipeline.popleft()
            if request.refusal is not None:
                self._refuse_now(*request.refusal)
                return
            self._current = request
            if self._start is not None and self._start(request, self._done, request):
                continue
            drive(self._handler(request), partial(self._done, request), self._crashed)

    def _done(self, request: HttpRequest, response: HttpResponse) -> None:
        # The starter's call holds the request (its answer's context) and the
        # request holds the call: a reference cycle, left to the cyclic
        # collector unless broken here. Left, it made collections 15% of the
        # HTTP path's time (py-spy, MLP over HTTP binary at c=64, in process).
        request.call = None
        self._current = None
        self._answer(request, response)
        self._next()
        if self._continue_owed and self.idle:
            self._continue_owed = False
            self._answer_expectation()

    def _crashed(self, exc: BaseException) -> None:
        """The handler answers its own errors: reaching here is a bug. The
        request it was answering is the one owed first: answered now."""
        self._current = None
        self._refuse_now(500, f"internal error: {exc!r}")

    def _answer(self, request: HttpRequest, response: HttpResponse) -> None:
        if self._transport is None:
            return
        keep_alive = request.keep_alive and not self._closing
        self._write(response, keep_alive)
        if not keep_alive:
            self._close_after_last_answer()
            return
        if self._paused and len(self._pipeline) <= _MAX_PIPELINE // 2:
            self._transport.resume_reading()
            self._paused = False

    def _write(self, response: HttpResponse, keep_alive: bool) -> None:
        assert self._transport is not None
        lines = [
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            % (
                response.status,
                _REASONS.get(response.status, b"Unknown"),
                response.content_type.encode(),
                len(response.body),
            ),
        ]
        for name, value in response.headers:
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        lines.append(b"\r\n" if keep_alive else b"Connection: close\r\n\r\n")
        lines.append(response.body)
        if not keep_alive:  # the last: out now, before the close
            self.write_waiting()
            self._transport.write(b"".join(lines))
        elif self._waiting or not self._writes.first():  # at the turn's end (TurnWrites)
            if not self._waiting:
                self._writes.wait(self)
            self._waiting.append(b"".join(lines))
        else:
            self._transport.write(b"".join(lines))

    def write_waiting(self) -> None:
        """Write the answers this connection has waiting (TurnWrites)."""
        if not self._waiting:
            return
        waiting, self._waiting = self._waiting, []
        if self._transport is not None:
            self._transport.write(waiting[0] if len(waiting) == 1 else b"".join(waiting))

    def _fail(self, status: int, message: str) -> None:
        """Refuse the request being read, after the answers owed before it
        (answering now would be read as the answer to the first of them),
        then close; nothing more is read."""
        if self._transport is None or self._failed:
            return
        self._failed = True
        self._begun = 0.0
        if self.idle:
            self._refuse_now(status, message)
            return
        refusal = HttpRequest("", "", "", {}, b"", False, (status, message))
        self._pipeline.append(refusal)

    def _refuse_now(self, status: int, message: str) -> None:
        if self._transport is None:
            return
        body = json.dumps({"error": message}).encode()
        self._write(HttpResponse(status, body), keep_alive=False)
        self._close_after_last_answer()

    def _close_after_last_answer(self) -> None:
        """Nothing more is answered here: close without a reset (see
        runtime/closing.py), discarding what still arrives."""
        self.write_waiting()
        transport = self._transport
        assert transport is not None
        self._transport = None
        self._pipeline.clear()
        if self._paused:
            transport.resume_reading()
            self._paused = False
        self._linger = close_gently(transport)

    @property
    def idle(self) -> bool:
        return self._current is None and not self._pipeline

    def stalled(self, now: float, timeout_s: float) -> str:
        """Why the request being read is overdue ("" if it is not): nothing
        has arrived for `timeout_s`, or its headers have not ended within
        `timeout_s` of its start. Only with no answer owed before it."""
        if not self._begun or self._transport is None or not self.idle:
            return ""
        if now - self._last_read > timeout_s:
            why, mark = f"no bytes of it arrived for {timeout_s:g} s", self._last_read
        elif self._in_headers and now - self._begun > timeout_s:
            why, mark = f"its headers did not end within {timeout_s:g} s", -self._begun
        else:
            return ""
        # Overdue at two sweeps in a row, for the same reason: a sweep can run
        # after the loop was held up, before it has read what arrived
        # meanwhile; by the next sweep it has (a new read, or headers ended).
        if self._suspect != mark:
            self._suspect = mark
            return ""
        return why

    def shut_down(self) -> None:
        """Server shutdown: the answers owed go out, the last with
        `Connection: close`; an idle connection closes now."""
        self._closing = True
        if self.idle:
            self.close()

    def time_out(self, why: str) -> None:
        """408 for a request that stopped arriving, then close."""
        self._fail(408, f"the request was not received whole: {why} (--http-read-timeout-secs)")

    def close(self) -> None:
        if self._transport is not None:
            self.write_waiting()
            self._transport.close()


async def expire_stalled(
    server: asyncio.Server, connections: set[HttpProtocol], timeout_s: float
) -> None:
    """Answer 408 to requests that stopped arriving (a client gone quiet, a
    slowloris, a chunk size no body will fill), so they do not hold their
    connection and buffers forever. Checks a few times a timeout, off the
    request path; ends once the server is closed and its connections gone.
    An idle keep-alive connection (no request begun) is left open, as
    Triton leaves it: closing it could race a client's next request. A
    request is timed out at the second sweep that finds it overdue, so
    within a timeout and a sweep's interval or two."""
    every = min(1.0, timeout_s / 4)
    while server.is_serving() or connections:
        await asyncio.sleep(every)
        now = _now()
        for connection in list(connections):
            why = connection.stalled(now, timeout_s)
            if why:
                connection.time_out(why)


async def start_http_server(
    handler: Handler,
    *,
    host: str,
    port: int,
    max_body_bytes: int,
    ssl_context: ssl.SSLContext | None = None,
    reuse_port: bool = False,
    start: Starter | None = None,
    read_timeout_s: float = 0.0,
) -> tuple[asyncio.Server, int, set[HttpProtocol]]:
    """Bind and serve; returns the server, its port and the live connections.
    `read_timeout_s` (0: none) bounds how long a request may stall (expire_stalled)."""
    connections: set[HttpProtocol] = set()
    writes = TurnWrites()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: cast(  # an asyncio protocol by its methods (HttpProtocol)
            asyncio.Protocol, HttpProtocol(handler, max_body_bytes, connections, writes, start)
        ),
        host=host,
        port=port,
        ssl=ssl_context,
        reuse_address=True,
        reuse_port=reuse_port or None,
        backlog=1024,
    )
    bound = server.sockets[0].getsockname()[1]
    if read_timeout_s > 0:
        task = loop.create_task(expire_stalled(server, connections, read_timeout_s))
        _expiring.add(task)
        task.add_done_callback(_expiring.discard)
    return server, int(bound), connections


_expiring: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks


async def start_unix_http_server(
    handler: Handler, path: str, *, max_body_bytes: int = 1 << 16
) -> asyncio.Server:
    """The same protocol on a unix socket (the supervisor reads workers here)."""
    connections: set[HttpProtocol] = set()
    writes = TurnWrites()
    loop = asyncio.get_running_loop()
    return await loop.create_unix_server(
        lambda: cast(asyncio.Protocol, HttpProtocol(handler, max_body_bytes, connections, writes)),
        path=path,
    )
