"""The grpcio transport: `inference.GRPCInferenceService` and `grpc.health.v1`
on grpc.aio, a thin adapter over the data plane.

Handlers take the serialized request bytes, so the size limit and malformed
protobufs are answered with INVALID_ARGUMENT by us rather than by grpcio.
Status codes come from the one table below."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from mlserve.config import EndpointConfig
from mlserve.errors import ErrorKind, InvalidRequest, MlserveError
from mlserve.proto import grpc_service_pb2 as pb
from mlserve.runtime import proto_views
from mlserve.runtime.access import AccessPolicy
from mlserve.runtime.dataplane import DataPlane
from mlserve.runtime.grpc_codec import decode_infer_request, encode_infer_response

log = logging.getLogger(__name__)
SERVICE = "inference.GRPCInferenceService"
_perf_ns = time.perf_counter_ns

STATUS_BY_KIND: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
}

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Message]]


class InferenceService:
    """Each RPC: check access, parse, call the data plane, build the reply."""

    def __init__(self, dataplane: DataPlane, access: AccessPolicy, max_input_bytes: int) -> None:
        self.dataplane = dataplane
        self.access = access
        self.max_input_bytes = max_input_bytes

    # -- plumbing -------------------------------------------------------------

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        table: dict[str, tuple[str, type[Message], Handler]] = {
            "ServerLive": ("health", pb.ServerLiveRequest, self.server_live),
            "ServerReady": ("health", pb.ServerReadyRequest, self.server_ready),
            "ModelReady": ("health", pb.ModelReadyRequest, self.model_ready),
            "ServerMetadata": ("metadata", pb.ServerMetadataRequest, self.server_metadata),
            "ModelMetadata": ("metadata", pb.ModelMetadataRequest, self.model_metadata),
            "ModelConfig": ("model-config", pb.ModelConfigRequest, self.model_config),
            "ModelStatistics": ("statistics", pb.ModelStatisticsRequest, self.model_statistics),
            "RepositoryIndex": (
                "model-repository",
                pb.RepositoryIndexRequest,
                self.repository_index,
            ),
            "RepositoryModelLoad": (
                "model-repository",
                pb.RepositoryModelLoadRequest,
                self.repository_load,
            ),
            "RepositoryModelUnload": (
                "model-repository",
                pb.RepositoryModelUnloadRequest,
                self.repository_unload,
            ),
            "ModelInfer": ("inference", pb.ModelInferRequest, self.model_infer),
        }
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._wrap(group, request_type, handler),
                request_deserializer=None,  # raw bytes: we parse (and bound) them ourselves
                response_serializer=_serialize,
            )
            for name, (group, request_type, handler) in table.items()
        }
        handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            self.model_stream_infer, request_deserializer=None, response_serializer=_serialize
        )
        return handlers

    def _wrap(
        self, group: str, request_type: type[Message], handler: Handler
    ) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Message | None]]:
        access = self.access
        restricted_header = access.header_for(group)
        limit = self.max_input_bytes
        name = request_type.DESCRIPTOR.name

        async def call(data: bytes, context: grpc.aio.ServicerContext) -> Message | None:
            try:
                if restricted_header is not None:
                    access.check(group, _metadata_value(context, restricted_header))
                return await handler(_parse(request_type, data, limit), context)
            except MlserveError as exc:
                context.set_code(STATUS_BY_KIND[exc.kind])
                context.set_details(exc.message)
                retry_after = getattr(exc, "retry_after_s", None)
                if retry_after is not None:
                    context.set_trailing_metadata(
                        (("retry-after-ms", str(int(retry_after * 1000))),)
                    )
                return None
            except Exception as exc:  # a bug: answer INTERNAL and keep serving
                log.exception("unhandled error in %s", name)
                context.set_code(grpc.StatusCode.INTERNAL)
                context.set_details(f"internal error: {exc!r}")
                return None

        return call

    # -- health and metadata ------------------------------------------------

    async def server_live(self, _: pb.ServerLiveRequest, __: Any) -> Message:
        return pb.ServerLiveResponse(live=self.dataplane.live())

    async def server_ready(self, _: pb.ServerReadyRequest, __: Any) -> Message:
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    async def model_ready(self, request: pb.ModelReadyRequest, _: Any) -> Message:
        return pb.ModelReadyResponse(
            ready=self.dataplane.model_ready(request.name, request.version)
        )

    async def server_metadata(self, _: pb.ServerMetadataRequest, __: Any) -> Message:
        meta = self.dataplane.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta.name, version=meta.version, extensions=meta.extensions
        )

    async def model_metadata(self, request: pb.ModelMetadataRequest, _: Any) -> Message:
        meta = self.dataplane.model_metadata(request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta.name,
            versions=meta.versions,
            platform=meta.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs],
        )

    async def model_config(self, request: pb.ModelConfigRequest, _: Any) -> Message:
        model = self.dataplane.model(request.name, request.version)
        return pb.ModelConfigResponse(config=proto_views.model_config_proto(model))

    async def model_statistics(self, request: pb.ModelStatisticsRequest, _: Any) -> Message:
        found = await self.dataplane.model_statistics(request.name, request.version)
        return pb.ModelStatisticsResponse(
            model_stats=[proto_views.model_statistics_proto(*item) for item in found]
        )

    # -- repository -----------------------------------------------------------

    async def repository_index(self, request: pb.RepositoryIndexRequest, _: Any) -> Message:
        entries = self.dataplane.repository_index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=e.name, version=e.version, state=e.state.value, reason=e.reason
                )
                for e in entries
            ]
        )

    async def repository_load(self, request: pb.RepositoryModelLoadRequest, _: Any) -> Message:
        if request.parameters:
            raise InvalidRequest(
                f"load parameters {sorted(request.parameters)} are not supported; "
                "put the model and its config.yaml in the repository"
            )
        await self.dataplane.load_model(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def repository_unload(self, request: pb.RepositoryModelUnloadRequest, _: Any) -> Message:
        await self.dataplane.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- inference ------------------------------------------------------------

    async def model_infer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> Message:
        arrival = _perf_ns()
        try:
            infer_request = decode_infer_request(request, arrival)
        except MlserveError as exc:
            self.dataplane.count_rejected(request.model_name, request.model_version, exc)
            raise
        remaining = context.time_remaining()
        if remaining is not None:
            infer_request.timeout_s = max(remaining, 1e-6)
        response = await self.dataplane.infer(infer_request)
        return encode_infer_response(response)

    async def model_stream_infer(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> None:
        """Triton's bidirectional stream: each request is served concurrently and
        answered as soon as it is done (match answers to requests by id); a failed
        request gets `error_message`, and the stream goes on."""
        header = self.access.header_for("inference")
        if header is not None:
            try:
                self.access.check("inference", _metadata_value(context, header))
            except MlserveError as exc:
                await context.abort(STATUS_BY_KIND[exc.kind], exc.message)
        answers: asyncio.Queue[Message | None] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()

        async def serve_one(data: bytes) -> None:
            request: pb.ModelInferRequest | None = None
            try:
                request = _parse(pb.ModelInferRequest, data, self.max_input_bytes)
                assert request is not None
                try:
                    infer_request = decode_infer_request(request, _perf_ns())
                except MlserveError as exc:
                    self.dataplane.count_rejected(request.model_name, request.model_version, exc)
                    raise
                response = await self.dataplane.infer(infer_request)
                reply = pb.ModelStreamInferResponse()
                encode_infer_response(response, reply.infer_response)
            except MlserveError as exc:
                reply = _error_reply(exc.message, request)
            except Exception as exc:  # a bug: answer this request, keep the stream
                log.exception("unhandled error in ModelStreamInfer")
                reply = _error_reply(f"internal error: {exc!r}", request)
            answers.put_nowait(reply)

        async def read_all() -> None:
            try:
                async for data in requests:
                    task = asyncio.get_running_loop().create_task(serve_one(data))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                while tasks:
                    await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                answers.put_nowait(None)

        reader = asyncio.get_running_loop().create_task(read_all())
        try:
            while (reply := await answers.get()) is not None:
                await context.write(reply)
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()


def _parse(request_type: type[Message], data: bytes, limit: int) -> Any:
    """Bounded, checked protobuf parsing (errors name the message type)."""
    name = request_type.DESCRIPTOR.name
    if len(data) > limit:
        raise InvalidRequest(
            f"{name} is {len(data)} bytes, over the server's limit of {limit} "
            "bytes (--grpc-max-input-size)"
        )
    try:
        return request_type.FromString(data)
    except DecodeError as exc:
        raise InvalidRequest(f"{name} is not a valid protobuf message: {exc}") from None


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _error_reply(message: str, request: pb.ModelInferRequest | None) -> pb.ModelStreamInferResponse:
    """A stream answer carrying an error (the stream itself stays open)."""
    reply = pb.ModelStreamInferResponse(error_message=message)
    if request is not None:
        reply.infer_response.id = request.id
        reply.infer_response.model_name = request.model_name
        reply.infer_response.model_version = request.model_version
    return reply


def _metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for item in context.invocation_metadata() or ():
        if item.key == key:
            value = item.value
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


class HealthReporter:
    """grpc.health.v1: SERVING while the data plane is ready."""

    def __init__(self) -> None:
        self.servicer = health_aio.HealthServicer()

    async def set_ready(self, ready: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SERVICE):
            await self.servicer.set(service, status)


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


async def start_grpc_server(
    endpoint: EndpointConfig,
    dataplane: DataPlane,
    health: HealthReporter,
    *,
    reuse_port: bool = False,
) -> tuple[grpc.aio.Server, int]:
    """Bind and start; returns the server and its port."""
    # grpcio refuses anything over its own limit with RESOURCE_EXHAUSTED before we see it;
    # keep that limit above ours so that moderate excess gets our clearer INVALID_ARGUMENT.
    transport_limit = min(2 * endpoint.max_input_bytes + (1 << 20), 2**31 - 1)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", transport_limit),
            ("grpc.max_send_message_length", -1),
            # Shared only between the worker processes of one supervisor.
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ]
    )
    service = InferenceService(
        dataplane, AccessPolicy(list(endpoint.restricted)), endpoint.max_input_bytes
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, service.handlers()),)
    )
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    address = f"{endpoint.address}:{endpoint.port}"
    credentials = _credentials(endpoint)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    await server.start()
    return server, port
