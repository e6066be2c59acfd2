"""The bare HTTP/1.1 protocol: pipelined requests answered in order whether
their handler finishes at once, waits on a future or yields to the loop, a
handler bug answered with 500 on a closed connection, refusals (malformed,
over a limit, stalled) answered after the answers owed before them, and
`Expect: 100-continue` answered only where an interim answer cannot be
misread."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import socket
import time
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from mlserve.runtime.http_server import (
    MAX_HEADER_BYTES,
    MAX_URL_BYTES,
    HttpProtocol,
    HttpRequest,
    HttpResponse,
    TurnWrites,
    start_http_server,
)

BLOCK_S = 0.6


async def _handler(request: HttpRequest) -> HttpResponse:
    loop = asyncio.get_running_loop()
    if request.path == "/later":
        waited: asyncio.Future[str] = loop.create_future()
        loop.call_later(0.02, waited.set_result, "later")
        return HttpResponse(200, (await waited).encode(), "text/plain")
    if request.path == "/yield":
        await asyncio.sleep(0)
        return HttpResponse(200, b"yield", "text/plain")
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    if request.path == "/block":  # holds the event loop, as a slow decode would
        time.sleep(BLOCK_S)
        return HttpResponse(200, b"blocked", "text/plain")
    if request.method == "POST":
        return HttpResponse(200, request.body, "text/plain")
    return HttpResponse(200, request.path.encode(), "text/plain")


async def _exchange(raw: bytes, answers: int, *, closes: bool = False) -> list[tuple[int, bytes]]:
    server, port, _ = await start_http_server(
        _handler, host="127.0.0.1", port=0, max_body_bytes=1024
    )
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        await writer.drain()
        out = []
        for _ in range(answers):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            status = int(head.split(b" ", 2)[1])
            match = re.search(rb"Content-Length: (\d+)", head)
            assert match is not None
            out.append((status, await reader.readexactly(int(match.group(1)))))
        if closes:  # the server closes: end of stream, nothing more answered
            assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        return out
    finally:
        server.close()


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


def test_pipelined_requests_are_answered_in_order() -> None:
    paths = ["/later", "/a", "/yield", "/later", "/b"]
    answers = asyncio.run(_exchange(b"".join(_get(p) for p in paths), len(paths)))
    assert answers == [
        (200, b"later"),
        (200, b"/a"),
        (200, b"yield"),
        (200, b"later"),
        (200, b"/b"),
    ]


def test_a_handler_bug_answers_500_and_closes_the_connection() -> None:
    answers = asyncio.run(_exchange(_get("/boom") + _get("/a"), 1, closes=True))
    assert answers[0][0] == 500
    assert b"handler bug" in answers[0][1]


@pytest.mark.parametrize("path", ["/a", "/later"])
def test_connection_close_is_honoured(path: str) -> None:
    raw = f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
    assert asyncio.run(_exchange(raw, 1, closes=True))[0][0] == 200


def _post_headers(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def _with_connection(
    talk: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    read_timeout_s: float = 0.0,
) -> None:
    server, port, connections = await start_http_server(
        _handler, host="127.0.0.1", port=0, max_body_bytes=1024, read_timeout_s=read_timeout_s
    )
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await talk(reader, writer)
        finally:
            writer.close()
        for _ in range(500):  # the server sees the close (a lingering socket too)
            if not connections:
                break
            await asyncio.sleep(0.01)
    finally:
        server.close()


def test_expect_100_continue_gets_the_go_ahead_before_the_body() -> None:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_post_headers("/echo", 5))
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        assert await reader.readexactly(5) == b"hello"

    asyncio.run(_with_connection(talk))


def test_expect_100_continue_over_the_limit_is_refused_at_its_headers() -> None:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_post_headers("/echo", 5000))  # the limit is 1024; no body sent
        reply = await asyncio.wait_for(reader.read(), 5)  # answered, then closed
        assert reply.startswith(b"HTTP/1.1 400") and b"Connection: close" in reply
        assert b"request body is 5000 bytes, over the server's limit of 1024 bytes" in reply

    asyncio.run(_with_connection(talk))


def test_the_interim_answer_waits_for_the_answers_owed_before_it() -> None:
    """A 100 Continue written while /later is being answered would be read as
    the start of /later's answer: it goes out once /later's answer has."""

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_get("/later") + _post_headers("/echo", 2))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert await reader.readexactly(5) == b"later"
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"ok")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert await reader.readexactly(2) == b"ok"

    asyncio.run(_with_connection(talk))


def test_a_body_declared_over_the_limit_is_refused_before_it_is_read() -> None:
    """No Expect: the answer still comes at the headers, not after the body."""

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000000\r\n\r\n")
        reply = await asyncio.wait_for(reader.read(), 5)  # answered, then closed
        assert reply.startswith(b"HTTP/1.1 400") and b"Connection: close" in reply
        assert b"request body is 5000000 bytes, over the server's limit of 1024 bytes" in reply

    asyncio.run(_with_connection(talk))


def test_headers_over_the_limit_are_refused_with_431() -> None:
    """A header that never ends is not held whole: past MAX_HEADER_BYTES the
    client gets 431 and the connection closes."""

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /a HTTP/1.1\r\nHost: t\r\nX-Big: ")
        with contextlib.suppress(ConnectionError):
            for _ in range(1024):  # 16 MiB, never ended
                writer.write(b"x" * 16384)
                await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 5)
        assert reply.startswith(b"HTTP/1.1 431")
        assert f"limit of {MAX_HEADER_BYTES} bytes".encode() in reply

    asyncio.run(_with_connection(talk))


def test_a_target_over_the_limit_is_refused_with_414() -> None:
    raw = _get("/" + "a" * (MAX_URL_BYTES + 1))
    ((status, body),) = asyncio.run(_exchange(raw, 1, closes=True))
    assert status == 414 and f"limit of {MAX_URL_BYTES} bytes".encode() in body


def test_an_upgrade_request_is_answered_once_in_http_1_1_and_the_connection_goes_on() -> None:
    """RFC 9110 7.8: a server may ignore Upgrade; the request gets its one
    answer and the next request on the connection is read as HTTP/1.1."""
    upgrade = b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    answers = asyncio.run(_exchange(upgrade + _get("/b"), 2))
    assert answers == [(200, b"/a"), (200, b"/b")]


READ_TIMEOUT_S = 0.4


@pytest.mark.parametrize(
    ("begun", "why"),
    [
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc", b"no bytes"),
        (b"GET /a HTTP/1.1\r\nHost: t\r\n", b"no bytes"),
        # A chunk size no body will fill: the parser waits for its bytes.
        (
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"ffffffffffffffff\r\nabc",
            b"no bytes",
        ),
    ],
    ids=["body", "headers", "huge-chunk"],
)
def test_a_request_that_stops_arriving_is_answered_408_and_closed(begun: bytes, why: bytes) -> None:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = time.monotonic()
        writer.write(begun)
        reply = await asyncio.wait_for(reader.read(), 30)  # answered, then closed
        waited = time.monotonic() - started
        assert reply.startswith(b"HTTP/1.1 408"), reply
        assert why in reply and b"--http-read-timeout-secs" in reply
        assert waited >= READ_TIMEOUT_S  # how much later: the sweep and the machine

    asyncio.run(_with_connection(talk, READ_TIMEOUT_S))


def test_headers_sent_byte_by_byte_past_the_timeout_are_answered_408() -> None:
    """A slowloris keeps bytes coming but never ends its headers."""

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /a HTTP/1.1\r\nHost: t\r\n")
        reply = b""
        with contextlib.suppress(ConnectionError):
            for _ in range(60):
                writer.write(b"X")
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    reply += await asyncio.wait_for(reader.read(4096), 0.1)
                if reply:
                    break
        reply += await asyncio.wait_for(reader.read(), 5)  # the rest, then closed
        assert reply.startswith(b"HTTP/1.1 408") and b"headers did not end" in reply

    asyncio.run(_with_connection(talk, READ_TIMEOUT_S))


def test_a_body_arriving_slowly_but_steadily_and_an_idle_connection_are_left_alone() -> None:
    """Gaps shorter than the timeout, over a request longer than it, are
    fine; and a keep-alive connection with no request begun stays open."""

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_post_headers("/echo", 8))
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        for piece in (b"ab", b"cd", b"ef", b"gh"):
            await asyncio.sleep(READ_TIMEOUT_S / 2)
            writer.write(piece)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        assert await reader.readexactly(8) == b"abcdefgh"
        await asyncio.sleep(READ_TIMEOUT_S * 3)  # idle, nothing begun
        writer.write(_get("/b"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        assert await reader.readexactly(2) == b"/b"

    asyncio.run(_with_connection(talk, READ_TIMEOUT_S))


def test_pipelined_requests_filling_a_read_are_not_counted_as_the_next_ones_headers() -> None:
    """A read that carries many whole requests and the start of the next:
    only that start counts toward the next request's header limit."""
    many = _get("/a") * 3000  # about 80 KB, past MAX_HEADER_BYTES
    split = _get("/b")
    raw = many + split[:20]

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(raw)
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(split[20:])
        for _ in range(3000):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200"), head
            assert await reader.readexactly(2) == b"/a"
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert await reader.readexactly(2) == b"/b"

    assert len(many) > MAX_HEADER_BYTES
    asyncio.run(_with_connection(talk))


