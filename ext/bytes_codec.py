"""Selector for the BYTES tensor codec: the compiled module unless
`MLSERVE_NO_EXTENSIONS=1` or it was not built; `IMPLEMENTATION` says which."""

from __future__ import annotations

import os

from mlserve.ext._bytes_codec_py import BytesTensorError

IMPLEMENTATION: str
if os.environ.get("MLSERVE_NO_EXTENSIONS") == "1":
    from mlserve.ext._bytes_codec_py import decode_bytes_tensor, encode_bytes_tensor

    IMPLEMENTATION = "py"
else:
    try:
        from mlserve.ext._bytes_codec import decode_bytes_tensor, encode_bytes_tensor

        IMPLEMENTATION = "cy"
    except ImportError:  # not built (e.g. a source checkout without a compiler)
        from mlserve.ext._bytes_codec_py import decode_bytes_tensor, encode_bytes_tensor

        IMPLEMENTATION = "py"

__all__ = ["IMPLEMENTATION", "BytesTensorError", "decode_bytes_tensor", "encode_bytes_tensor"]
