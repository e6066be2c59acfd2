"""Transport-neutral inference request and response.

The gRPC and HTTP adapters decode their wire formats into these and encode
these back; the data plane sees nothing else. Tensors are numpy arrays (BYTES
as 1-D-reshaped object arrays of bytes or str)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ParameterValue = bool | int | float | str
Parameters = dict[str, ParameterValue]


@dataclass(slots=True)
class InferInput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class RequestedOutput:
    name: str
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    model_name: str
    model_version: str
    inputs: list[InferInput]
    outputs: list[RequestedOutput] = field(default_factory=list)
    id: str = ""
    parameters: Parameters = field(default_factory=dict)
    arrival_ns: int = 0  # perf_counter_ns() when the transport received it
    timeout_s: float = 0.0  # the transport's own deadline (gRPC), 0 = none


@dataclass(slots=True)
class InferOutput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[InferOutput]
    # Per requested output: its request parameters (e.g. binary_data), by name.
    output_parameters: dict[str, Parameters] = field(default_factory=dict)
    parameters: Parameters = field(default_factory=dict)
