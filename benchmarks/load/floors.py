"""Transport floors: servers that answer a fixed, precomputed V2 response and
do nothing else, so a benchmark can read mlserve's figures against what the
transport alone costs on this machine.

    python -m benchmarks.load.floors grpc-unary PORT RESPONSE_FILE
    python -m benchmarks.load.floors grpc-stream PORT RESPONSE_FILE
    python -m benchmarks.load.floors native PORT RESPONSE_FILE
    python -m benchmarks.load.floors http PORT RESPONSE_FILE

RESPONSE_FILE holds the serialized ModelInferResponse (gRPC) or the HTTP body
(HTTP). `native` is mlserve's own HTTP/2 transport (ext/_grpc_h2) answering
ModelInfer and ModelStreamInfer with the file's bytes, for the stream wrapped
in a ModelStreamInferResponse. Each prints `floor listening: PORT` and serves until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc

SERVICE = "inference.GRPCInferenceService"


async def grpc_floor(port: int, response: bytes, streaming: bool) -> None:
    async def unary(_: bytes, __: grpc.aio.ServicerContext) -> bytes:
        return response

    async def stream(
        requests: AsyncIterator[bytes], _: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for _request in requests:
            yield response

    handlers = {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=None, response_serializer=None
        ),
        "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(
            stream, request_deserializer=None, response_serializer=None
        ),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"floor listening: {bound}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


async def native_floor(port: int, response: bytes) -> None:
    from mlserve.ext._grpc_h2 import H2Connection, H2Stream, Route
    from mlserve.proto import grpc_service_pb2 as pb

    wrapped = pb.ModelStreamInferResponse()
    wrapped.infer_response.ParseFromString(response)
    stream_answer = wrapped.SerializeToString()

    def unary(stream: H2Stream) -> None:
        stream.reply(response)

    def streaming(stream: H2Stream, data: bytes | None) -> None:
        if data is None:
            stream.finish(0)
        else:
            stream.send(stream_answer)

    routes = {
        f"/{SERVICE}/ModelInfer".encode(): Route(unary, False, "ModelInferRequest"),
        f"/{SERVICE}/ModelStreamInfer".encode(): Route(streaming, True, "ModelInferRequest"),
    }
    connections: set[Any] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: H2Connection(routes, connections, max_message=64 << 20), "127.0.0.1", port
    )
    print(f"floor listening: {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


class _FixedHttp(asyncio.Protocol):
    """HTTP/1.1 keep-alive: answer every complete request with the same body."""

    def __init__(self, reply: bytes) -> None:
        import httptools

        self._reply = reply
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_message_complete(self) -> None:
        assert self._transport is not None
        self._transport.write(self._reply)


async def http_floor(port: int, body: bytes) -> None:
    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % len(body)
        + body
    )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _FixedHttp(reply), "127.0.0.1", port)
    print(f"floor listening: {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    kind, port, path = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    payload = path.read_bytes()
    run: Callable[..., Any]
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    if kind == "http":
        run(http_floor(port, payload))
    elif kind == "native":
        run(native_floor(port, payload))
    else:
        run(grpc_floor(port, payload, streaming=kind == "grpc-stream"))


if __name__ == "__main__":
    main()
