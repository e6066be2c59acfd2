"""KServe's own Python client against mlserve: its REST client (protocol v2)
and its gRPC client, for health, readiness, metadata, the model list and
inference with JSON, binary and BYTES tensors (tests/kserve_client/check.py,
run in KServe's venv), under each gRPC transport."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from mlserve import __version__
from tests.conftest import REPO, ServerProcess

KSERVE_PYTHON = REPO / ".venv-kserve" / "bin" / "python"
CHECK = Path(__file__).resolve().parents[1] / "kserve_client" / "check.py"


@pytest.fixture(scope="module")
def report(server: ServerProcess) -> dict[str, Any]:
    assert KSERVE_PYTHON.exists(), (
        f"{KSERVE_PYTHON} is missing: scripts/test.sh sets it up (benchmarks/peers/setup.sh kserve)"
    )
    done = subprocess.run(
        [str(KSERVE_PYTHON), str(CHECK)],
        env={**os.environ, "MLSERVE_HTTP": server.http, "MLSERVE_GRPC": server.grpc},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def ok(report: dict[str, Any], name: str) -> Any:
    """A check's result; fails with what KServe's client raised, if it did."""
    result = report[name]
    if isinstance(result, dict) and "error" in result:
        pytest.fail(f"{name}: {result['error']}\n{result.get('trace', '')}")
    return result


def expected_mlp(model_repository: Path, report: dict[str, Any]) -> np.ndarray:
    session = ort.InferenceSession(str(model_repository / "mlp" / "1" / "model.onnx"))
    return session.run(None, {"x": np.array(report["mlp_x"], np.float32)})[0]


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_health_and_readiness(report: dict[str, Any], transport: str) -> None:
    assert ok(report, f"{transport}_server_live") is True
    assert ok(report, f"{transport}_server_ready") is True
    assert ok(report, f"{transport}_model_ready") is True
    assert ok(report, f"{transport}_missing_model_ready") is False


def test_rest_bodies_read_by_kserve_s_data_models(report: dict[str, Any]) -> None:
    assert ok(report, "rest_live_body") == {"live": True}
    assert ok(report, "rest_ready_body") == {"ready": True}
    assert ok(report, "rest_model_ready_body") == {"name": "mlp", "ready": True}
    assert "mlp" in ok(report, "rest_models")["models"]


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_metadata(report: dict[str, Any], transport: str) -> None:
    server = ok(report, f"{transport}_server_metadata")
    assert server["name"] == "mlserve" and server["version"] == __version__
    assert "binary_tensor_data" in server["extensions"]
    model = ok(report, f"{transport}_model_metadata")
    assert model["name"] == "mlp" and model["platform"] == "onnxruntime_onnx"
    assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]


@pytest.mark.parametrize("check", ["rest_infer_json", "rest_infer_binary", "grpc_infer"])
def test_inference(report: dict[str, Any], model_repository: Path, check: str) -> None:
    answer = ok(report, check)
    assert answer["model_name"] == "mlp"
    assert answer["id"].startswith("mlp-")  # the request's id, echoed
    np.testing.assert_allclose(
        np.array(answer["y"], np.float32),
        expected_mlp(model_repository, report),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("check", ["rest_bytes_json", "rest_bytes_binary", "grpc_bytes"])
def test_bytes_tensors(report: dict[str, Any], check: str) -> None:
    assert ok(report, check) == report["words"]
