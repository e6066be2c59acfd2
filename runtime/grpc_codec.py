"""ModelInferRequest/Response protobufs <-> the transport-neutral types.

Outputs always travel in `raw_output_contents` (tritonclient reads nothing
else). Inputs come raw (one entry per input, in order) or typed in `contents`."""

from __future__ import annotations

import numpy as np

from mlserve.errors import InvalidRequest, Unsupported
from mlserve.ext import infer_codec
from mlserve.ext.infer_codec import SimpleRequest, WireOutput, wrap_stream_response
from mlserve.proto import grpc_service_pb2 as pb
from mlserve.runtime.inference_types import (
    InferInput,
    InferRequest,
    InferResponse,
    Parameters,
    RequestedOutput,
)
from mlserve.runtime.tensor_codec import (
    array_from_raw,
    array_to_raw,
    check_integer_range,
    check_shape,
    lookup_datatype,
)

_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_SHARED_MEMORY_KEYS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


def decode_parameters(params: object) -> Parameters:
    """map<string, InferParameter> -> plain dict."""
    out: Parameters = {}
    for key, value in params.items():  # type: ignore[attr-defined]
        which = value.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(value, which)
    return out


def encode_parameters(target: object, params: Parameters) -> None:
    for key, value in params.items():
        slot = target[key]  # type: ignore[index]
        if isinstance(value, bool):
            slot.bool_param = value
        elif isinstance(value, int):
            slot.int64_param = value
        elif isinstance(value, float):
            slot.double_param = value
        else:
            slot.string_param = str(value)


def _from_contents(
    tensor: pb.ModelInferRequest.InferInputTensor, shape: tuple[int, ...]
) -> np.ndarray:
    datatype = lookup_datatype(tensor.name, tensor.datatype)
    field = _CONTENTS_FIELD.get(datatype.name)
    if field is None:
        raise InvalidRequest(
            f"input '{tensor.name}': {datatype.name} has no typed contents field; "
            "send it in raw_input_contents"
        )
    values = getattr(tensor.contents, field)
    count = check_shape(tensor.name, shape)
    if len(values) != count:
        raise InvalidRequest(
            f"input '{tensor.name}': contents.{field} holds {len(values)} elements but shape "
            f"{list(shape)} needs {count}"
        )
    if datatype.name == "BYTES":
        array = np.empty(count, dtype=object)
        for index, item in enumerate(values):
            try:
                array[index] = item.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest(
                    f"input '{tensor.name}': element {index} is not valid UTF-8; string "
                    "tensors of an ONNX model hold text"
                ) from None
        return array.reshape(shape)
    assert datatype.numpy is not None
    if datatype.numpy.kind in "iu" and datatype.numpy.itemsize < 4:
        # INT8/16 travel in int_contents (int32), UINT8/16 in uint_contents:
        # a value past the datatype's range is refused, not wrapped around.
        check_integer_range(tensor.name, datatype, np.asarray(values, dtype=np.int64))
    return np.asarray(values, dtype=datatype.numpy).reshape(shape)


def decode_infer_request(message: pb.ModelInferRequest, arrival_ns: int) -> InferRequest:
    raw = message.raw_input_contents
    tensors = message.inputs
    if raw and len(raw) != len(tensors):
        raise InvalidRequest(
            f"raw_input_contents has {len(raw)} entries but the request has {len(tensors)} "
            "inputs; give one raw entry per input, in order"
        )
    inputs = []
    for index, tensor in enumerate(tensors):
        shape = tuple(tensor.shape)
        params = decode_parameters(tensor.parameters) if tensor.parameters else {}
        if any(key in params for key in _SHARED_MEMORY_KEYS):
            raise Unsupported(
                f"input '{tensor.name}': shared-memory inputs are not supported by this server"
            )
        if raw:
            if tensor.HasField("contents"):
                raise InvalidRequest(
                    f"input '{tensor.name}': contents must not be given when "
                    "raw_input_contents is used"
                )
            data = array_from_raw(tensor.name, tensor.datatype, shape, raw[index])
        else:
            data = _from_contents(tensor, shape)
        inputs.append(InferInput(tensor.name, tensor.datatype, shape, data, params))
    outputs = [
        RequestedOutput(o.name, decode_parameters(o.parameters) if o.parameters else {})
        for o in message.outputs
    ]
    return InferRequest(
        model_name=message.model_name,
        model_version=message.model_version,
        inputs=inputs,
        outputs=outputs,
        id=message.id,
        parameters=decode_parameters(message.parameters) if message.parameters else {},
        arrival_ns=arrival_ns,
    )


