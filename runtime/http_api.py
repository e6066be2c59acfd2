"""The V2 REST API over the bare HTTP server: routing, access checks, body
compression, and the one table mapping error kinds to HTTP status codes."""

from __future__ import annotations

import hmac
import logging
import math
import time
import zlib
from typing import Any
from urllib.parse import unquote

import orjson

from mlserve.errors import (
    ErrorKind,
    InternalError,
    InvalidRequest,
    MlserveError,
    ModelNotFound,
    PermissionDenied,
    Unsupported,
)
from mlserve.runtime import http_codec, proto_views
from mlserve.runtime.access import AccessPolicy
from mlserve.runtime.dataplane import DataPlane
from mlserve.runtime.http_server import Answer, HttpRequest, HttpResponse
from mlserve.runtime.inference_types import InferRequest, InferResponse
from mlserve.runtime.routing import RolloutAdmin

_perf_ns = time.perf_counter_ns
log = logging.getLogger(__name__)

STATUS_BY_KIND: dict[ErrorKind, int] = {
    ErrorKind.INVALID_ARGUMENT: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.PERMISSION_DENIED: 403,
    ErrorKind.UNIMPLEMENTED: 501,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.RESOURCE_EXHAUSTED: 429,
    ErrorKind.DEADLINE_EXCEEDED: 504,
    ErrorKind.INTERNAL: 500,
}
_OK = HttpResponse(200, b"", "text/plain")
# Health answers: the Open Inference Protocol's JSON bodies (KServe's client
# reads them), with the status codes Triton's clients read (200, else 503).
_HEALTH = {
    ("live", True): HttpResponse(200, b'{"live":true}'),
    ("live", False): HttpResponse(503, b'{"live":false}'),
    ("ready", True): HttpResponse(200, b'{"ready":true}'),
    ("ready", False): HttpResponse(503, b'{"ready":false}'),
}


