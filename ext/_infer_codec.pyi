from collections.abc import Mapping

import numpy as np

SimpleInput = tuple[str, str, tuple[int, ...], memoryview | np.ndarray]
SimpleRequest = tuple[str, str, str, list[SimpleInput], list[str]]
WireOutput = tuple[str, str, tuple[int, ...], object]

def decode_simple_infer(
    data: bytes, dtypes: Mapping[str, np.dtype] | None = None
) -> SimpleRequest | None: ...
def encode_infer_response(
    model_name: str, model_version: str, request_id: str, outputs: list[WireOutput]
) -> bytes: ...
def raw_array(
    data: bytes, start: int, stop: int, dtype: np.dtype, shape: tuple[int, ...]
) -> np.ndarray | None: ...
def wrap_stream_response(infer_response: bytes) -> bytes: ...
