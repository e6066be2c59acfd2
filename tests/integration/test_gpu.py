"""Models on a CUDA device. Runs where onnxruntime-gpu sees a GPU; elsewhere it
checks that asking for CUDA is refused with a reason instead of failing later."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient

from mlserve import examples
from tests.conftest import infer_concurrently, start_server

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


NO_CUDA = (
    "onnxruntime has no CUDAExecutionProvider here (CPU-only machine); run on the "
    "GPU machine with onnxruntime-gpu (benchmarks/gpu/device_run.sh)"
)


def _repo(tmp_path: Path) -> Path:
    examples.write_model(tmp_path, "mlp_gpu", examples.mlp_model(), config="device: cuda:0\n")
    examples.write_model(
        tmp_path,
        "convnet_gpu_batched",
        examples.convnet_model(),
        config="device: cuda:0\nmax_batch_size: 32\n"
        "dynamic_batching: {max_queue_delay_us: 2000}\ninstance_count: 2\n",
    )
    return tmp_path


@pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA)
def test_cuda_model_serves_and_matches_cpu(tmp_path: Path) -> None:
    server = start_server(_repo(tmp_path))
    try:
        client = grpcclient.InferenceServerClient(server.grpc)
        x = np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32)
        tensor = grpcclient.InferInput("x", [16, 64], "FP32")
        tensor.set_data_from_numpy(x)
        out = client.infer("mlp_gpu", [tensor]).as_numpy("y")
        cpu = ort.InferenceSession(
            str(tmp_path / "mlp_gpu" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        # cuBLAS and cuDNN compute FP32 in TF32 on Ampere and later (onnxruntime's
        # default, use_tf32): about 1e-3 relative.
        np.testing.assert_allclose(out, cpu.run(None, {"x": x})[0], rtol=1e-2, atol=2e-3)
        config = client.get_model_config("mlp_gpu", as_json=True)["config"]
        assert config["instance_group"][0]["kind"] == "KIND_GPU"
        assert "CUDAExecutionProvider" in config["parameters"]["providers"]["string_value"]
    finally:
        server.terminate()


@pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA)
def test_cuda_batches_concurrent_requests_and_splits_exactly(tmp_path: Path) -> None:
    """Requests of 1-3 rows sent at once share batches on the GPU (two
    instances, two CUDA streams) and each gets exactly its own rows back."""
    server = start_server(_repo(tmp_path))
    try:
        client = grpcclient.InferenceServerClient(server.grpc)
        rng = np.random.default_rng(3)
        inputs = [
            rng.standard_normal((int(rng.integers(1, 4)), 3, 32, 32)).astype(np.float32)
            for _ in range(64)
        ]
        results = infer_concurrently(server.grpc, "convnet_gpu_batched", inputs, timeout_s=60)
        cpu = ort.InferenceSession(
            str(tmp_path / "convnet_gpu_batched" / "1" / "model.onnx"),
            providers=["CPUExecutionProvider"],
        )
        for index, x in enumerate(inputs):
            # cuDNN may compute in TF32 on Ampere and later.
            np.testing.assert_allclose(results[index], cpu.run(None, {"x": x})[0], atol=2e-2)
        stats = client.get_inference_statistics("convnet_gpu_batched", as_json=True)
        entry = stats["model_stats"][0]
        assert int(entry["inference_count"]) == sum(len(x) for x in inputs)
        assert int(entry["execution_count"]) < len(inputs), "no two requests shared a batch"
    finally:
        server.terminate()


@pytest.mark.skipif(
    HAS_CUDA, reason="this machine has CUDA; the refusal path needs a CPU-only onnxruntime"
)
def test_cuda_without_gpu_build_is_refused_with_reason(tmp_path: Path) -> None:
    server = start_server(_repo(tmp_path))
    try:
        request = urllib.request.Request(
            f"http://{server.http}/v2/repository/index", data=b"{}", method="POST"
        )
        index = json.loads(urllib.request.urlopen(request).read())
        entry = next(e for e in index if e["name"] == "mlp_gpu" and e["version"] == "1")
        assert entry["state"] == "UNAVAILABLE"
        assert "CUDAExecutionProvider" in entry["reason"] and "onnxruntime-gpu" in entry["reason"]
    finally:
        server.terminate()
