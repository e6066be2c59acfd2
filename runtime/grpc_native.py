"""The native gRPC transport: HTTP/2 by libnghttp2, driven from Cython
(ext/_grpc_h2.pyx) on the event loop, serving the same grpc_service RPCs as
the grpcio transport.

Per request the Cython side parses frames, headers and the gRPC message
prefix, and makes one Python call with the complete message; the handler's
coroutine is driven without a Task and answers through the stream, which
frames the reply and builds the trailers in C. h2c with prior knowledge, or
TLS with ALPN h2 (the same certificate flags as grpcio)."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2

from mlserve.config import GrpcEndpointConfig
from mlserve.errors import MlserveError
from mlserve.runtime.access import AccessPolicy
from mlserve.runtime.closing import close_gently
from mlserve.runtime.coroutine_driver import drive
from mlserve.runtime.dataplane import DataPlane
from mlserve.runtime.grpc_service import (
    HEALTH_SERVICE,
    INVALID_ARGUMENT,
    NOT_FOUND,
    OK,
    SERVICE,
    STATUS_BY_KIND,
    UNAVAILABLE,
    HealthReporter,
    InferenceService,
    Reply,
    Rpc,
    StreamCalls,
    fail_unary,
)

log = logging.getLogger(__name__)

AVAILABLE = False
if os.environ.get("MLSERVE_NO_EXTENSIONS") == "1":
    UNAVAILABLE_REASON = "the native gRPC transport is off (MLSERVE_NO_EXTENSIONS=1)"
else:
    try:
        from mlserve.ext._grpc_h2 import H2Connection, H2Stream, Route, set_buffer_limit

        AVAILABLE = True
        UNAVAILABLE_REASON = ""
    except ImportError as exc:  # built without libnghttp2's headers
        UNAVAILABLE_REASON = f"the native gRPC transport is not built ({exc})"

MAX_CONCURRENT_STREAMS = 1000
MAX_HEADER_LIST_BYTES = 16 * 1024


# -- unary RPCs --------------------------------------------------------------


def _reply(stream: H2Stream, message: Reply) -> None:
    stream.reply(message if isinstance(message, bytes) else message.SerializeToString())


def _unary(rpc: Rpc) -> Any:
    call = rpc.call
    name = rpc.name

    def handle(stream: H2Stream) -> None:
        drive(
            call(stream.payload, stream.metadata_value, stream.time_remaining()),
            partial(_reply, stream),
            partial(fail_unary, stream, name),
        )

    return handle


def _model_infer(service: InferenceService) -> Any:
    """ModelInfer: no coroutine; the batch that runs the request answers it."""
    start = service.start_model_infer

    def handle(stream: H2Stream) -> None:
        try:
            # Kept for _withdraw_model_infer, should the client leave first.
            stream.user = start(
                stream.payload, stream.metadata_value, stream.time_remaining(), stream
            )
        except BaseException as exc:
            fail_unary(stream, "ModelInfer", exc)
            if not isinstance(exc, Exception):
                raise

    return handle


def _withdraw_model_infer(stream: H2Stream) -> None:
    """The client reset its ModelInfer, or its connection went, unanswered: a
    request still queued is taken out before it runs (counted cancelled), as
    Triton cancels a gRPC request; one already in a batch runs, its answer
    dropped."""
    call = stream.user
    if call is not None:
        call.withdraw()


# -- ModelStreamInfer ----------------------------------------------------------


class _StreamState:
    """`H2Stream.user` of a ModelStreamInfer stream, from its first message:
    its queued requests, and whether the client's half-close has reached the
    handler. Not `remote_closed`: that is set as soon as the END_STREAM is
    read, while messages read before it may still be waiting to reach the
    handler (an answer given inline, during that same read, must not end the
    stream)."""

    __slots__ = ("calls", "client_done")

    def __init__(self) -> None:
        self.calls = StreamCalls()
        self.client_done = False


def _stream_answer(stream: H2Stream, reply: bytes) -> None:
    stream.send(reply)  # one fewer in flight
    state = stream.user
    if state is not None and state.client_done and stream.inflight == 0:
        stream.finish(OK)


def _withdraw_stream_infer(stream: H2Stream) -> None:
    """The client reset its ModelStreamInfer, or its connection went, with
    requests unanswered: those not run yet leave their queues."""
    state = stream.user
    if state is not None:
        state.calls.withdraw_all()


def _stream_infer(service: InferenceService) -> Any:
    start = service.start_stream_infer

    def handle(stream: H2Stream, data: bytes | None) -> None:
        if not stream.open:
            return
        if stream.user is None:  # the stream's first call: check access once
            try:
                service.check_stream_access(stream.metadata_value)
            except MlserveError as exc:
                stream.finish(STATUS_BY_KIND[exc.kind], exc.message)
                return
            stream.user = _StreamState()
        state = stream.user
        if data is None:  # the client is done sending
            state.client_done = True
            if stream.inflight == 0:
                stream.finish(OK)
            return
        call = start(data, _stream_answer, stream)
        if call is not None:
            state.calls.add(call)

    return handle


# -- grpc.health.v1 ------------------------------------------------------------


def _health_request(stream: H2Stream, data: bytes) -> str | None:
    try:
        return str(health_pb2.HealthCheckRequest.FromString(data).service)
    except DecodeError as exc:
        stream.finish(
            INVALID_ARGUMENT, f"HealthCheckRequest is not a valid protobuf message: {exc}"
        )
        return None


def _health_check(health: HealthReporter) -> Any:
    def handle(stream: H2Stream) -> None:
        service = _health_request(stream, stream.payload)
        if service is None:
            return
        status = health.status(service)
        if status is None:
            stream.finish(NOT_FOUND, f"unknown service {service!r}")
            return
        stream.reply(_health_bytes(status))

    return handle


class _HealthWatch:
    """Watch: the current status at once, then each change, until the client leaves."""

    def __init__(self, health: HealthReporter) -> None:
        self.health = health
        self.streams: set[H2Stream] = set()

    def handle(self, stream: H2Stream, data: bytes | None) -> None:
        if data is None or stream.user is not None:
            return  # the client half-closed; the stream stays open for updates
        service = _health_request(stream, data)
        if service is None:
            return
        status = self.health.status(service)
        unknown = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        stream.send(_health_bytes(unknown if status is None else status))

        def changed(name: str, new_status: Any) -> None:
            if not stream.open:
                unsubscribe()
                self.streams.discard(stream)
            elif name == service:
                stream.send(_health_bytes(new_status))

        unsubscribe = self.health.subscribe(changed)
        stream.user = unsubscribe
        self.streams.add(stream)

    def close_all(self) -> None:
        for stream in list(self.streams):
            stream.finish(UNAVAILABLE, "the server is shutting down")
            stream.user()
        self.streams.clear()


def _health_bytes(status: Any) -> bytes:
    answer: bytes = health_pb2.HealthCheckResponse(status=status).SerializeToString()
    return answer


# -- the server ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Keepalive:
    """Server PINGs (gRPC's keepalive): after `time_s` without traffic, PING;
    no acknowledgement within `timeout_s` closes the connection. And a
    client that stops in the middle of a request message: nothing from it
    for `read_timeout_s` (0: no limit) while the connection holds part of a
    message closes the connection, so stalled clients cannot sit on the
    process's message buffer (set_buffer_limit) and refuse everyone else."""

    time_s: float
    timeout_s: float
    read_timeout_s: float = 0.0


class NativeGrpcServer:
    """The listening socket, its live connections, and their keepalive."""

    impl = "native"

    def __init__(
        self,
        server: asyncio.Server,
        port: int,
        connections: set[Any],
        watch: _HealthWatch,
        keepalive: Keepalive,
    ) -> None:
        self._server = server
        self.port = port
        self.connections = connections
        self._watch = watch
        self._keepalive = keepalive
        self._pinger = asyncio.get_running_loop().create_task(self._ping_idle())

    async def _ping_idle(self) -> None:
        keepalive = self._keepalive
        read_timeout = keepalive.read_timeout_s
        every = max(0.05, min(keepalive.time_s, keepalive.timeout_s) / 2)
        if read_timeout:
            every = min(every, max(0.05, read_timeout / 4))
        # A stalled connection is closed at the second sweep that finds it
        # stalled with no read between: a sweep can run after the loop was
        # held up, before it has read what arrived meanwhile.
        suspects: dict[Any, float] = {}
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            stalled: dict[Any, float] = {}
            for connection in list(self.connections):
                quiet = now - connection.last_activity
                if read_timeout and connection.buffered and quiet > read_timeout:
                    if suspects.get(connection) == connection.last_activity:
                        connection.abort()
                        continue
                    stalled[connection] = connection.last_activity
                if connection.ping_sent:
                    if now - connection.ping_sent > keepalive.timeout_s:
                        connection.abort()
                elif quiet > keepalive.time_s:
                    connection.ping()
            suspects = stalled

    async def stop(self, grace_s: float) -> None:
        """GOAWAY to every client, let in-flight RPCs finish for up to `grace_s`,
        then close what is left."""
        self._server.close()
        self._watch.close_all()
        for connection in list(self.connections):
            connection.shutdown()
        deadline = time.monotonic() + grace_s
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            connection.abort()
        self._pinger.cancel()


def _routes(
    service: InferenceService, health: HealthReporter, watch: _HealthWatch
) -> dict[bytes, Route]:
    routes: dict[bytes, Route] = {
        f"/{SERVICE}/{rpc.name}".encode(): Route(
            _unary(rpc), False, rpc.request_type.DESCRIPTOR.name
        )
        for rpc in service.unary_rpcs()
        if rpc.name != "ModelInfer"
    }
    routes[f"/{SERVICE}/ModelInfer".encode()] = Route(
        _model_infer(service), False, "ModelInferRequest", _withdraw_model_infer
    )
    routes[f"/{SERVICE}/ModelStreamInfer".encode()] = Route(
        _stream_infer(service), True, "ModelInferRequest", _withdraw_stream_infer
    )
    routes[f"/{HEALTH_SERVICE}/Check".encode()] = Route(
        _health_check(health), False, "HealthCheckRequest"
    )
    routes[f"/{HEALTH_SERVICE}/Watch".encode()] = Route(watch.handle, True, "HealthCheckRequest")
    return routes


async def start_native_grpc_server(
    endpoint: GrpcEndpointConfig,
    dataplane: DataPlane,
    health: HealthReporter,
    *,
    ssl_context: ssl.SSLContext | None = None,
    reuse_port: bool = False,
) -> NativeGrpcServer:
    """Bind and serve on the native transport (check AVAILABLE first)."""
    if not AVAILABLE:
        raise RuntimeError(UNAVAILABLE_REASON)
    service = InferenceService(
        dataplane, AccessPolicy(list(endpoint.restricted)), endpoint.max_input_bytes
    )
    watch = _HealthWatch(health)
    routes = _routes(service, health, watch)
    # Requests that arrive in pieces are held until complete: at most twice the
    # message limit per connection (the transport's default), and this much in all.
    set_buffer_limit(max(8 * endpoint.max_input_bytes, 64 << 20))
    connections: set[Any] = set()
    if ssl_context is not None:
        ssl_context.set_alpn_protocols(["h2"])
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: H2Connection(
            routes,
            connections,
            max_message=endpoint.max_input_bytes,
            max_header_bytes=MAX_HEADER_LIST_BYTES,
            max_streams=MAX_CONCURRENT_STREAMS,
            close_gently=close_gently,
        ),
        host=endpoint.address,
        port=endpoint.port,
        ssl=ssl_context,
        reuse_address=True,
        reuse_port=reuse_port or None,
        backlog=1024,
    )
    port = int(server.sockets[0].getsockname()[1])
    keepalive = Keepalive(
        endpoint.keepalive_time_s, endpoint.keepalive_timeout_s, endpoint.read_timeout_s
    )
    return NativeGrpcServer(server, port, connections, watch, keepalive)
