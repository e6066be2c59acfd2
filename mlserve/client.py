"""A small V2 client for the CLI (`mlserve infer`, `mlserve models`): gRPC on
our generated stubs, HTTP on the standard library with the binary extension.
Not a replacement for tritonclient; enough for local testing."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import grpc
import numpy as np

from mlserve.errors import MlserveError, ModelNotFound, ModelUnavailable
from mlserve.proto import grpc_service_pb2 as pb
from mlserve.runtime import datatypes
from mlserve.runtime.tensor_codec import array_from_raw, array_to_raw

SERVICE = "inference.GRPCInferenceService"


class ClientError(MlserveError):
    """The server answered with an error (its message is kept)."""


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorInfo, ...]


def error_text(body: bytes, limit: int = 300) -> str:
    """A V2 error body's message ({"error": ...}) or the body itself, shortened."""
    try:
        text = str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        text = body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


class V2Client(Protocol):
    def metadata(self, model: str, version: str = "") -> ModelMetadata: ...
    def inputs(self, model: str, version: str = "") -> list[TensorInfo]: ...
    def infer(
        self, model: str, inputs: dict[str, np.ndarray], version: str = ""
    ) -> dict[str, np.ndarray]: ...
    def repository_index(self) -> list[dict[str, str]]: ...


def _datatype_of(array: np.ndarray) -> str:
    return datatypes.from_numpy(array.dtype).name