def test_a_malformed_request_is_refused_after_the_answers_owed_before_it() -> None:
    """Answering it at once would be read as the answer to /later."""
    raw = _get("/later") + _get("/later") + b"GARBAGE\r\n\r\n"
    answers = asyncio.run(_exchange(raw, 3, closes=True))
    assert [status for status, _ in answers] == [200, 200, 400]
    assert answers[0][1] == answers[1][1] == b"later"
    assert b"malformed HTTP request" in answers[2][1]


def test_a_body_declared_over_the_limit_behind_an_owed_answer_is_refused_in_turn() -> None:
    """Refused at its headers, after /later's answer, without waiting for a
    body the client may still be holding back."""
    raw = _get("/later") + b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n"
    answers = asyncio.run(_exchange(raw, 2, closes=True))
    assert answers[0] == (200, b"later")
    assert answers[1][0] == 400
    assert b"request body is 5000 bytes, over the server's limit of 1024 bytes" in answers[1][1]


def test_a_chunked_body_that_passes_the_limit_is_refused_while_it_still_arrives() -> None:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"200\r\n" + b"x" * 512 + b"\r\n"
        reply = b""
        with contextlib.suppress(ConnectionError):
            for _ in range(200):  # 100 KB, never ended
                writer.write(chunk)
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    reply += await asyncio.wait_for(reader.read(4096), 0.01)
                if reply:
                    break
        reply += await asyncio.wait_for(reader.read(), 5)  # then closed
        assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
        assert b"over the server's limit of 1024 bytes" in reply

    asyncio.run(_with_connection(talk))


