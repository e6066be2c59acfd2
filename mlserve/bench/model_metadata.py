"""The model's inputs as the server describes them (V2 model metadata over
gRPC or HTTP), so a benchmark needs no local copy of the model. Failures are
translated here, once, into the caller's-fault errors the CLI prints in one
line: nothing listening, no such model, a refusal."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from urllib.parse import quote

from mlserve.bench.settings import BenchSettings
from mlserve.errors import MlserveError, ModelNotFound, ModelUnavailable

SERVICE = "inference.GRPCInferenceService"


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 = any size


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]


class ServerRefused(MlserveError):
    """The server answered a setup call with an error (its words are kept)."""


def model_path(settings: BenchSettings) -> str:
    """'/v2/models/NAME[/versions/V]' with the name quoted for a URL."""
    path = f"/v2/models/{quote(settings.model, safe='')}"
    return f"{path}/versions/{settings.model_version}" if settings.model_version else path


def fetch_metadata(settings: BenchSettings) -> ModelMetadata:
    """Ask the server for the model's metadata over the protocol under test."""
    if settings.protocol == "grpc":
        return _fetch_grpc(settings)
    return _fetch_http(settings)


def _fetch_grpc(settings: BenchSettings) -> ModelMetadata:
    import grpc

    from mlserve.proto import grpc_service_pb2 as pb

    # No channel_ready_future: closing a channel that used one costs 200 ms, and
    # a call fails fast anyway when nothing (or no gRPC) listens there.
    with grpc.insecure_channel(settings.url) as channel:
        call = channel.unary_unary(
            f"/{SERVICE}/ModelMetadata",
            request_serializer=pb.ModelMetadataRequest.SerializeToString,
            response_deserializer=pb.ModelMetadataResponse.FromString,
        )
        request = pb.ModelMetadataRequest(name=settings.model, version=settings.model_version)
        try:
            meta = call(request, timeout=30.0)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
            if code == grpc.StatusCode.UNAVAILABLE:
                raise ModelUnavailable(
                    f"no gRPC server answers at {settings.url}: {details}"
                ) from None
            if code == grpc.StatusCode.NOT_FOUND:
                raise ModelNotFound(
                    f"model {settings.model!r} is not on the server at {settings.url}: {details}"
                ) from None
            raise ServerRefused(
                f"model {settings.model!r}: metadata request failed: {code.name}: {details}"
            ) from None
    return ModelMetadata(
        name=meta.name,
        versions=tuple(meta.versions),
        platform=meta.platform,
        inputs=tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in meta.inputs),
    )


def _fetch_http(settings: BenchSettings) -> ModelMetadata:
    host, port = settings.host_port()
    connection = http.client.HTTPConnection(host, port, timeout=30.0)
    try:
        try:
            connection.connect()
        except OSError as exc:
            raise ModelUnavailable(
                f"no HTTP server answers at {settings.url}: {exc.strerror or exc}"
            ) from None
        connection.request("GET", model_path(settings))
        response = connection.getresponse()
        body = response.read()
    except OSError as exc:
        raise ModelUnavailable(f"HTTP server at {settings.url} failed: {exc}") from None
    except http.client.HTTPException:
        raise ModelUnavailable(
            f"the server at {settings.url} does not answer HTTP/1.1 (is that the HTTP port?)"
        ) from None
    finally:
        connection.close()
    if response.status != 200:
        message = error_text(body)
        if response.status == 404:
            raise ModelNotFound(
                f"model {settings.model!r} is not on the server at {settings.url}: {message}"
            )
        raise ServerRefused(
            f"model {settings.model!r}: metadata request failed: HTTP {response.status}: {message}"
        )
    try:
        doc = json.loads(body)
        inputs = tuple(
            TensorSpec(str(t["name"]), str(t["datatype"]), tuple(int(d) for d in t["shape"]))
            for t in doc["inputs"]
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ServerRefused(
            f"model {settings.model!r}: metadata from {settings.url} is not V2 JSON: {exc!r}"
        ) from None
    return ModelMetadata(
        name=str(doc.get("name", settings.model)),
        versions=tuple(str(v) for v in doc.get("versions", ())),
        platform=str(doc.get("platform", "")),
        inputs=inputs,
    )


def error_text(body: bytes, limit: int = 300) -> str:
    """A V2 error body's message ({"error": ...}) or the body itself, shortened."""
    try:
        text = str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        text = body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."
