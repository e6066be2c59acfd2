"""Transport-neutral inference request and response.

The gRPC and HTTP adapters decode their wire formats into these and encode
these back; the data plane sees nothing else. Tensors are numpy arrays (BYTES
as 1-D-reshaped object arrays of bytes or str).

Every request builds one of each (an input and an output per tensor), so they
are cdef classes when compiled (a C __init__; see mlserve/cython_shim) and
slotted dataclasses from source. That is why the dict and list fields have
no defaults: Cython builds a `default_factory` in Python again."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mlserve import cython_shim as cython
else:
    try:
        import cython
    except ImportError:  # from source, without Cython installed
        from mlserve import cython_shim as cython

ParameterValue = bool | int | float | str
Parameters = dict[str, ParameterValue]


@cython.dataclasses.dataclass
@cython.cclass
class InferInput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: Parameters


@cython.dataclasses.dataclass
@cython.cclass
class RequestedOutput:
    name: str
    parameters: Parameters


@cython.dataclasses.dataclass
@cython.cclass
class InferRequest:
    model_name: str
    model_version: str
    inputs: list[InferInput]
    outputs: list[RequestedOutput]
    id: str
    parameters: Parameters
    arrival_ns: int = 0  # perf_counter_ns() when the transport received it
    timeout_s: float = 0.0  # the transport's own deadline (gRPC), 0 = none
    # The transport's header lookup (HTTP headers, gRPC metadata): name ->
    # value or None. Read only for a model being rolled out (route hints).
    headers: object = None
    # Set by the data plane when a rollout routed it: "stable" or "canary".
    route: str = ""


@cython.dataclasses.dataclass
@cython.cclass
class InferOutput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@cython.dataclasses.dataclass
@cython.cclass
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[InferOutput]
    # Per requested output: its request parameters (e.g. binary_data), by name.
    output_parameters: dict[str, Parameters]
    parameters: Parameters