def _json(doc: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(status, orjson.dumps(doc))


class MethodNotAllowed(InvalidRequest):
    """An HTTP method the endpoint does not take: 405 with an Allow header."""

    def __init__(self, method: str, allowed: str) -> None:
        super().__init__(f"method {method} not allowed here; use {allowed}")
        self.allowed = allowed


def error_response(error: MlserveError) -> HttpResponse:
    if isinstance(error, MethodNotAllowed):
        response = _json({"error": error.message}, 405)
        response.headers.append(("Allow", error.allowed))
        return response
    response = _json({"error": error.message}, STATUS_BY_KIND[error.kind])
    retry_after = getattr(error, "retry_after_s", None)
    if retry_after is not None:
        response.headers.append(("Retry-After", str(max(1, math.ceil(retry_after)))))
    return response


class HttpApi:
    """Routes one HTTP request to the data plane and builds the reply."""

    def __init__(self, dataplane: DataPlane, access: AccessPolicy, max_input_bytes: int) -> None:
        self.dataplane = dataplane
        self.access = access
        self.max_input_bytes = max_input_bytes
        # The rollout admin API (/v2/rollouts), when the composition root wires
        # one, and the bearer token it asks for (--admin-token).
        self.rollouts: RolloutAdmin | None = None
        self.admin_token: str | None = None

    async def handle(self, request: HttpRequest) -> HttpResponse:
        try:
            return await self._route(request)
        except Exception as exc:
            return _error_answer(request, exc)

    def start_infer(self, request: HttpRequest, answer: Answer, context: object) -> bool:
        """`POST .../infer` answered by callback: `answer(context, response)`
        once, now or from the batch that runs it (no coroutine per request;
        see DataPlane.start). False for any other request, which `handle`
        serves."""
        target = _infer_target(request)
        if target is None:
            return False
        try:
            self._check("inference", request)
            infer_request = self._infer_request(request, *target)
            request.call = self.dataplane.start(
                infer_request, _answer_infer, _fail_infer, (answer, context, request, infer_request)
            )
        except Exception as exc:
            answer(context, _error_answer(request, exc))
        return True

    def _check(self, group: str, request: HttpRequest) -> None:
        header = self.access.header_for(group)
        if header is not None:
            self.access.check(group, request.headers.get(header))

    async def _route(self, request: HttpRequest) -> HttpResponse:
        parts = request.path.split("/")
        if len(parts) < 2 or parts[1] != "v2":
            raise ModelNotFound(f"no endpoint at {request.path}")
        rest = parts[2:]
        method = request.method
        if not rest or rest == [""]:
            self._method(method, "GET")
            self._check("metadata", request)
            meta = self.dataplane.server_metadata()
            return _json(
                {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}
            )
        head = rest[0]
        if head == "health" and len(rest) == 2 and rest[1] in ("live", "ready"):
            self._method(method, "GET")
            self._check("health", request)
            ok = self.dataplane.live() if rest[1] == "live" else self.dataplane.ready()
            return _HEALTH[rest[1], ok]
        if head == "models":
            return await self._models(request, rest[1:])
        if head == "repository":
            return await self._repository(request, rest[1:])
        if head == "rollouts":
            return await self._rollouts(request, rest[1:])
        raise ModelNotFound(f"no endpoint at {request.path}")

    @staticmethod
    def _method(method: str, expected: str) -> None:
        if method != expected:
            raise MethodNotAllowed(method, expected)

    async def _models(self, request: HttpRequest, rest: list[str]) -> HttpResponse:
        if not rest or rest == [""]:  # KServe's model list: the names of ready models
            self._method(request.method, "GET")
            self._check("metadata", request)
            entries = self.dataplane.repository_index(ready_only=True)
            return _json({"models": sorted({e.name for e in entries})})
        if rest == ["stats"]:
            self._method(request.method, "GET")
            self._check("statistics", request)
            return await self._stats("", "")
        if not rest or not rest[0]:
            raise ModelNotFound(f"no endpoint at {request.path}")
        name = unquote(rest[0])
        rest = rest[1:]
        version = ""
        if len(rest) >= 2 and rest[0] == "versions":
            version = unquote(rest[1])
            if not version.isdigit():
                raise InvalidRequest(f"model version must be a number, got {version!r}")
            rest = rest[2:]
        action = rest[0] if rest else ""
        if len(rest) > 1:
            raise ModelNotFound(f"no endpoint at {request.path}")
        if action == "infer":
            self._method(request.method, "POST")
            self._check("inference", request)
            return await self._infer(request, name, version)
        self._method(request.method, "GET")
        if action == "":
            self._check("metadata", request)
            meta = self.dataplane.model_metadata(name, version)
            return _json(
                {
                    "name": meta.name,
                    "versions": list(meta.versions),
                    "platform": meta.platform,
                    "inputs": [
                        {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                        for t in meta.inputs
                    ],
                    "outputs": [
                        {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                        for t in meta.outputs
                    ],
                    "parameters": {"sha256": meta.sha256},
                }
            )
        if action == "ready":
            self._check("health", request)
            ready = self.dataplane.model_ready(name, version)
            return _json({"name": name, "ready": ready}, 200 if ready else 503)
        if action == "config":
            self._check("model-config", request)
            model = self.dataplane.model(name, version)
            return _json(proto_views.to_json_dict(proto_views.model_config_proto(model)))
        if action == "stats":
            self._check("statistics", request)
            return await self._stats(name, version)
        raise ModelNotFound(f"no endpoint at {request.path}")

    async def _stats(self, name: str, version: str) -> HttpResponse:
        found = await self.dataplane.model_statistics(name, version)
        return _json(
            {
                "model_stats": [
                    proto_views.to_json_dict(proto_views.model_statistics_proto(*item))
                    for item in found
                ]
            }
        )

    async def _repository(self, request: HttpRequest, rest: list[str]) -> HttpResponse:
        self._method(request.method, "POST")
        self._check("model-repository", request)
        body = self._json_body(request) if request.body else {}
        if rest == ["index"]:
            ready = body.get("ready", False)
            if not isinstance(ready, bool):
                raise InvalidRequest("'ready' must be true or false")
            entries = self.dataplane.repository_index(ready_only=ready)
            return _json(
                [
                    {
                        "name": e.name,
                        "version": e.version,
                        "state": e.state.value,
                        "reason": e.reason,
                    }
                    for e in entries
                ]
            )
        if len(rest) == 3 and rest[0] == "models" and rest[2] in ("load", "unload"):
            name = unquote(rest[1])
            if rest[2] == "load":
                parameters = body.get("parameters", {})
                if not isinstance(parameters, dict):
                    raise InvalidRequest("'parameters' must be a JSON object")
                if parameters:
                    raise InvalidRequest(
                        f"load parameters {sorted(parameters)} are not supported; put "
                        "the model and its config.yaml in the repository"
                    )
                await self.dataplane.load_model(name)
            else:
                await self.dataplane.unload_model(name)
            return _OK
        raise ModelNotFound(f"no endpoint at {request.path}")

    async def _rollouts(self, request: HttpRequest, rest: list[str]) -> HttpResponse:
        """GET /v2/rollouts[/{model}]; POST /v2/rollouts/{model}/ACTION. Guarded
        as the repository API is, and by the admin bearer token when set."""
        self._check("model-repository", request)
        if self.admin_token is not None:
            offered = request.headers.get("authorization", "")
            if not hmac.compare_digest(offered.encode(), f"Bearer {self.admin_token}".encode()):
                raise PermissionDenied(
                    "the rollout API needs the admin token: Authorization: Bearer <token> "
                    "(the server's --admin-token)"
                )
        admin = self.rollouts
        if admin is None:
            raise Unsupported("this server has no rollout controller")
        if not rest or rest == [""]:
            self._method(request.method, "GET")
            return _json({"rollouts": admin.statuses()})
        name = unquote(rest[0])
        if len(rest) == 1:
            self._method(request.method, "GET")
            return _json(admin.status(name))
        if len(rest) == 2 and rest[1] in ROLLOUT_ACTIONS:
            self._method(request.method, "POST")
            if rest[1] != "start":
                return _json(admin.act(name, rest[1]))
            body = self._json_body(request) if request.body else {}
            versions = {}
            for key in ("canary", "stable"):
                value = body.get(key)
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, int) or value < 1
                ):
                    raise InvalidRequest(f"'{key}' must be a version number, got {value!r}")
                versions[key] = value
            if versions["canary"] is None:
                raise InvalidRequest("'canary' is required: the version to roll out")
            return _json(
                await admin.start(name, canary=versions["canary"], stable=versions["stable"])
            )
        raise ModelNotFound(f"no endpoint at {request.path}")

    def _json_body(self, request: HttpRequest) -> dict[str, Any]:
        try:
            doc = orjson.loads(self._decoded_body(request))
        except ValueError as exc:
            raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise InvalidRequest("request body must be a JSON object")
        return doc

    def _decoded_body(self, request: HttpRequest) -> bytes:
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            return request.body
        if encoding not in ("gzip", "deflate"):
            raise InvalidRequest(
                f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or identity"
            )
        wbits = 31 if encoding == "gzip" else 15
        decompressor = zlib.decompressobj(wbits)
        try:
            out = decompressor.decompress(request.body, self.max_input_bytes + 1)
        except zlib.error as exc:
            raise InvalidRequest(f"request body is not valid {encoding} data: {exc}") from None
        if len(out) > self.max_input_bytes or decompressor.unconsumed_tail:
            raise InvalidRequest(
                f"decompressed request body is over the server's limit of "
                f"{self.max_input_bytes} bytes (--http-max-input-size)"
            )
        if not decompressor.eof:
            raise InvalidRequest(f"request body is truncated {encoding} data")
        return out

    async def _infer(self, request: HttpRequest, name: str, version: str) -> HttpResponse:
        infer_request = self._infer_request(request, name, version)
        result = await self.dataplane.infer(infer_request)
        return _infer_response(request, infer_request, result)

    def _infer_request(self, request: HttpRequest, name: str, version: str) -> InferRequest:
        """Decode the body; a request that fails here is counted against its model."""
        arrival = _perf_ns()
        header_length: int | None = None
        raw_length = request.headers.get("inference-header-content-length")
        try:
            if raw_length is not None:
                if not raw_length.strip().isdigit():
                    raise InvalidRequest(
                        f"Inference-Header-Content-Length must be an integer, got {raw_length!r}"
                    )
                header_length = int(raw_length)
            body = self._decoded_body(request)
            infer_request = http_codec.decode_infer_request(
                name, version, body, header_length, arrival
            )
            infer_request.headers = request.headers.get  # route hints, read only in a rollout
        except MlserveError as exc:
            self.dataplane.count_rejected(name, version, exc)
            raise
        return infer_request


ROLLOUT_ACTIONS = ("start", "pause", "resume", "promote", "abort")


def _infer_target(request: HttpRequest) -> tuple[str, str] | None:
    """(model, version) of `POST /v2/models/<m>[/versions/<v>]/infer`, else None
    (routing, method and version errors are `handle`'s to word)."""
    if request.method != "POST" or not request.path.endswith("/infer"):
        return None
    parts = request.path.split("/")
    if len(parts) == 5 and parts[1] == "v2" and parts[2] == "models" and parts[3]:
        name = parts[3]
        return (unquote(name) if "%" in name else name), ""
    if (
        len(parts) == 7
        and parts[1] == "v2"
        and parts[2] == "models"
        and parts[3]
        and parts[4] == "versions"
        and parts[5].isdigit()
    ):
        return unquote(parts[3]), parts[5]
    return None


def _infer_response(
    request: HttpRequest, infer_request: InferRequest, result: InferResponse
) -> HttpResponse:
    payload, json_length = http_codec.encode_infer_response(result, infer_request.parameters)
    headers: list[tuple[str, str]] = []
    content_type = "application/json"
    if json_length is not None:
        headers.append(("Inference-Header-Content-Length", str(json_length)))
        content_type = "application/octet-stream"
    if infer_request.route:  # a rollout routed it: which track answered
        headers.append(("mlserve-route", infer_request.route))
    accept = request.headers.get("accept-encoding", "")
    if accept:
        payload = _compress(payload, accept, headers)
    return HttpResponse(200, payload, content_type, headers)


def _error_answer(request: HttpRequest, exc: BaseException) -> HttpResponse:
    if isinstance(exc, MlserveError):
        return error_response(exc)
    # a bug: answer 500, keep the connection and the server
    log.error("unhandled error serving %s %s", request.method, request.path, exc_info=exc)
    return error_response(InternalError(f"internal error: {exc!r}"))


InferContext = tuple[Answer, object, HttpRequest, InferRequest]


def _answer_infer(context: InferContext, result: InferResponse) -> None:
    answer, answer_context, request, infer_request = context
    try:
        response = _infer_response(request, infer_request, result)
    except Exception as exc:
        response = _error_answer(request, exc)
    answer(answer_context, response)


def _fail_infer(context: InferContext, exc: BaseException, infer_request: InferRequest) -> None:
    answer, answer_context, request, _ = context
    response = _error_answer(request, exc)
    if infer_request.route:
        response.headers.append(("mlserve-route", infer_request.route))
    answer(answer_context, response)


def _compress(payload: bytes, accept: str, headers: list[tuple[str, str]]) -> bytes:
    offered = {token.split(";")[0].strip().lower() for token in accept.split(",")}
    if "gzip" in offered:
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        headers.append(("Content-Encoding", "gzip"))
    elif "deflate" in offered:
        compressor = zlib.compressobj(6, zlib.DEFLATED, 15)
        headers.append(("Content-Encoding", "deflate"))
    else:
        return payload
    return compressor.compress(payload) + compressor.flush()
