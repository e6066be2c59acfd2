"""`inference.GRPCInferenceService` and `grpc.health.v1`, independent of the
transport: what each RPC does, from request bytes to response message.

Both gRPC transports (grpcio in grpc_server.py, the native HTTP/2 one in
grpc_native.py) route to the same `Rpc` entries and map errors with the same
status table, so a client cannot tell which one answered. Requests arrive as
bytes, so the size limit and malformed protobufs are answered by us, with
INVALID_ARGUMENT and a message naming the problem."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2

from mlserve.errors import ErrorKind, InvalidRequest, MlserveError
from mlserve.ext import infer_codec
from mlserve.ext.infer_codec import decode_simple_infer
from mlserve.proto import grpc_service_pb2 as pb
from mlserve.runtime import proto_views
from mlserve.runtime.access import AccessPolicy
from mlserve.runtime.dataplane import DataPlane, InferCall
from mlserve.runtime.grpc_codec import (
    decode_infer_request,
    infer_response_bytes,
    simple_infer_request,
    stream_response_bytes,
)
from mlserve.runtime.inference_types import InferRequest, InferResponse
from mlserve.runtime.tensor_codec import FIXED_DTYPES

log = logging.getLogger(__name__)
SERVICE = "inference.GRPCInferenceService"
HEALTH_SERVICE = "grpc.health.v1.Health"
_perf_ns = time.perf_counter_ns
# The decoder's Python twin is slower than protobuf (7.9 against 6.0 us for an
# MLP request, benchmarks/micro/codecs.py): only the compiled one is worth it.
_FAST_DECODE = infer_codec.IMPLEMENTATION == "cy"

# gRPC status codes (the numbers of grpc.StatusCode), one table for both transports.
OK = 0
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14

STATUS_BY_KIND: dict[ErrorKind, int] = {
    ErrorKind.INVALID_ARGUMENT: INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: NOT_FOUND,
    ErrorKind.PERMISSION_DENIED: PERMISSION_DENIED,
    ErrorKind.UNIMPLEMENTED: UNIMPLEMENTED,
    ErrorKind.UNAVAILABLE: UNAVAILABLE,
    ErrorKind.RESOURCE_EXHAUSTED: RESOURCE_EXHAUSTED,
    ErrorKind.DEADLINE_EXCEEDED: DEADLINE_EXCEEDED,
    ErrorKind.INTERNAL: INTERNAL,
}

MetadataLookup = Callable[[str], "str | None"]
# A unary RPC's answer: a message, or already its bytes (ModelInfer).
Reply = Message | bytes
UnaryCall = Callable[[bytes, MetadataLookup, "float | None"], Coroutine[Any, Any, Reply]]


def error_trailers(exc: MlserveError) -> tuple[tuple[str, str], ...]:
    """Trailing metadata that goes with an error: how long to wait before retrying."""
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is None:
        return ()
    return (("retry-after-ms", str(int(retry_after * 1000))),)


@dataclass(frozen=True, slots=True)
class Rpc:
    """One unary RPC: its name, the request type, and the call from bytes to reply."""

    name: str
    request_type: type[Message]
    call: UnaryCall


class InferenceService:
    """Each RPC: check access, parse, call the data plane, build the reply."""

    def __init__(self, dataplane: DataPlane, access: AccessPolicy, max_input_bytes: int) -> None:
        self.dataplane = dataplane
        self.access = access
        self.max_input_bytes = max_input_bytes
        self._infer_header = access.header_for("inference")

    # -- the method table ----------------------------------------------------

    def unary_rpcs(self) -> list[Rpc]:
        table: list[tuple[str, str, type[Message], Callable[..., Awaitable[Reply]]]] = [
            ("ServerLive", "health", pb.ServerLiveRequest, self.server_live),
            ("ServerReady", "health", pb.ServerReadyRequest, self.server_ready),
            ("ModelReady", "health", pb.ModelReadyRequest, self.model_ready),
            ("ServerMetadata", "metadata", pb.ServerMetadataRequest, self.server_metadata),
            ("ModelMetadata", "metadata", pb.ModelMetadataRequest, self.model_metadata),
            ("ModelConfig", "model-config", pb.ModelConfigRequest, self.model_config),
            ("ModelStatistics", "statistics", pb.ModelStatisticsRequest, self.model_statistics),
            (
                "RepositoryIndex",
                "model-repository",
                pb.RepositoryIndexRequest,
                self.repository_index,
            ),
            (
                "RepositoryModelLoad",
                "model-repository",
                pb.RepositoryModelLoadRequest,
                self.repository_load,
            ),
            (
                "RepositoryModelUnload",
                "model-repository",
                pb.RepositoryModelUnloadRequest,
                self.repository_unload,
            ),
            ("ModelInfer", "inference", pb.ModelInferRequest, self.model_infer),
        ]
        return [
            Rpc(name, request_type, self._checked(group, request_type, handler))
            for name, group, request_type, handler in table
        ]

    def _checked(
        self,
        group: str,
        request_type: type[Message],
        handler: Callable[..., Awaitable[Reply]],
    ) -> UnaryCall:
        """Access check, then the handler with the parsed request; ModelInfer's
        handler takes the bytes (most requests skip building the protobuf),
        and the metadata (a rollout's route hints)."""
        access = self.access
        restricted_header = access.header_for(group)
        limit = self.max_input_bytes
        takes_bytes = request_type is pb.ModelInferRequest

        async def call(
            data: bytes, metadata: MetadataLookup, time_remaining: float | None
        ) -> Reply:
            if restricted_header is not None:
                access.check(group, metadata(restricted_header))
            if takes_bytes:
                return await handler(data, time_remaining, metadata)
            return await handler(parse(request_type, data, limit), time_remaining)

        if takes_bytes and restricted_header is None:  # no check to make: no extra coroutine

            def direct(
                data: bytes, metadata: MetadataLookup, time_remaining: float | None
            ) -> Coroutine[Any, Any, Reply]:
                return handler(data, time_remaining, metadata)  # type: ignore[return-value]

            return direct
        return call

    def check_stream_access(self, metadata: MetadataLookup) -> None:
        """ModelStreamInfer is checked once, when the stream opens (and
        ModelInfer on the native transport, per call: `start_model_infer`)."""
        if self._infer_header is not None:
            self.access.check("inference", metadata(self._infer_header))

    # -- health and metadata ------------------------------------------------

    async def server_live(self, _: pb.ServerLiveRequest, __: float | None) -> Message:
        return pb.ServerLiveResponse(live=self.dataplane.live())

    async def server_ready(self, _: pb.ServerReadyRequest, __: float | None) -> Message:
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    async def model_ready(self, request: pb.ModelReadyRequest, _: float | None) -> Message:
        return pb.ModelReadyResponse(
            ready=self.dataplane.model_ready(request.name, request.version)
        )

    async def server_metadata(self, _: pb.ServerMetadataRequest, __: float | None) -> Message:
        meta = self.dataplane.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta.name, version=meta.version, extensions=meta.extensions
        )

    async def model_metadata(self, request: pb.ModelMetadataRequest, _: float | None) -> Message:
        meta = self.dataplane.model_metadata(request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta.name,
            versions=meta.versions,
            platform=meta.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs],
        )

    async def model_config(self, request: pb.ModelConfigRequest, _: float | None) -> Message:
        model = self.dataplane.model(request.name, request.version)
        return pb.ModelConfigResponse(config=proto_views.model_config_proto(model))

    async def model_statistics(
        self, request: pb.ModelStatisticsRequest, _: float | None
    ) -> Message:
        found = await self.dataplane.model_statistics(request.name, request.version)
        return pb.ModelStatisticsResponse(
            model_stats=[proto_views.model_statistics_proto(*item) for item in found]
        )

    # -- repository -----------------------------------------------------------

    async def repository_index(
        self, request: pb.RepositoryIndexRequest, _: float | None
    ) -> Message:
        entries = self.dataplane.repository_index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=e.name, version=e.version, state=e.state.value, reason=e.reason
                )
                for e in entries
            ]
        )

    async def repository_load(
        self, request: pb.RepositoryModelLoadRequest, _: float | None
    ) -> Message:
        if request.parameters:
            raise InvalidRequest(
                f"load parameters {sorted(request.parameters)} are not supported; "
                "put the model and its config.yaml in the repository"
            )
        await self.dataplane.load_model(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def repository_unload(
        self, request: pb.RepositoryModelUnloadRequest, _: float | None
    ) -> Message:
        await self.dataplane.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- inference ------------------------------------------------------------

    def decode(self, data: bytes, arrival_ns: int) -> InferRequest:
        """The request in the simple subset straight from the wire (the fast
        decoder in mlserve.ext.infer_codec); anything else through protobuf,
        which words the errors. A request that names a model and fails to
        decode is counted against that model."""
        simple = (
            decode_simple_infer(data, FIXED_DTYPES)
            if _FAST_DECODE and len(data) <= self.max_input_bytes
            else None
        )
        if simple is not None:
            try:
                return simple_infer_request(simple, arrival_ns)
            except MlserveError as exc:
                self.dataplane.count_rejected(simple[0], simple[1], exc)
                raise
        request = parse(pb.ModelInferRequest, data, self.max_input_bytes)
        try:
            return decode_infer_request(request, arrival_ns)
        except MlserveError as exc:
            self.dataplane.count_rejected(request.model_name, request.model_version, exc)
            raise

    def start_model_infer(
        self,
        data: bytes,
        metadata: MetadataLookup,
        time_remaining: float | None,
        stream: UnaryStream,
    ) -> InferCall:
        """ModelInfer for a transport that answers through a stream object
        (the native one): queued here, answered by the batch that runs it with
        `stream.reply` or `stream.finish`; an error found before it queues
        is raised. The same checks and data plane as `model_infer`, without
        its coroutine. Returns the queued call (`withdraw` it if the client
        leaves)."""
        self.check_stream_access(metadata)
        infer_request = self._unary_request(data, time_remaining)
        infer_request.headers = metadata  # route hints, read only for a model rolled out
        return self.dataplane.start(infer_request, _answer_unary, _fail_infer, stream)

    async def model_infer(
        self, data: bytes, time_remaining: float | None, metadata: MetadataLookup | None = None
    ) -> bytes:
        """ModelInfer: the answer already serialized (written straight to the
        wire); a `RoutedReply` when a rollout routed it, so that the transport
        can say which track answered (initial metadata)."""
        infer_request = self._unary_request(data, time_remaining)
        infer_request.headers = metadata  # route hints, read only for a model rolled out
        response = await self.dataplane.infer(infer_request)
        if response.parameters:
            return RoutedReply(infer_response_bytes(response), infer_request.route)
        return infer_response_bytes(response)

    def _unary_request(self, data: bytes, time_remaining: float | None) -> InferRequest:
        """A ModelInfer request, with the client's gRPC deadline as its timeout."""
        infer_request = self.decode(data, _perf_ns())
        if time_remaining is not None:
            infer_request.timeout_s = max(time_remaining, 1e-6)
        return infer_request

    def start_stream_infer(
        self, data: bytes, answer: StreamAnswer, stream: object
    ) -> InferCall | None:
        """One message of Triton's bidirectional ModelStreamInfer:
        `answer(stream, reply bytes)` once, now or from the batch that runs it.
        A failed request gets `error_message` in its answer, and the stream
        goes on (never raises). Returns the queued call (for StreamCalls), or
        None if the message was answered at once."""
        infer_request: InferRequest | None = None
        try:
            infer_request = self.decode(data, _perf_ns())
            # (answer, stream): the context the data plane hands back.
            return self.dataplane.start(
                infer_request, _answer_stream, _fail_stream, (answer, stream)
            )
        except Exception as exc:
            answer(stream, _stream_error(exc, infer_request, data))
            return None


# StreamCalls prunes answered calls once it holds this many (or twice what
# the last pruning kept): amortized O(1) a message, bounded memory.
_PRUNE_AT = 64


class StreamCalls:
    """The requests of one ModelStreamInfer stream, so that a stream that
    ends before they are answered (the client reset it, or its connection
    went) withdraws them instead of computing answers nobody will read, as a
    cancelled ModelInfer is withdrawn. Answered calls are pruned as the list
    grows, not one by one: an answer does not know its call."""

    __slots__ = ("_calls", "_prune_at")

    def __init__(self) -> None:
        self._calls: list[InferCall] = []
        self._prune_at = _PRUNE_AT

    def add(self, call: InferCall) -> None:
        calls = self._calls
        calls.append(call)
        if len(calls) >= self._prune_at:
            calls = self._calls = [c for c in calls if not c.done()]
            self._prune_at = max(_PRUNE_AT, 2 * len(calls))

    def withdraw_all(self) -> None:
        """Out of their queues, counted cancelled, if they have not begun to
        run (one that has runs, its answer dropped)."""
        calls, self._calls = self._calls, []
        for call in calls:
            call.withdraw()

    def __len__(self) -> int:
        return len(self._calls)


class UnaryStream(Protocol):
    """How a unary RPC is answered on the native transport (its H2Stream)."""

    route_header: bytes | None  # the answer's mlserve-route header, if a rollout routed it

    def reply(self, message: bytes, /) -> None: ...
    def finish(
        self, status: int, message: str = "", trailers: Sequence[tuple[str, str]] | None = None, /
    ) -> None: ...


def fail_unary(stream: UnaryStream, name: str, exc: BaseException) -> None:
    """End a unary RPC with the status for `exc` (a bug: INTERNAL, logged)."""
    if isinstance(exc, MlserveError):
        stream.finish(STATUS_BY_KIND[exc.kind], exc.message, error_trailers(exc))
        return
    log.error("unhandled error in %s", name, exc_info=exc)
    stream.finish(INTERNAL, f"internal error: {exc!r}")


_ROUTE_HEADER_VALUES = {"stable": b"stable", "canary": b"canary"}


class RoutedReply(bytes):
    """A ModelInfer answer that a rollout routed, and the track that answered."""

    route: str

    def __new__(cls, data: bytes, route: str) -> RoutedReply:
        reply = super().__new__(cls, data)
        reply.route = route
        return reply


def _answer_unary(stream: UnaryStream, response: InferResponse) -> None:
    if response.parameters:  # routed by a rollout: say which track answered
        stream.route_header = _ROUTE_HEADER_VALUES[str(response.parameters["mlserve_route"])]
    stream.reply(infer_response_bytes(response))


def _fail_infer(stream: UnaryStream, exc: BaseException, request: InferRequest) -> None:
    if request.route:
        stream.route_header = _ROUTE_HEADER_VALUES[request.route]
    fail_unary(stream, "ModelInfer", exc)


StreamAnswer = Callable[[Any, bytes], None]


def _answer_stream(context: tuple[StreamAnswer, object], response: InferResponse) -> None:
    answer, stream = context
    answer(stream, stream_response_bytes(response))


def _fail_stream(
    context: tuple[StreamAnswer, object], exc: BaseException, request: InferRequest
) -> None:
    answer, stream = context
    answer(stream, _stream_error(exc, request, b""))


def _stream_error(exc: BaseException, request: InferRequest | None, data: bytes) -> bytes:
    """A stream answer carrying the error: the stream itself goes on."""
    if isinstance(exc, MlserveError):
        return _error_reply(exc.message, request, data)
    log.error("unhandled error in ModelStreamInfer", exc_info=exc)  # a bug
    return _error_reply(f"internal error: {exc!r}", request, data)


def parse(request_type: type[Message], data: bytes, limit: int) -> Any:
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


def _error_reply(message: str, request: InferRequest | None, data: bytes) -> bytes:
    """A stream answer carrying an error (the stream itself stays open), with
    the request's id and model when they can be read, so the client can match it."""
    reply = pb.ModelStreamInferResponse(error_message=message)
    ids: Any = request
    if ids is None:
        try:
            ids = pb.ModelInferRequest.FromString(data)
        except DecodeError:
            return reply.SerializeToString()
    reply.infer_response.id = ids.id
    reply.infer_response.model_name = ids.model_name
    reply.infer_response.model_version = ids.model_version
    return reply.SerializeToString()


ServingStatus = int  # a health_pb2.HealthCheckResponse.ServingStatus value
Watcher = Callable[[str, ServingStatus], None]


class HealthReporter:
    """grpc.health.v1 state: SERVING while the data plane is ready, for the
    server as a whole ("") and for the inference service. Transports read it
    and subscribe to changes (Watch)."""

    def __init__(self) -> None:
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        self._status: dict[str, ServingStatus] = {"": not_serving, SERVICE: not_serving}
        self._watchers: list[Watcher] = []

    def status(self, service: str) -> ServingStatus | None:
        """None for a service we do not know."""
        return self._status.get(service)

    def subscribe(self, watcher: Watcher) -> Callable[[], None]:
        """Call `watcher(service, status)` on each change; returns the unsubscribe."""
        self._watchers.append(watcher)
        return lambda: self._watchers.remove(watcher) if watcher in self._watchers else None

    async def set_ready(self, ready: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in list(self._status):
            if self._status[service] != status:
                self._status[service] = status
                for watcher in list(self._watchers):
                    watcher(service, status)