def simple_infer_request(simple: SimpleRequest, arrival_ns: int) -> InferRequest:
    """An InferRequest from the fast decoder's tuple (no parameters, raw tensors)."""
    model_name, model_version, request_id, tensors, output_names = simple
    inputs = []
    for name, datatype, shape, raw in tensors:
        if isinstance(raw, np.ndarray):  # the decoder made it (decode_simple_infer's dtypes)
            data = raw
        else:
            data = array_from_raw(name, datatype, shape, bytes(raw) if datatype == "BYTES" else raw)
        inputs.append(InferInput(name, datatype, shape, data, {}))
    return InferRequest(  # positional: keywords cost more than the rest of this function
        model_name,
        model_version,
        inputs,
        [RequestedOutput(name, {}) for name in output_names] if output_names else [],
        request_id,
        {},
        arrival_ns,
    )


# The encoder's Python twin is slower than protobuf (upb): only the compiled one is used.
_FAST_ENCODE = infer_codec.IMPLEMENTATION == "cy"


def infer_response_bytes(response: InferResponse) -> bytes:
    """The serialized ModelInferResponse, outputs always raw."""
    if not _FAST_ENCODE:
        return encode_infer_response(response).SerializeToString()
    outputs: list[WireOutput] = []
    for output in response.outputs:
        data = output.data
        if output.datatype == "BYTES":
            raw: object = array_to_raw(data, "BYTES")
        else:
            raw = data if data.flags.c_contiguous else np.ascontiguousarray(data)
        outputs.append((output.name, output.datatype, output.shape, raw))
    encoded = infer_codec.encode_infer_response(
        response.model_name, response.model_version, response.id, outputs
    )
    if response.parameters:  # a routed answer's mlserve_route: appended, as protobuf allows
        return encoded + _parameters_bytes(response.parameters)
    return encoded


_PARAMETER_BYTES: dict[tuple[tuple[str, object], ...], bytes] = {}


def _parameters_bytes(params: Parameters) -> bytes:
    """ModelInferResponse's `parameters` field alone, serialized: fields of a
    protobuf message may follow in any order, so appended to the fast
    encoder's bytes they make the same message. Few distinct values (a
    rollout's two tracks): cached."""
    key = tuple(params.items()) if len(params) == 1 else tuple(sorted(params.items()))
    found = _PARAMETER_BYTES.get(key)
    if found is None:
        message = pb.ModelInferResponse()
        encode_parameters(message.parameters, params)
        found = message.SerializeToString()
        if len(_PARAMETER_BYTES) < 64:
            _PARAMETER_BYTES[key] = found
    return found


def stream_response_bytes(response: InferResponse) -> bytes:
    """The serialized ModelStreamInferResponse carrying this answer."""
    if not _FAST_ENCODE:
        reply = pb.ModelStreamInferResponse()
        encode_infer_response(response, reply.infer_response)
        return reply.SerializeToString()
    return wrap_stream_response(infer_response_bytes(response))


def encode_infer_response(
    response: InferResponse, message: pb.ModelInferResponse | None = None
) -> pb.ModelInferResponse:
    """The response message; fills `message` in place when given (a stream
    answer's `infer_response`, so nothing is copied)."""
    if message is None:
        message = pb.ModelInferResponse()
    message.model_name = response.model_name
    message.model_version = response.model_version
    message.id = response.id
    if response.parameters:
        encode_parameters(message.parameters, response.parameters)
    outputs = message.outputs
    raw = message.raw_output_contents
    for output in response.outputs:
        outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        raw.append(array_to_raw(output.data, output.datatype))
    return message
