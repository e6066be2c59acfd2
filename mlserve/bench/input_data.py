"""The tensors a benchmark sends: random data of the model's datatypes and the
requested shapes, or arrays from a .npy/.npz file. Everything is checked
against the server's metadata here, so a wrong shape is a one-line error
before the load starts rather than thousands of refused requests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlserve.bench.settings import BenchSettings
from mlserve.client import ModelMetadata, TensorInfo
from mlserve.errors import InvalidRequest
from mlserve.runtime import datatypes


@dataclass(frozen=True, slots=True)
class InputTensor:
    name: str
    datatype: str
    array: np.ndarray  # BF16 travels as its uint16 bit patterns


def build_inputs(settings: BenchSettings, metadata: ModelMetadata) -> list[InputTensor]:
    """One tensor per model input, in the metadata's order."""
    if not metadata.inputs:
        raise InvalidRequest(f"model {settings.model!r} declares no inputs; nothing to send")
    known = {spec.name for spec in metadata.inputs}
    for mapping, flag in ((settings.shapes, "--shape"), (settings.datatypes, "--datatype")):
        unknown = sorted(name for name in mapping if name and name not in known)
        if unknown:
            raise InvalidRequest(
                f"{flag} names {', '.join(unknown)}, not an input of {settings.model!r} "
                f"(inputs: {', '.join(sorted(known))})"
            )
    specs = [_with_datatype(spec, settings.datatypes) for spec in metadata.inputs]
    if settings.input_data is not None:
        arrays = _read_file(settings.input_data, specs, settings.batch_size)
        return [InputTensor(s.name, s.datatype, arrays[s.name]) for s in specs]
    rng = np.random.default_rng(settings.seed)
    return [
        InputTensor(s.name, s.datatype, _random(rng, s.datatype, _shape(s, settings)))
        for s in specs
    ]


def rows_per_request(metadata: ModelMetadata, inputs: list[InputTensor]) -> int:
    """Inferences one request carries: the batch dimension where the model has
    one (a leading -1), else 1; this turns req/s into infer/s."""
    spec = metadata.inputs[0]
    if spec.shape and spec.shape[0] == -1 and inputs[0].array.ndim:
        return int(inputs[0].array.shape[0])
    return 1


def _with_datatype(spec: TensorInfo, overrides: dict[str, str]) -> TensorInfo:
    datatype = overrides.get(spec.name, overrides.get("", spec.datatype))
    if datatype not in datatypes.BY_NAME:
        raise InvalidRequest(
            f"input {spec.name!r} has datatype {datatype!r}, which mlserve bench cannot "
            "generate; give --datatype NAME:TYPE"
        )
    return TensorInfo(spec.name, datatype, spec.shape)


def _shape(spec: TensorInfo, settings: BenchSettings) -> tuple[int, ...]:
    given = settings.shapes.get(spec.name, settings.shapes.get(""))
    if given is not None:
        check_shape(spec, given)
        return given
    shape = list(spec.shape)
    if shape and shape[0] == -1:
        shape[0] = settings.batch_size
    if any(d < 0 for d in shape):
        raise InvalidRequest(
            f"input {spec.name!r} has shape {list(spec.shape)}: give its size with "
            f"--shape {spec.name}:" + ",".join("D" if d < 0 else str(d) for d in shape)
        )
    return tuple(shape)


def check_shape(spec: TensorInfo, shape: tuple[int, ...]) -> None:
    """The request shape must have the model's rank and its fixed dimensions."""
    if not spec.shape:  # a server that does not say: trust the user
        return
    fits = len(shape) == len(spec.shape) and all(
        want < 0 or want == got for want, got in zip(spec.shape, shape, strict=True)
    )
    if not fits:
        raise InvalidRequest(
            f"input {spec.name!r}: shape {list(shape)} does not fit the model's "
            f"{list(spec.shape)} (-1 = any; the batch dimension is part of the shape)"
        )


def _random(rng: np.random.Generator, datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    if datatype == "BYTES":
        digits = rng.integers(0, 10**8, size=shape).reshape(-1)
        return np.array([b"%08d" % d for d in digits.tolist()], dtype=object).reshape(shape)
    if datatype == "BOOL":
        return rng.random(shape) > 0.5
    if datatype == "BF16":  # the upper half of FP32 bit patterns
        return (rng.standard_normal(shape).astype(np.float32).view(np.uint32) >> 16).astype(
            np.uint16
        )
    dtype = datatypes.BY_NAME[datatype].numpy
    assert dtype is not None
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    # Small non-negative integers: valid as indices or ids for most models.
    return rng.integers(0, 16, size=shape).astype(dtype)


def _read_file(path: Path, specs: list[TensorInfo], batch_size: int) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"--input-data {str(path)!r}: cannot read it: {exc}") from None
    if isinstance(loaded, np.ndarray):  # a .npy
        arrays = {"": loaded}
    else:
        with loaded:
            arrays = {name: loaded[name] for name in loaded.files}
    names = [s.name for s in specs]
    if "" in arrays:
        if len(specs) != 1:
            raise InvalidRequest(
                f"--input-data {str(path)!r} holds one array but the model has inputs "
                f"{', '.join(names)}: use a .npz with one array per input name"
            )
        arrays = {names[0]: arrays[""]}
    missing = [n for n in names if n not in arrays]
    extra = sorted(set(arrays) - set(names))
    if missing or extra:
        raise InvalidRequest(
            f"--input-data {str(path)!r} must hold exactly the inputs {', '.join(names)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; not inputs: {', '.join(extra)}" if extra else "")
        )
    out = {}
    for spec in specs:
        array = _as_datatype(spec, arrays[spec.name])
        if spec.shape and spec.shape[0] == -1 and array.ndim == len(spec.shape) - 1:
            array = np.repeat(array[np.newaxis, ...], batch_size, axis=0)  # one row given
        check_shape(spec, tuple(array.shape))
        out[spec.name] = array
    return out


def _as_datatype(spec: TensorInfo, array: np.ndarray) -> np.ndarray:
    if spec.datatype == "BYTES":
        return array.astype(object)
    if spec.datatype == "BF16":
        as_fp32 = np.ascontiguousarray(array, dtype=np.float32)
        return (as_fp32.view(np.uint32) >> 16).astype(np.uint16)
    dtype = datatypes.BY_NAME[spec.datatype].numpy
    assert dtype is not None
    return array.astype(dtype)
