"""The onnxruntime session wrapper: the one module that talks to onnxruntime.

It maps our `SessionSettings` and device onto SessionOptions and execution
providers, reports the graph's inputs and outputs in V2 terms, and turns
onnxruntime's exceptions into ours at this single boundary."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnxruntime as ort

from mlserve.errors import ConfigError, InferenceFailed
from mlserve.runtime import datatypes
from mlserve.runtime.model_config import GraphTensor, SessionSettings

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_EXEC_MODES = {
    "sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
    "parallel": ort.ExecutionMode.ORT_PARALLEL,
}


_CUDNN_SEARCH = {"exhaustive": "EXHAUSTIVE", "heuristic": "HEURISTIC", "default": "DEFAULT"}


def providers_for(
    device: str, settings: SessionSettings | None = None
) -> list[str | tuple[str, dict[str, str]]]:
    """Execution providers for `cpu` or `cuda:N`; refuses CUDA if this build lacks it."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    device_id = device.split(":", 1)[1]
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise ConfigError(
            "device",
            f"is {device} but this onnxruntime has no CUDAExecutionProvider "
            f"(available: {', '.join(available)}); install onnxruntime-gpu",
        )
    search = _CUDNN_SEARCH[(settings or SessionSettings()).cudnn_conv_algo_search]
    cuda = {"device_id": device_id, "cudnn_conv_algo_search": search}
    return [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]


def cuda_available() -> bool:
    """Is there a GPU to run on: a CUDA device node, and onnxruntime built
    with its CUDA provider?"""
    return os.path.exists("/dev/nvidia0") and (
        "CUDAExecutionProvider" in ort.get_available_providers()
    )


def _graph_tensor(arg: ort.NodeArg) -> GraphTensor:
    datatype = datatypes.BY_ONNX_TYPE.get(arg.type)
    if datatype is None:
        raise ConfigError("", f"tensor {arg.name!r} has type {arg.type}, which V2 cannot carry")
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (arg.shape or ()))
    return GraphTensor(arg.name, datatype.name, shape)


def session_options(settings: SessionSettings) -> ort.SessionOptions:
    """onnxruntime's SessionOptions for our settings."""
    options = ort.SessionOptions()
    # 0 would let onnxruntime size its pool by the machine's cores and pin
    # threads to them, escaping the process's CPU affinity (taskset, cgroups);
    # the cores this process may use is the right default.
    options.intra_op_num_threads = settings.intra_op_threads or len(os.sched_getaffinity(0))
    options.inter_op_num_threads = settings.inter_op_threads
    options.graph_optimization_level = _OPT_LEVELS[settings.graph_optimization_level]
    options.execution_mode = _EXEC_MODES[settings.execution_mode]
    options.log_severity_level = 3
    if not settings.allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxSession:
    """One onnxruntime InferenceSession; `run` is thread-safe and releases the GIL."""

    def __init__(self, model: bytes | str, *, settings: SessionSettings, device: str) -> None:
        options = session_options(settings)
        try:
            self._session = ort.InferenceSession(
                model, sess_options=options, providers=providers_for(device, settings)
            )
        except ConfigError:
            raise
        except Exception as exc:  # onnxruntime raises its own hierarchy and RuntimeError
            raise ConfigError("", f"onnxruntime could not load the model: {exc}") from exc
        self.inputs = [_graph_tensor(a) for a in self._session.get_inputs()]
        self.outputs = [_graph_tensor(a) for a in self._session.get_outputs()]
        self.providers = self._session.get_providers()
        self._run = _direct_run(self._session)

    def run(self, output_names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the graph; onnxruntime failures become `InferenceFailed`."""
        try:
            return self._run(output_names, feeds)
        except Exception as exc:
            raise InferenceFailed(f"onnxruntime failed: {exc}") from exc


def _direct_run(
    session: ort.InferenceSession,
) -> Callable[[Sequence[str], Mapping[str, np.ndarray]], list[np.ndarray]]:
    """`session.run`, or on CPU the compiled session's own run beneath it.

    `InferenceSession.run` is Python: it lists the feed's names to check them
    against the graph and, on a GPU, falls back to CPU when the provider
    fails. On CPU there is nothing to fall back to, and our requests reach it
    already checked (`ModelVersion.prepare_feeds`), so that layer only costs
    time: 1.5-2 us a run in a loop (MLP, batch 1: 11.2-11.9 us against
    9.6-9.8), and served unbatched at c=64 over gRPC, 27.4-28.1k requests/s
    against 24.9-25.2k. `_sess` is onnxruntime's own attribute (there since
    1.0); where it is missing, the public method is used."""
    inner = getattr(session, "_sess", None)
    if inner is None or session.get_providers() != ["CPUExecutionProvider"]:
        return session.run  # type: ignore[no-any-return]
    run = inner.run

    def direct(output_names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return run(output_names, feeds, None)  # type: ignore[no-any-return]

    return direct