def test_a_steady_upload_is_not_timed_out_because_the_loop_was_held_up() -> None:
    """Clients in another thread, as in another process: while one request
    holds the loop longer than the timeout, the steady upload's next pieces
    wait in its socket. The sweep that runs first after the hold must not
    take what it has not read yet for silence."""

    def clients(port: int) -> bytes:
        steady = socket.create_connection(("127.0.0.1", port))
        blocker = socket.create_connection(("127.0.0.1", port))
        steady.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\n")
        for piece in b"abcdef":
            time.sleep(READ_TIMEOUT_S * 0.5)
            steady.sendall(bytes([piece]))
            if piece == ord("b"):  # read before the hold; c, d, e arrive during it
                time.sleep(0.05)
                blocker.sendall(_get("/block"))  # holds the loop BLOCK_S
        steady.settimeout(5)
        reply = b""
        while b"abcdef" not in reply and b"408" not in reply:
            data = steady.recv(4096)
            if not data:
                break
            reply += data
        steady.close()
        blocker.close()
        return reply

    async def main() -> bytes:
        server, port, _ = await start_http_server(
            _handler, host="127.0.0.1", port=0, max_body_bytes=1024, read_timeout_s=READ_TIMEOUT_S
        )
        try:
            return await asyncio.to_thread(clients, port)
        finally:
            server.close()

    assert BLOCK_S > READ_TIMEOUT_S
    reply = uvloop.run(main())  # the server's loop: it runs due timers before it reads
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"abcdef"), reply


