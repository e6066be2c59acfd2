"""The native transport reads a socket two ways: uvloop reads into its
buffer (`get_buffer` / `buffer_updated`, no bytes object a read), the
standard library's loop hands it bytes (`data_received`). Both must carry
requests that span many reads, and many requests in one read, exactly.
Served in process by an echo route, called by grpcio."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import pytest
import uvloop

from mlserve.runtime import grpc_native

pytestmark = pytest.mark.skipif(not grpc_native.AVAILABLE, reason=grpc_native.UNAVAILABLE_REASON)

ECHO = "/test.Echo/Unary"


def _serve(new_loop: Callable[[], asyncio.AbstractEventLoop]) -> Iterator[int]:
    from mlserve.ext._grpc_h2 import H2Connection, H2Stream, Route

    def echo(stream: H2Stream) -> None:
        stream.reply(stream.payload)

    routes = {ECHO.encode(): Route(echo, False, "Echo")}
    loop = new_loop()
    started = threading.Event()
    port: list[int] = []
    stop = asyncio.Event()

    async def main() -> None:
        connections: set[Any] = set()
        server = await loop.create_server(
            lambda: H2Connection(routes, connections, max_message=8 << 20), "127.0.0.1", 0
        )
        port.append(server.sockets[0].getsockname()[1])
        started.set()
        await stop.wait()
        server.close()
        # Close what the client left open and let each connection_lost run
        # before the loop closes (a live transport fails loop.close()).
        for connection in list(connections):
            connection.abort()
        for _ in range(500):
            if not connections:
                break
            await asyncio.sleep(0.01)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield port[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


@pytest.fixture(params=["uvloop", "asyncio"])
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    new_loop = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop
    yield from _serve(new_loop)


def test_requests_across_many_reads_and_many_in_one_read_echo_exactly(port: int) -> None:
    rng = np.random.default_rng(1)
    # 3 MB spans many 256 KB reads; 64 small ones in flight share reads.
    bodies = [rng.bytes(3 << 20), rng.bytes(700_000)] + [rng.bytes(n) for n in range(1, 65)]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(ECHO)
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda body: call(body, timeout=30), bodies))
    assert answers == bodies
