"""Selector for the ModelInferRequest fast decoder: compiled unless
`MLSERVE_NO_EXTENSIONS=1` or not built; `IMPLEMENTATION` says which."""

from __future__ import annotations

import os

from mlserve.ext._infer_codec_py import SimpleInput, SimpleRequest

IMPLEMENTATION: str
if os.environ.get("MLSERVE_NO_EXTENSIONS") == "1":
    from mlserve.ext._infer_codec_py import decode_simple_infer

    IMPLEMENTATION = "py"
else:
    try:
        from mlserve.ext._infer_codec import decode_simple_infer

        IMPLEMENTATION = "cy"
    except ImportError:  # not built
        from mlserve.ext._infer_codec_py import decode_simple_infer

        IMPLEMENTATION = "py"

__all__ = ["IMPLEMENTATION", "SimpleInput", "SimpleRequest", "decode_simple_infer"]