class _Call:
    """What a starter leaves on a request: records whether it was withdrawn."""

    def __init__(self) -> None:
        self.withdrawn = 0

    def withdraw(self) -> None:
        self.withdrawn += 1


def test_a_request_owed_to_a_client_that_leaves_is_withdrawn() -> None:
    """The client closes while its request is being served by callback: its
    call is withdrawn once. A request answered before the client left, and
    one pipelined behind the open one (never started), are not."""

    async def scenario() -> tuple[list[tuple[str, int]], int]:
        calls: dict[str, _Call] = {}
        answers: dict[str, tuple[object, object]] = {}

        def start(
            request: HttpRequest, answer: Callable[[object, HttpResponse], None], context: object
        ) -> bool:
            request.call = calls.setdefault(request.path, _Call())
            if request.path == "/now":
                answer(context, HttpResponse(200, b"now", "text/plain"))
            else:  # answered later, as a queued inference is
                answers[request.path] = (answer, context)
            return True

        server, port, connections = await start_http_server(
            _handler, host="127.0.0.1", port=0, max_body_bytes=1024, start=start
        )
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_get("/now") + _get("/queued") + _get("/behind"))
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert b" 200 " in head
            deadline = time.monotonic() + 5
            while "/queued" not in answers:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.005)
            writer.close()
            while connections:
                assert time.monotonic() < deadline, "the server never saw the close"
                await asyncio.sleep(0.005)
            return [(path, call.withdrawn) for path, call in sorted(calls.items())], len(answers)
        finally:
            server.close()

    withdrawn, pending = asyncio.run(scenario())
    assert withdrawn == [("/now", 0), ("/queued", 1)]
    assert pending == 1  # "/behind" never reached the starter


