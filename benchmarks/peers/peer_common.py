"""What both peers share: where a model's file is, and onnxruntime's element
types as numpy types. Imported as a top-level module: the KServe peer runs as
a script from this folder, and the MLServer peer puts this folder on
PYTHONPATH for `mlserver start`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# onnxruntime element types -> numpy, for the types the benchmark models use.
ORT_TYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def model_file(repository: Path, name: str) -> Path:
    """The highest numbered version's model.onnx (Triton layout)."""
    versions = [p for p in (repository / name).iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        raise SystemExit(f"no version folder under {repository / name}")
    path = max(versions, key=lambda p: int(p.name)) / "model.onnx"
    if not path.is_file():
        raise SystemExit(f"missing {path}")
    return path.resolve()
