"""V2 REST inference bodies <-> the transport-neutral types: JSON tensors and
Triton's binary tensor data extension (`Inference-Header-Content-Length`,
`binary_data_size`, `binary_data_output`)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import orjson

from mlserve.errors import InvalidRequest, Unsupported
from mlserve.ext.infer_codec import raw_array
from mlserve.runtime.datatypes import Datatype
from mlserve.runtime.inference_types import (
    InferInput,
    InferRequest,
    InferResponse,
    Parameters,
    RequestedOutput,
)
from mlserve.runtime.tensor_codec import (
    FIXED_DTYPES,
    array_from_raw,
    array_to_raw,
    check_integer_range,
    check_shape,
    integer_range_error,
    lookup_datatype,
)

_K = TypeVar("_K")
_V = TypeVar("_V")

_SHARED_MEMORY_KEYS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


def _parameters(value: object, where: str) -> Parameters:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where}.parameters must be a JSON object")
    assert isinstance(value, dict)
    for key, item in value.items():
        if not isinstance(item, (bool, int, float, str)):
            raise InvalidRequest(f"{where}.parameters.{key} must be a string, number or boolean")
    return value


def _shape(value: object, name: str) -> tuple[int, ...]:
    if not (
        isinstance(value, list)
        and all(isinstance(d, int) and not isinstance(d, bool) for d in value)
    ):
        raise InvalidRequest(
            f"input '{name}': shape must be a list of integers, got {json.dumps(value)[:80]}"
        )
    assert isinstance(value, list)
    return tuple(value)


def array_from_json(name: str, datatype: str, shape: tuple[int, ...], data: object) -> np.ndarray:
    """JSON `data` (flat or nested, row-major) -> an array of `shape`."""
    dt = lookup_datatype(name, datatype)
    count = check_shape(name, shape)
    if not isinstance(data, list):
        raise InvalidRequest(f"input '{name}': data must be a JSON array")
    if dt.name == "BYTES":
        flat = np.array(data, dtype=object).reshape(-1)
        for index, item in enumerate(flat):
            if not isinstance(item, str):
                raise InvalidRequest(f"input '{name}': BYTES element {index} must be a JSON string")
    else:
        if dt.numpy is None:
            raise InvalidRequest(f"input '{name}': {dt.name} cannot be sent as JSON to onnxruntime")
        # The JSON values as they are first (numpy picks int64, uint64,
        # float64, bool or str), so a value of the wrong kind or out of range
        # is refused rather than truncated, wrapped or parsed.
        try:
            parsed = np.array(data).reshape(-1)
        except (ValueError, TypeError) as exc:
            raise InvalidRequest(
                f"input '{name}': data is not a regular array of {dt.name} values ({exc})"
            ) from None
        kind = parsed.dtype.kind if parsed.size else ""
        if dt.name == "BOOL":
            if kind not in ("", "b"):
                raise InvalidRequest(f"input '{name}': BOOL data must hold true/false values")
            flat = parsed.astype(dt.numpy)
        elif dt.numpy.kind in "iu":
            flat = _json_integers(name, dt, data, parsed)
        elif kind in ("", "i", "u", "f"):
            if dt.numpy.kind == "f" and dt.numpy.itemsize < 8 and parsed.size:
                _check_float_range(name, dt, parsed)
            flat = parsed.astype(dt.numpy)
        else:
            raise InvalidRequest(f"input '{name}': {dt.name} data must hold numbers")
    if flat.size != count:
        raise InvalidRequest(
            f"input '{name}': data holds {flat.size} elements but shape {list(shape)} needs {count}"
        )
    return flat.reshape(shape)


def _check_float_range(name: str, dt: Datatype, parsed: np.ndarray) -> None:
    """JSON numbers past FP16's or FP32's range are refused: cast, they would
    become infinities (and the answer's JSON would carry `Infinity`, which is
    not JSON). JSON itself has no infinities or NaNs to pass through."""
    assert dt.numpy is not None
    limit = float(np.finfo(dt.numpy).max)
    largest = float(np.max(np.abs(parsed)))
    if largest > limit:
        raise InvalidRequest(
            f"input '{name}': {dt.name} data holds {largest:g}, past {dt.name}'s range "
            f"(largest magnitude {limit:g})"
        )


def _json_integers(name: str, dt: Datatype, data: object, parsed: np.ndarray) -> np.ndarray:
    """JSON integers as `dt`, exactly, or an error naming the range. numpy
    reads integers past int64 (UINT64's upper half) as float64, so those are
    converted again from the Python ints themselves."""
    kind = parsed.dtype.kind if parsed.size else "i"
    if kind in "iu":
        check_integer_range(name, dt, parsed)
        return parsed.astype(dt.numpy)
    if kind == "f" and np.all(np.mod(parsed, 1) == 0):  # whole numbers (or big ints)
        with contextlib.suppress(OverflowError, ValueError, TypeError):
            return np.array(data, dtype=object).reshape(-1).astype(dt.numpy)
    raise integer_range_error(name, dt)


@dataclass(frozen=True, slots=True)
class _InputHeader:
    name: str
    datatype: str
    shape: tuple[int, ...]
    parameters: Parameters
    binary_size: int  # -1 when the data is inline JSON
    data: object  # the inline JSON data, or None


@dataclass(frozen=True, slots=True)
class _RequestHeader:
    """A request's JSON header, parsed and validated; shared by every request
    that sends the same header bytes, so its parts are never mutated."""

    inputs: tuple[_InputHeader, ...]
    outputs: list[RequestedOutput]
    id: str
    parameters: Parameters
    cacheable: bool  # every input is binary: nothing per request is in it


class _BoundedCache(Generic[_K, _V]):
    """A dict that holds at most `max_entries`, evicting the oldest first:
    for the per-call work a client repeats (the same JSON header, the same
    response shape), done once and kept without letting memory grow."""

    def __init__(self, max_entries: int = 512) -> None:
        self.max_entries = max_entries
        self.entries: dict[_K, _V] = {}

    def get(self, key: _K) -> _V | None:
        return self.entries.get(key)

    def put(self, key: _K, value: _V) -> None:
        if len(self.entries) >= self.max_entries:
            del self.entries[next(iter(self.entries))]
        self.entries[key] = value


class _HeaderCache:
    """Parsed headers by their bytes. A client sending binary tensors repeats
    the same JSON header on every call, so steady-state requests skip JSON
    parsing and validation."""

    def __init__(self, max_entries: int = 512, max_header_bytes: int = 4096) -> None:
        self.max_header_bytes = max_header_bytes
        self.parsed: _BoundedCache[bytes, _RequestHeader] = _BoundedCache(max_entries)

    def get(self, header: bytes) -> _RequestHeader:
        found = self.parsed.get(header)
        if found is not None:
            return found
        parsed = _parse_header(header)
        if parsed.cacheable and len(header) <= self.max_header_bytes:
            self.parsed.put(header, parsed)
        return parsed


_HEADERS = _HeaderCache()


def decode_infer_request(
    model_name: str, model_version: str, body: bytes, header_length: int | None, arrival_ns: int
) -> InferRequest:
    if header_length is None:
        parsed = _parse_header(body)
        binary = memoryview(b"")
    else:
        if header_length == 0:
            raise Unsupported(
                "Inference-Header-Content-Length: 0 (a raw binary body without a JSON header) "
                "is not supported; send the JSON header with binary_data_size"
            )
        if not (0 < header_length <= len(body)):
            raise InvalidRequest(
                f"Inference-Header-Content-Length is {header_length} but the body has "
                f"{len(body)} bytes"
            )
        parsed = _HEADERS.get(body[:header_length])
        binary = memoryview(body)[header_length:]
    offset = 0
    inputs = []
    for item in parsed.inputs:
        name = item.name
        size = item.binary_size
        if size >= 0:
            if offset + size > len(binary):
                raise InvalidRequest(
                    f"input '{name}': binary_data_size {size} at offset {offset} runs past the "
                    f"{len(binary)} bytes of binary data in the body"
                )
            fixed = FIXED_DTYPES.get(item.datatype)
            data = None
            if fixed is not None:  # a view of the body, in one call (raw_array)
                start = len(body) - len(binary) + offset
                data = raw_array(body, start, start + size, fixed, item.shape)
            if data is None:  # BYTES, BOOL, or a size that does not fit: worded there
                raw = binary[offset : offset + size]
                data = array_from_raw(name, item.datatype, item.shape, raw)
            offset += size
        else:
            data = array_from_json(name, item.datatype, item.shape, item.data)
        inputs.append(InferInput(name, item.datatype, item.shape, data, item.parameters))
    if offset != len(binary):
        raise InvalidRequest(
            f"the body carries {len(binary) - offset} bytes of binary data that no input's "
            "binary_data_size accounts for"
        )
    return InferRequest(
        model_name=model_name,
        model_version=model_version,
        inputs=inputs,
        outputs=parsed.outputs,
        id=parsed.id,
        parameters=parsed.parameters,
        arrival_ns=arrival_ns,
    )


def _parse_header(header: bytes) -> _RequestHeader:
    try:
        doc = orjson.loads(header)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidRequest("request body must be a JSON object")
    inputs_doc = doc.get("inputs")
    if not (isinstance(inputs_doc, list) and len(inputs_doc) > 0):
        raise InvalidRequest("request must have a non-empty 'inputs' array")
    inputs = []
    for index, item in enumerate(inputs_doc):
        if not isinstance(item, dict):
            raise InvalidRequest(f"inputs[{index}] must be a JSON object")
        name = item.get("name")
        if not (isinstance(name, str) and bool(name)):
            raise InvalidRequest(f"inputs[{index}].name must be a string")
        datatype = item.get("datatype")
        if not isinstance(datatype, str):
            raise InvalidRequest(f"input '{name}': datatype must be a string")
        shape = _shape(item.get("shape"), name)
        params = _parameters(item.get("parameters"), f"input '{name}'")
        if any(key in params for key in _SHARED_MEMORY_KEYS):
            raise Unsupported(f"input '{name}': shared-memory inputs are not supported")
        size = params.get("binary_data_size")
        if size is not None:
            if not (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
                raise InvalidRequest(
                    f"input '{name}': binary_data_size must be a non-negative integer"
                )
            if "data" in item:
                raise InvalidRequest(f"input '{name}': give data or binary_data_size, not both")
            inputs.append(_InputHeader(name, datatype, shape, params, size, None))
        else:
            if "data" not in item:
                raise InvalidRequest(
                    f"input '{name}' has neither 'data' nor parameters.binary_data_size"
                )
            inputs.append(_InputHeader(name, datatype, shape, params, -1, item["data"]))
    outputs = []
    outputs_doc = doc.get("outputs", [])
    if not isinstance(outputs_doc, list):
        raise InvalidRequest("'outputs' must be an array")
    for index, item in enumerate(outputs_doc):
        if not (isinstance(item, dict) and isinstance(item.get("name"), str)):
            raise InvalidRequest(f"outputs[{index}] must be an object with a string 'name'")
        outputs.append(
            RequestedOutput(
                item["name"], _parameters(item.get("parameters"), f"output '{item['name']}'")
            )
        )
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidRequest("'id' must be a string")
    return _RequestHeader(
        inputs=tuple(inputs),
        outputs=outputs,
        id=request_id,
        parameters=_parameters(doc.get("parameters"), "request"),
        cacheable=all(item.binary_size >= 0 for item in inputs),
    )


def _json_data(array: np.ndarray, datatype: str) -> np.ndarray | list[Any] | orjson.Fragment:
    """A tensor as V2 JSON `data`: flat, row-major. Numeric arrays go to
    orjson as they are (it writes them without a Python float per element).
    NaN and infinities, which orjson would write as null, are written as
    NaN, Infinity and -Infinity, as Triton and Python's json write them
    (and tritonclient reads them back)."""
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():
        return orjson.Fragment(json.dumps(flat.tolist()))
    if (flat.dtype.kind in "biuf" and flat.dtype.itemsize > 1) or flat.dtype.kind == "b":
        return np.ascontiguousarray(flat)
    data: list[Any] = flat.tolist()
    return data


_ResponseKey = tuple[str, str, tuple[tuple[str, str, tuple[int, ...], int], ...]]
_RESPONSE_HEADERS: _BoundedCache[_ResponseKey, bytes] = _BoundedCache()


def encode_infer_response(
    response: InferResponse, request_parameters: Parameters
) -> tuple[bytes, int | None]:
    """Returns the body and, when it carries binary tensors, the JSON header length."""
    binary_default = bool(request_parameters.get("binary_data_output", False))
    blobs = []
    for output in response.outputs:
        if not response.output_parameters.get(output.name, {}).get("binary_data", binary_default):
            return _encode_with_json(response, binary_default)
        blobs.append(array_to_raw(output.data, output.datatype))
    if response.id or not blobs or response.parameters:
        return _encode_with_json(response, binary_default)
    # Every output binary and no id: the header depends only on names, types
    # and shapes, which repeat from call to call; build it once.
    key = (
        response.model_name,
        response.model_version,
        tuple(
            (o.name, o.datatype, o.shape, len(raw))
            for o, raw in zip(response.outputs, blobs, strict=True)
        ),
    )
    header = _RESPONSE_HEADERS.get(key)
    if header is None:
        body, length = _encode_with_json(response, binary_default)
        header = body[:length]
        _RESPONSE_HEADERS.put(key, header)
    return b"".join((header, *blobs)), len(header)


def _encode_with_json(response: InferResponse, binary_default: bool) -> tuple[bytes, int | None]:
    outputs = []
    blobs = []
    for output in response.outputs:
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": list(output.shape),
        }
        binary = response.output_parameters.get(output.name, {}).get("binary_data", binary_default)
        if binary:
            raw = array_to_raw(output.data, output.datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = _json_data(output.data, output.datatype)
        outputs.append(entry)
    doc: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if response.id:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join((header, *blobs)), len(header)