class _RecordingTransport:
    """What HttpProtocol writes, by call: enough of a transport for keep-alive answers."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _bodies(writes: list[bytes]) -> list[bytes]:
    return [part.rsplit(b"\r\n\r\n", 1)[1] for w in writes for part in _split_answers(w)]


def _split_answers(data: bytes) -> list[bytes]:
    """One write may carry several answers: split them by Content-Length."""
    out = []
    while data:
        head, rest = data.split(b"\r\n\r\n", 1)
        match = re.search(rb"Content-Length: (\d+)", head)
        assert match is not None
        length = int(match.group(1))
        out.append(head + b"\r\n\r\n" + rest[:length])
        data = rest[length:]
    return out


def _answer_with_path(
    request: HttpRequest, answer: Callable[[object, HttpResponse], None], context: object
) -> bool:
    """A starter that takes every request and answers it at once with its path."""
    answer(context, HttpResponse(200, request.path.encode(), "text/plain"))
    return True


def test_a_turns_first_answer_is_written_at_once_and_the_rest_together_at_its_end() -> None:
    """Answers made in one loop turn (as a batch makes them, one connection
    after another): the first is written before the turn ends; the others
    wait for its end, then go out in order, a connection's pipelined answers
    in one write after its first."""

    async def scenario() -> tuple[list[list[bytes]], list[list[bytes]]]:
        writes = TurnWrites()
        connections: set[HttpProtocol] = set()
        transports = [_RecordingTransport() for _ in range(3)]
        protocols = [
            HttpProtocol(_handler, 1024, connections, writes, _answer_with_path) for _ in range(3)
        ]
        for protocol, transport in zip(protocols, transports, strict=True):
            protocol.connection_made(transport)  # type: ignore[arg-type]
        protocols[0].data_received(_get("/a1") + _get("/a2"))
        protocols[1].data_received(_get("/b1"))
        protocols[2].data_received(_get("/c1") + _get("/c2"))
        during = [list(t.writes) for t in transports]
        await asyncio.sleep(0)  # the turn ends
        await asyncio.sleep(0)
        return during, [list(t.writes) for t in transports]

    during, after = uvloop.run(scenario())
    assert [_bodies(w) for w in during] == [[b"/a1"], [], []]
    assert [_bodies(w) for w in after] == [[b"/a1", b"/a2"], [b"/b1"], [b"/c1", b"/c2"]]
    assert [len(w) for w in after] == [2, 1, 1]  # a connection's waiting answers: one write


def test_answers_waiting_for_the_turns_end_go_out_before_a_closing_answer() -> None:
    """Keep-alive answers behind the turn's first wait for its end; a
    `Connection: close` request pipelined behind them is answered after
    them, then the connection closes (nothing lost, nothing reordered)."""
    raw = (
        _get("/a")
        + _get("/b")
        + _get("/c")
        + b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    answers = uvloop.run(_exchange(raw, 4, closes=True))
    assert answers == [(200, b"/a"), (200, b"/b"), (200, b"/c"), (200, b"/last")]


def test_a_connection_that_is_lost_drops_its_waiting_answers() -> None:
    async def scenario() -> tuple[list[bytes], list[bytes]]:
        writes = TurnWrites()
        connections: set[HttpProtocol] = set()
        first, second = _RecordingTransport(), _RecordingTransport()
        a = HttpProtocol(_handler, 1024, connections, writes, _answer_with_path)
        b = HttpProtocol(_handler, 1024, connections, writes, _answer_with_path)
        a.connection_made(first)  # type: ignore[arg-type]
        b.connection_made(second)  # type: ignore[arg-type]
        a.data_received(_get("/a"))
        b.data_received(_get("/b"))  # waits for the turn's end
        b.connection_lost(None)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return first.writes, second.writes

    first_writes, second_writes = uvloop.run(scenario())
    assert _bodies(first_writes) == [b"/a"]
    assert second_writes == []


def test_a_request_answered_by_callback_leaves_no_reference_cycle() -> None:
    """The starter's call and the request refer to each other (the call
    answers with the request as its context, the request keeps the call to
    withdraw it): once answered, the protocol breaks the cycle, so the request
    is freed by reference counting, not left to the cyclic collector (which
    then took 15% of the HTTP path's time, in process)."""

    class Call:  # as the data plane's InferCall holds its answer's context
        def __init__(self, request: HttpRequest) -> None:
            self.context = request

    def start(
        request: HttpRequest, answer: Callable[[object, HttpResponse], None], context: object
    ) -> bool:
        request.call = Call(request)
        asyncio.get_running_loop().call_soon(answer, context, HttpResponse(200, b"ok"))
        return True

    async def scenario() -> int:
        writes = TurnWrites()
        transport = _RecordingTransport()
        protocol = HttpProtocol(_handler, 1024, set(), writes, start)
        protocol.connection_made(transport)  # type: ignore[arg-type]
        for _ in range(50):
            protocol.data_received(_get("/infer"))
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(_bodies(transport.writes)) == 50
        return gc.collect()

    gc.collect()
    gc.disable()
    try:
        unreachable = uvloop.run(scenario())
    finally:
        gc.enable()
    assert unreachable == 0, f"{unreachable} objects were left in reference cycles"
