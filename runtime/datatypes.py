"""The Open Inference Protocol's tensor datatypes and their numpy, onnxruntime
and Triton-config equivalents, in one table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Datatype:
    """One V2 datatype: its wire name, element size and equivalents."""

    name: str
    itemsize: int  # 0 = variable (BYTES)
    numpy: np.dtype | None  # None = no numpy equivalent onnxruntime accepts (BF16)
    onnx_type: str  # onnxruntime's NodeArg.type string
    config_enum: str  # Triton ModelConfig DataType name


_ALL = (
    Datatype("BOOL", 1, np.dtype(np.bool_), "tensor(bool)", "TYPE_BOOL"),
    Datatype("UINT8", 1, np.dtype(np.uint8), "tensor(uint8)", "TYPE_UINT8"),
    Datatype("UINT16", 2, np.dtype("<u2"), "tensor(uint16)", "TYPE_UINT16"),
    Datatype("UINT32", 4, np.dtype("<u4"), "tensor(uint32)", "TYPE_UINT32"),
    Datatype("UINT64", 8, np.dtype("<u8"), "tensor(uint64)", "TYPE_UINT64"),
    Datatype("INT8", 1, np.dtype(np.int8), "tensor(int8)", "TYPE_INT8"),
    Datatype("INT16", 2, np.dtype("<i2"), "tensor(int16)", "TYPE_INT16"),
    Datatype("INT32", 4, np.dtype("<i4"), "tensor(int32)", "TYPE_INT32"),
    Datatype("INT64", 8, np.dtype("<i8"), "tensor(int64)", "TYPE_INT64"),
    Datatype("FP16", 2, np.dtype("<f2"), "tensor(float16)", "TYPE_FP16"),
    Datatype("FP32", 4, np.dtype("<f4"), "tensor(float)", "TYPE_FP32"),
    Datatype("FP64", 8, np.dtype("<f8"), "tensor(double)", "TYPE_FP64"),
    Datatype("BYTES", 0, np.dtype(object), "tensor(string)", "TYPE_STRING"),
    Datatype("BF16", 2, None, "tensor(bfloat16)", "TYPE_BF16"),
)

BY_NAME: dict[str, Datatype] = {d.name: d for d in _ALL}
BY_ONNX_TYPE: dict[str, Datatype] = {d.onnx_type: d for d in _ALL}
BY_CONFIG_ENUM: dict[str, Datatype] = {d.config_enum: d for d in _ALL}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def from_numpy(dtype: np.dtype) -> Datatype:
    """The V2 datatype of a numpy array produced by onnxruntime."""
    if dtype.kind in ("O", "U", "S"):
        return BY_NAME["BYTES"]
    for datatype in _ALL:
        if datatype.numpy is not None and datatype.numpy == dtype:
            return datatype
    raise KeyError(f"no V2 datatype for numpy dtype {dtype}")
