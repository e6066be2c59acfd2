"""Selector for the ModelInferRequest fast decoder (see ext/_select.py);
`IMPLEMENTATION` says which one was loaded. Typed as the twin, which the
compiled one matches."""

from __future__ import annotations

from mlserve.ext import _infer_codec_py as _twin
from mlserve.ext._infer_codec_py import SimpleInput, SimpleRequest
from mlserve.ext._select import select

_module, IMPLEMENTATION = select("infer_codec")
decode_simple_infer = _twin.decode_simple_infer
if _module is not _twin:
    decode_simple_infer = _module.decode_simple_infer

__all__ = ["IMPLEMENTATION", "SimpleInput", "SimpleRequest", "decode_simple_infer"]