class GrpcClient:
    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self._url = url
        self._channel = grpc.insecure_channel(url)
        self._timeout = timeout_s

    def _call(self, method: str, request: Any) -> Any:
        response_type = getattr(pb, f"{method}Response")
        call = self._channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        try:
            return call(request, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise ClientError(f"{exc.code().name}: {exc.details()}") from None

    def metadata(self, model: str, version: str = "") -> ModelMetadata:
        """The model's metadata; nothing listening and no such model get their own errors."""
        call = self._channel.unary_unary(
            f"/{SERVICE}/ModelMetadata",
            request_serializer=pb.ModelMetadataRequest.SerializeToString,
            response_deserializer=pb.ModelMetadataResponse.FromString,
        )
        try:
            meta = call(pb.ModelMetadataRequest(name=model, version=version), timeout=self._timeout)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
            if code == grpc.StatusCode.UNAVAILABLE:
                raise ModelUnavailable(
                    f"no gRPC server answers at {self._url}: {details}"
                ) from None
            if code == grpc.StatusCode.NOT_FOUND:
                raise ModelNotFound(
                    f"model {model!r} is not on the server at {self._url}: {details}"
                ) from None
            raise ClientError(
                f"model {model!r}: metadata request failed: {code.name}: {details}"
            ) from None
        return ModelMetadata(
            name=meta.name,
            versions=tuple(meta.versions),
            platform=meta.platform,
            inputs=tuple(TensorInfo(t.name, t.datatype, tuple(t.shape)) for t in meta.inputs),
        )

    def inputs(self, model: str, version: str = "") -> list[TensorInfo]:
        return list(self.metadata(model, version).inputs)

    def infer(
        self, model: str, inputs: dict[str, np.ndarray], version: str = ""
    ) -> dict[str, np.ndarray]:
        request = pb.ModelInferRequest(model_name=model, model_version=version)
        for name, array in inputs.items():
            datatype = _datatype_of(array)
            request.inputs.add(name=name, datatype=datatype, shape=array.shape)
            request.raw_input_contents.append(array_to_raw(array, datatype))
        response = self._call("ModelInfer", request)
        return {
            out.name: array_from_raw(out.name, out.datatype, tuple(out.shape), raw, text=False)
            for out, raw in zip(response.outputs, response.raw_output_contents, strict=True)
        }

    def repository_index(self) -> list[dict[str, str]]:
        index = self._call("RepositoryIndex", pb.RepositoryIndexRequest())
        return [
            {"name": m.name, "version": m.version, "state": m.state, "reason": m.reason}
            for m in index.models
        ]


class HttpClient:
    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 8000
        self._timeout = timeout_s

    def _request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[bytes, dict[str, str]]:
        connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            connection.request(method, path, body=body or None, headers=headers or {})
            response = connection.getresponse()
            data = response.read()
            if response.status != 200:
                try:
                    message = json.loads(data)["error"]
                except (ValueError, KeyError, TypeError):
                    message = data.decode(errors="replace")
                raise ClientError(f"HTTP {response.status}: {message}")
            return data, {k.lower(): v for k, v in response.getheaders()}
        finally:
            connection.close()

    def _model_path(self, model: str, version: str) -> str:
        path = f"/v2/models/{quote(model, safe='')}"
        return f"{path}/versions/{version}" if version else path

    def metadata(self, model: str, version: str = "") -> ModelMetadata:
        """The model's metadata; nothing listening and no such model get their own errors."""
        url = f"{self._host}:{self._port}"
        connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            try:
                connection.connect()
            except OSError as exc:
                raise ModelUnavailable(
                    f"no HTTP server answers at {url}: {exc.strerror or exc}"
                ) from None
            connection.request("GET", self._model_path(model, version))
            response = connection.getresponse()
            body = response.read()
        except OSError as exc:
            raise ModelUnavailable(f"HTTP server at {url} failed: {exc}") from None
        except http.client.HTTPException:
            raise ModelUnavailable(
                f"the server at {url} does not answer HTTP/1.1 (is that the HTTP port?)"
            ) from None
        finally:
            connection.close()
        if response.status == 404:
            raise ModelNotFound(
                f"model {model!r} is not on the server at {url}: {error_text(body)}"
            )
        if response.status != 200:
            raise ClientError(
                f"model {model!r}: metadata request failed: HTTP {response.status}: "
                f"{error_text(body)}"
            )
        try:
            doc = json.loads(body)
            inputs = tuple(
                TensorInfo(str(t["name"]), str(t["datatype"]), tuple(int(d) for d in t["shape"]))
                for t in doc["inputs"]
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ClientError(
                f"model {model!r}: metadata from {url} is not V2 JSON: {exc!r}"
            ) from None
        return ModelMetadata(
            name=str(doc.get("name", model)),
            versions=tuple(str(v) for v in doc.get("versions", ())),
            platform=str(doc.get("platform", "")),
            inputs=inputs,
        )

    def inputs(self, model: str, version: str = "") -> list[TensorInfo]:
        return list(self.metadata(model, version).inputs)

    def infer(
        self, model: str, inputs: dict[str, np.ndarray], version: str = ""
    ) -> dict[str, np.ndarray]:
        blobs = []
        doc_inputs = []
        for name, array in inputs.items():
            datatype = _datatype_of(array)
            raw = array_to_raw(array, datatype)
            blobs.append(raw)
            doc_inputs.append(
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": list(array.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            )
        header = json.dumps(
            {"inputs": doc_inputs, "parameters": {"binary_data_output": True}}
        ).encode()
        data, headers = self._request(
            "POST",
            self._model_path(model, version) + "/infer",
            b"".join([header, *blobs]),
            {
                "Inference-Header-Content-Length": str(len(header)),
                "Content-Type": "application/octet-stream",
            },
        )
        json_length = int(headers.get("inference-header-content-length", len(data)))
        doc = json.loads(data[:json_length])
        offset = json_length
        out = {}
        for output in doc["outputs"]:
            size = output.get("parameters", {}).get("binary_data_size")
            shape = tuple(output["shape"])
            if size is None:
                out[output["name"]] = np.array(output["data"]).reshape(shape)
                continue
            out[output["name"]] = array_from_raw(
                output["name"], output["datatype"], shape, data[offset : offset + size], text=False
            )
            offset += size
        return out

    def repository_index(self) -> list[dict[str, str]]:
        data, _ = self._request("POST", "/v2/repository/index", b"{}")
        return json.loads(data)  # type: ignore[no-any-return]


def load_input(spec: str, expected: TensorInfo | None) -> tuple[str, np.ndarray]:
    """'name=file.npy' or 'name=file.json' -> (name, array in the model's datatype).

    A batching model's leading -1 is added when the file holds one row."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ClientError(f"--input must look like NAME=FILE.npy|FILE.json, got {spec!r}")
    if path.endswith(".npy"):
        array = np.load(path, allow_pickle=False)
    elif path.endswith(".json"):
        with open(path, encoding="utf-8") as handle:
            array = np.array(json.load(handle))
    else:
        raise ClientError(f"input file {path!r} must end in .npy or .json")
    if expected is not None:
        dt = datatypes.BY_NAME.get(expected.datatype)
        if dt is not None and dt.numpy is not None and dt.name != "BYTES":
            array = array.astype(dt.numpy)
        elif dt is not None and dt.name == "BYTES":
            array = array.astype(object)
        if len(expected.shape) == array.ndim + 1 and expected.shape[0] == -1:
            array = array[np.newaxis, ...]
    return name, array
