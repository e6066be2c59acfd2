"""One request sent before the load, with the exact bytes the workers will
send: if the server refuses it (wrong shape, over max_batch_size, a model that
is not ready, no streaming), the user gets the server's reason in one line
instead of a table of errors. It counts as a successful request on the server,
and the report says so (`check_requests`)."""

from __future__ import annotations

import http.client
import socket

from mlserve.bench.settings import BenchSettings
from mlserve.client import SERVICE, ClientError, error_text
from mlserve.errors import InvalidRequest, ModelNotFound, ModelUnavailable, Unsupported

TIMEOUT_S = 30.0


def probe(settings: BenchSettings, request: bytes) -> None:
    """Send `request` once; raise a classified error if it does not succeed."""
    if settings.protocol == "http":
        _probe_http(settings, request)
    elif settings.streaming:
        _probe_stream(settings, request)
    else:
        _probe_unary(settings, request)


def _refused(settings: BenchSettings, status: str, message: str) -> Exception:
    text = f"model {settings.model!r}: the server refused the first request: {status}: {message}"
    if status in ("INVALID_ARGUMENT", "HTTP 400"):
        return InvalidRequest(text)
    if status in ("NOT_FOUND", "HTTP 404"):
        return ModelNotFound(text)
    if status in ("UNAVAILABLE", "HTTP 503"):
        return ModelUnavailable(text)
    if status in ("UNIMPLEMENTED", "HTTP 501"):
        return Unsupported(text)
    return ClientError(text)


def _probe_unary(settings: BenchSettings, request: bytes) -> None:
    import grpc

    with grpc.insecure_channel(settings.url) as channel:
        call = channel.unary_unary(f"/{SERVICE}/ModelInfer")
        try:
            call(request, timeout=TIMEOUT_S)
        except grpc.RpcError as exc:
            raise _refused(settings, exc.code().name, exc.details()) from None


def _probe_stream(settings: BenchSettings, request: bytes) -> None:
    import grpc

    from mlserve.proto import grpc_service_pb2 as pb

    with grpc.insecure_channel(settings.url) as channel:
        call = channel.stream_stream(f"/{SERVICE}/ModelStreamInfer")
        try:
            replies = list(call(iter([request]), timeout=TIMEOUT_S))
        except grpc.RpcError as exc:
            raise _refused(settings, exc.code().name, exc.details()) from None
    if len(replies) != 1:
        raise ClientError(
            f"model {settings.model!r}: ModelStreamInfer answered one request with "
            f"{len(replies)} responses; mlserve bench expects one"
        )
    reply = pb.ModelStreamInferResponse.FromString(replies[0])
    if reply.error_message:
        raise _refused(settings, "ModelStreamInfer error_message", reply.error_message)


def _probe_http(settings: BenchSettings, request: bytes) -> None:
    host, port = settings.host_port()
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
            sock.sendall(request)
            response = http.client.HTTPResponse(sock)
            response.begin()
            body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise ModelUnavailable(f"HTTP server at {settings.url} failed: {exc}") from None
    if response.status != 200:
        raise _refused(settings, f"HTTP {response.status}", error_text(body))
    if response.getheader("content-length") is None:
        raise Unsupported(
            f"the HTTP server at {settings.url} answers without Content-Length "
            f"(Transfer-Encoding: {response.getheader('transfer-encoding')}); "
            "mlserve bench's HTTP client needs it"
        )
