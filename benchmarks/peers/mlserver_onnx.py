"""An MLServer runtime for ONNX models on onnxruntime's CPU provider (the MLServer peer).

Loaded by `mlserver start` from a model-settings.json whose `implementation`
is `mlserver_onnx.OnnxModel` (benchmarks/peers on PYTHONPATH, as
mlserver_peer.py sets it) and whose `parameters.uri` names the model.onnx.
Inputs are decoded by name from the V2 request (any order; datatype from the
graph), outputs are named as in the graph. Adaptive batching, when on, merges
requests along the first dimension before `predict` and splits after it, so
`predict` sees one ordinary batch either way.

intra_op_num_threads: `parameters.extra.intra_op_threads` in the model
settings, else the env var MLSERVER_ONNX_INTRA_OP_THREADS, else 1.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri
from peer_common import ORT_TYPES

THREADS_ENV = "MLSERVER_ONNX_INTRA_OP_THREADS"


def intra_op_threads(extra: dict[str, Any] | None) -> int:
    value = (extra or {}).get("intra_op_threads") or os.environ.get(THREADS_ENV) or 1
    return int(value)


class OnnxModel(MLModel):
    """One onnxruntime InferenceSession per model (per worker process)."""

    async def load(self) -> bool:
        path = await get_model_uri(self.settings, wellknown_filenames=["model.onnx"])
        options = ort.SessionOptions()
        parameters = self.settings.parameters
        options.intra_op_num_threads = intra_op_threads(parameters.extra if parameters else None)
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._inputs = {
            i.name: ORT_TYPES.get(i.type, np.float32) for i in self._session.get_inputs()
        }
        self._outputs = [o.name for o in self._session.get_outputs()]
        self.ready = True
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds: dict[str, np.ndarray] = {}
        for tensor in payload.inputs:
            if tensor.name not in self._inputs:
                raise InferenceError(f"unexpected input {tensor.name!r} for model {self.name}")
            array = NumpyCodec.decode_input(tensor)
            feeds[tensor.name] = np.asarray(array, self._inputs[tensor.name])
        missing = self._inputs.keys() - feeds.keys()
        if missing:
            raise InferenceError(f"missing inputs {sorted(missing)} for model {self.name}")
        results = self._session.run(self._outputs, feeds)
        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            model_version=self.version,
            outputs=[
                NumpyCodec.encode_output(name, value)
                for name, value in zip(self._outputs, results, strict=True)
            ],
        )
