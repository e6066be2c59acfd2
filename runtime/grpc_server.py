"""The grpcio transport: `inference.GRPCInferenceService` and `grpc.health.v1`
on grpc.aio, a thin adapter over grpc_service (the reference transport; the
native one in grpc_native.py answers the same)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from mlserve.config import EndpointConfig, GrpcEndpointConfig
from mlserve.errors import MlserveError
from mlserve.runtime.access import AccessPolicy
from mlserve.runtime.dataplane import DataPlane
from mlserve.runtime.grpc_service import (
    INTERNAL,
    SERVICE,
    STATUS_BY_KIND,
    HealthReporter,
    InferenceService,
    Reply,
    RoutedReply,
    Rpc,
    StreamCalls,
    error_trailers,
)
from mlserve.runtime.routing import ROUTE_HEADER

log = logging.getLogger(__name__)
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode:
    return _CODES[number]


def _metadata_lookup(context: grpc.aio.ServicerContext) -> Callable[[str], str | None]:
    def lookup(key: str) -> str | None:
        for item in context.invocation_metadata() or ():
            if item.key == key:
                value = item.value
                return value.decode() if isinstance(value, bytes) else str(value)
        return None

    return lookup


def _unary_handler(
    rpc: Rpc,
) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Reply | None]]:
    async def handle(data: bytes, context: grpc.aio.ServicerContext) -> Reply | None:
        try:
            reply = await rpc.call(data, _metadata_lookup(context), context.time_remaining())
            if type(reply) is RoutedReply:  # say which track of a rollout answered
                await context.send_initial_metadata(((ROUTE_HEADER, reply.route),))
                return bytes(reply)  # grpcio takes exact bytes only
            return reply
        except MlserveError as exc:
            context.set_code(status_code(STATUS_BY_KIND[exc.kind]))
            context.set_details(exc.message)
            trailers = error_trailers(exc)
            if trailers:
                context.set_trailing_metadata(trailers)
            return None
        except Exception as exc:  # a bug: answer INTERNAL and keep serving
            log.exception("unhandled error in %s", rpc.name)
            context.set_code(status_code(INTERNAL))
            context.set_details(f"internal error: {exc!r}")
            return None

    return handle


# Messages of one ModelStreamInfer read and not yet answered, at most (the
# native transport's bound per connection is the same).
STREAM_UNANSWERED = 256


def _stream_handler(
    service: InferenceService,
) -> Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext], Awaitable[None]]:
    start = service.start_stream_infer

    async def model_stream_infer(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> None:
        """Each message is queued as it arrives and answered as soon as its
        batch is done (clients match answers to requests by id). The batch's
        end puts the answer on this stream's queue: no task, coroutine or
        future a message. The stream ends once every message read has its
        answer written. Past STREAM_UNANSWERED messages read and not yet
        answered to a client, reading waits: a client that never reads its
        answers holds that many, and grpc's flow control stops its sending."""
        try:
            service.check_stream_access(_metadata_lookup(context))
        except MlserveError as exc:
            await context.abort(status_code(STATUS_BY_KIND[exc.kind]), exc.message)
        # Answers, then the number of messages read once the client is done.
        answers: asyncio.Queue[bytes | int] = asyncio.Queue()
        room = asyncio.Semaphore(STREAM_UNANSWERED)
        calls = StreamCalls()  # withdrawn if the stream ends before their answers

        async def read_all() -> None:
            read = 0
            try:
                async for data in requests:
                    await room.acquire()
                    read += 1
                    call = start(data, _queue_answer, answers)
                    if call is not None:
                        calls.add(call)
            finally:
                answers.put_nowait(read)

        reader = asyncio.get_running_loop().create_task(read_all())
        try:
            written, expected = 0, -1
            while written != expected:
                answer = await answers.get()
                if isinstance(answer, int):
                    expected = answer
                else:
                    await context.write(answer)
                    written += 1
                    room.release()
        finally:
            reader.cancel()
            calls.withdraw_all()  # a cancelled stream's unanswered requests

    return model_stream_infer


def _queue_answer(answers: asyncio.Queue[bytes | int], reply: bytes) -> None:
    answers.put_nowait(reply)


def _serialize(message: Reply) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def _credentials(endpoint: EndpointConfig) -> grpc.ServerCredentials | None:
    tls = endpoint.tls
    if tls is None:
        return None
    root = tls.root_cert.read_bytes() if tls.root_cert else None
    return grpc.ssl_server_credentials(
        [(tls.key.read_bytes(), tls.cert.read_bytes())],
        root_certificates=root,
        require_client_auth=tls.mutual,
    )


class GrpcioServer:
    """grpc.aio serving the inference and health services."""

    impl = "grpcio"

    def __init__(self, server: grpc.aio.Server, port: int) -> None:
        self._server = server
        self.port = port

    async def stop(self, grace_s: float) -> None:
        await self._server.stop(grace_s)


async def start_grpc_server(
    endpoint: GrpcEndpointConfig,
    dataplane: DataPlane,
    health: HealthReporter,
    *,
    reuse_port: bool = False,
) -> GrpcioServer:
    """Bind and start on grpcio."""
    # grpcio refuses anything over its own limit with RESOURCE_EXHAUSTED before we see it;
    # keep that limit above ours so that moderate excess gets our clearer INVALID_ARGUMENT.
    transport_limit = min(2 * endpoint.max_input_bytes + (1 << 20), 2**31 - 1)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", transport_limit),
            ("grpc.max_send_message_length", -1),
            ("grpc.keepalive_time_ms", int(endpoint.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(endpoint.keepalive_timeout_s * 1000)),
            # Shared only between the worker processes of one supervisor.
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ]
    )
    service = InferenceService(
        dataplane, AccessPolicy(list(endpoint.restricted)), endpoint.max_input_bytes
    )
    handlers: dict[str, grpc.RpcMethodHandler] = {
        rpc.name: grpc.unary_unary_rpc_method_handler(
            _unary_handler(rpc),
            request_deserializer=None,  # raw bytes: we parse (and bound) them ourselves
            response_serializer=_serialize,
        )
        for rpc in service.unary_rpcs()
    }
    handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
        _stream_handler(service), request_deserializer=None, response_serializer=_serialize
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    health_servicer = health_aio.HealthServicer()
    for name in ("", SERVICE):
        await health_servicer.set(name, health.status(name))
    loop = asyncio.get_running_loop()

    pending: set[asyncio.Task[None]] = set()

    def follow(name: str, status: int) -> None:
        task = loop.create_task(health_servicer.set(name, status))
        pending.add(task)
        task.add_done_callback(pending.discard)

    health.subscribe(follow)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{endpoint.address}:{endpoint.port}"
    credentials = _credentials(endpoint)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    await server.start()
    return GrpcioServer(server, port)
