"""The bare HTTP/1.1 protocol: pipelined requests answered in order whether
their handler finishes at once, waits on a future or yields to the loop, and
a handler bug answered with 500 on a closed connection."""

from __future__ import annotations

import asyncio
import re

import pytest

from mlserve.runtime.http_server import HttpRequest, HttpResponse, start_http_server


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
