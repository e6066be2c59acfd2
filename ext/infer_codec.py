"""Selector for the ModelInferRequest fast decoder and the ModelInferResponse
encoder (see ext/_select.py); `IMPLEMENTATION` says which one was loaded.
Typed as the twin, which the compiled one matches."""

from __future__ import annotations

from mlserve.ext import _infer_codec_py as _twin
from mlserve.ext._infer_codec_py import SimpleInput, SimpleRequest, WireOutput
from mlserve.ext._select import select

_module, IMPLEMENTATION = select("infer_codec")
decode_simple_infer = _twin.decode_simple_infer
encode_infer_response = _twin.encode_infer_response
raw_array = _twin.raw_array
wrap_stream_response = _twin.wrap_stream_response
if _module is not _twin:
    decode_simple_infer = _module.decode_simple_infer
    encode_infer_response = _module.encode_infer_response
    raw_array = _module.raw_array
    wrap_stream_response = _module.wrap_stream_response

__all__ = [
    "IMPLEMENTATION",
    "SimpleInput",
    "SimpleRequest",
    "WireOutput",
    "decode_simple_infer",
    "encode_infer_response",
    "raw_array",
    "wrap_stream_response",
]
