"""Selector for the BYTES tensor codec (see ext/_select.py); `IMPLEMENTATION`
says which one was loaded. Typed as the twin, which the compiled one matches."""

from __future__ import annotations

from mlserve.ext import _bytes_codec_py as _twin
from mlserve.ext._bytes_codec_py import BytesTensorError
from mlserve.ext._select import select

_module, IMPLEMENTATION = select("bytes_codec")
decode_bytes_tensor = _twin.decode_bytes_tensor
encode_bytes_tensor = _twin.encode_bytes_tensor
if _module is not _twin:
    decode_bytes_tensor = _module.decode_bytes_tensor
    encode_bytes_tensor = _module.encode_bytes_tensor

__all__ = ["IMPLEMENTATION", "BytesTensorError", "decode_bytes_tensor", "encode_bytes_tensor"]
