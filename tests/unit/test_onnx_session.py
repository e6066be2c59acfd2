"""The onnxruntime boundary: on CPU a run skips onnxruntime's Python layer
and still answers exactly as `InferenceSession.run` does, and its failures
still become ours."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from mlserve import examples
from mlserve.errors import InferenceFailed
from mlserve.runtime.model_config import SessionSettings
from mlserve.runtime.onnx_session import OnnxSession


@pytest.fixture(scope="module")
def model() -> bytes:
    return examples.mlp_model()


def test_a_cpu_session_runs_the_compiled_session_directly(model: bytes) -> None:
    session = OnnxSession(model, settings=SessionSettings(intra_op_threads=1), device="cpu")
    assert session._run.__qualname__ == "_direct_run.<locals>.direct"
    x = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
    reference = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (ours,) = session.run(["y"], {"x": x})
    (theirs,) = reference.run(["y"], {"x": x})
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize(
    ("feeds", "words"),
    [
        ({"z": np.ones((1, 64), np.float32)}, "Invalid input name: z"),
        ({"x": np.ones((1, 63), np.float32)}, "invalid dimensions for input: x"),
        ({"x": np.ones((1, 64), np.float64)}, "Unexpected input data type"),
    ],
)
def test_direct_run_failures_become_inference_failed(
    model: bytes, feeds: dict[str, np.ndarray], words: str
) -> None:
    session = OnnxSession(model, settings=SessionSettings(intra_op_threads=1), device="cpu")
    with pytest.raises(InferenceFailed, match=words):
        session.run(["y"], feeds)
