"""The Open Inference Protocol against a real `mlserve serve`, through the
clients users have: tritonclient gRPC and HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.conftest import ServerProcess

DATATYPES = {
    "FP32": np.float32,
    "FP16": np.float16,
    "FP64": np.float64,
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
}


@pytest.fixture(scope="module")
def grpc_client(server: ServerProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc)


@pytest.fixture(scope="module")
def http_client(server: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.http)


def sample(datatype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if datatype == "BYTES":
        words = [b"", b"a", b"hello", "w\u00e9ird".encode(), b"x" * 300]
        return np.array(
            [words[i % len(words)] for i in range(int(np.prod(shape)))], dtype=object
        ).reshape(shape)
    if datatype == "BOOL":
        return rng.random(shape) > 0.5
    dtype = np.dtype(DATATYPES[datatype])
    if dtype.kind == "f":
        return (rng.standard_normal(shape) * 100).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def test_health(
    grpc_client: grpcclient.InferenceServerClient, http_client: httpclient.InferenceServerClient
) -> None:
    assert grpc_client.is_server_live() and grpc_client.is_server_ready()
    assert http_client.is_server_live() and http_client.is_server_ready()
    assert grpc_client.is_model_ready("mlp") and http_client.is_model_ready("mlp", "1")
    assert not grpc_client.is_model_ready("no_such_model")
    assert not http_client.is_model_ready("mlp", "7")


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/v2/health/live", 200, {"live": True}),
        ("/v2/health/ready", 200, {"ready": True}),
        ("/v2/models/mlp/ready", 200, {"name": "mlp", "ready": True}),
        ("/v2/models/mlp/versions/1/ready", 200, {"name": "mlp", "ready": True}),
        ("/v2/models/mlp/versions/7/ready", 503, {"name": "mlp", "ready": False}),
        ("/v2/models/no_such_model/ready", 503, {"name": "no_such_model", "ready": False}),
    ],
)
def test_health_answers_carry_the_protocol_s_json(
    server: ServerProcess, path: str, status: int, body: dict[str, object]
) -> None:
    """The Open Inference Protocol's REST health bodies (KServe's client reads
    them), with the status codes Triton's clients read."""
    try:
        answer = urllib.request.urlopen(f"http://{server.http}{path}")
    except urllib.error.HTTPError as error:
        answer = error
    with answer:
        assert answer.status == status
        assert answer.headers["Content-Type"] == "application/json"
        assert json.load(answer) == body


def test_the_model_list_names_the_ready_models(server: ServerProcess) -> None:
    """KServe's GET /v2/models: {"models": [names]}."""
    with urllib.request.urlopen(f"http://{server.http}/v2/models") as answer:
        models = json.load(answer)["models"]
    assert "mlp" in models and "identity_bytes" in models
    assert models == sorted(models)


def test_server_metadata(
    grpc_client: grpcclient.InferenceServerClient, http_client: httpclient.InferenceServerClient
) -> None:
    from mlserve import __version__

    grpc_meta = grpc_client.get_server_metadata(as_json=True)
    http_meta = http_client.get_server_metadata()
    for meta in (grpc_meta, http_meta):
        assert meta["name"] == "mlserve"
        assert meta["version"] == __version__
        assert {
            "statistics",
            "model_configuration",
            "model_repository",
            "binary_tensor_data",
        } <= set(meta["extensions"])


def test_model_metadata_and_config(
    grpc_client: grpcclient.InferenceServerClient, http_client: httpclient.InferenceServerClient
) -> None:
    meta = http_client.get_model_metadata("mlp")
    assert meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 10]}]
    assert len(meta["parameters"]["sha256"]) == 64
    grpc_meta = grpc_client.get_model_metadata("mlp", "1", as_json=True)
    assert grpc_meta["inputs"][0]["shape"] == ["-1", "64"]  # int64 as JSON strings
    config = http_client.get_model_config("mlp")
    assert config["max_batch_size"] == 8  # from config.yaml
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["input"][0]["dims"] == [64]
    assert config["parameters"]["sha256"]["string_value"] == meta["parameters"]["sha256"]
    assert "dynamic_batching" not in config and "sequence_batching" not in config
    grpc_config = grpc_client.get_model_config("mlp").config
    assert grpc_config.max_batch_size == 8 and list(grpc_config.output[0].dims) == [10]
    # A model with a fixed first dimension does not batch.
    fixed = http_client.get_model_config("identity_fixed")
    assert fixed["max_batch_size"] == 0 and fixed["input"][0]["dims"] == [2, 3]


@pytest.mark.parametrize("datatype", [*DATATYPES, "BYTES"])
def test_infer_every_datatype_grpc(
    grpc_client: grpcclient.InferenceServerClient, datatype: str
) -> None:
    data = sample(datatype, (3, 4))
    tensor = grpcclient.InferInput("x", list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    result = grpc_client.infer(f"identity_{datatype.lower()}", [tensor])
    out = result.as_numpy("y")
    assert out.shape == data.shape
    assert result.get_output("y").datatype == datatype
    np.testing.assert_array_equal(out, data)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", [*DATATYPES, "BYTES"])
def test_infer_every_datatype_http(
    http_client: httpclient.InferenceServerClient, datatype: str, binary: bool
) -> None:
    data = sample(datatype, (2, 4), seed=1)
    if datatype == "BYTES" and not binary:
        data = np.array([b.decode() for b in data.reshape(-1)], dtype=object).reshape(2, 4)
    tensor = httpclient.InferInput("x", list(data.shape), datatype)
    tensor.set_data_from_numpy(data, binary_data=binary)
    requested = [httpclient.InferRequestedOutput("y", binary_data=binary)]
    result = http_client.infer(f"identity_{datatype.lower()}", [tensor], outputs=requested)
    out = result.as_numpy("y")
    assert out.shape == data.shape
    if datatype == "BYTES" and not binary:
        np.testing.assert_array_equal(out.astype(str), data.astype(str))
    else:
        np.testing.assert_array_equal(out, data)


NUMPY_FLOAT = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}


@pytest.mark.parametrize("datatype", list(NUMPY_FLOAT))
def test_json_outputs_keep_nan_and_infinities(
    http_client: httpclient.InferenceServerClient, datatype: str
) -> None:
    """JSON has no NaN or infinity: they are written NaN, Infinity and
    -Infinity (as Triton and Python's json write them), not null, so a
    client reads back what the model returned."""
    x = np.array([[np.nan, np.inf, -np.inf, 1.5]], dtype=NUMPY_FLOAT[datatype])
    tensor = httpclient.InferInput("x", [1, 4], datatype)
    tensor.set_data_from_numpy(x, binary_data=True)
    result = http_client.infer(
        f"identity_{datatype.lower()}",
        [tensor],
        outputs=[httpclient.InferRequestedOutput("y", binary_data=False)],
    )
    np.testing.assert_array_equal(result.as_numpy("y"), x)


def test_mlp_matches_onnxruntime_in_process(model_repository, grpc_client, http_client) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_repository / "mlp" / "1" / "model.onnx"))
    x = np.random.default_rng(5).standard_normal((5, 64)).astype(np.float32)
    expected = session.run(None, {"x": x})[0]
    g = grpcclient.InferInput("x", [5, 64], "FP32")
    g.set_data_from_numpy(x)
    np.testing.assert_allclose(grpc_client.infer("mlp", [g]).as_numpy("y"), expected, rtol=1e-5)
    h = httpclient.InferInput("x", [5, 64], "FP32")
    h.set_data_from_numpy(x, binary_data=False)
    out = http_client.infer(
        "mlp", [h], outputs=[httpclient.InferRequestedOutput("y", binary_data=False)]
    ).as_numpy("y")
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_requested_output_subset(
    grpc_client: grpcclient.InferenceServerClient, http_client: httpclient.InferenceServerClient
) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    g = grpcclient.InferInput("x", [2, 4], "FP32")
    g.set_data_from_numpy(x)
    result = grpc_client.infer(
        "two_output", [g], outputs=[grpcclient.InferRequestedOutput("twice")]
    )
    assert [o.name for o in result.get_response().outputs] == ["twice"]
    np.testing.assert_array_equal(result.as_numpy("twice"), x * 2)
    both = grpc_client.infer("two_output", [g])
    np.testing.assert_array_equal(both.as_numpy("plus_one"), x + 1)
    h = httpclient.InferInput("x", [2, 4], "FP32")
    h.set_data_from_numpy(x)
    result = http_client.infer(
        "two_output", [h], outputs=[httpclient.InferRequestedOutput("plus_one")]
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["plus_one"]
    np.testing.assert_array_equal(result.as_numpy("plus_one"), x + 1)


def test_request_id_is_echoed(grpc_client, http_client) -> None:
    x = np.zeros((1, 4), dtype=np.float32)
    g = grpcclient.InferInput("x", [1, 4], "FP32")
    g.set_data_from_numpy(x)
    assert (
        grpc_client.infer("identity_fp32", [g], request_id="req-17").get_response().id == "req-17"
    )
    h = httpclient.InferInput("x", [1, 4], "FP32")
    h.set_data_from_numpy(x)
    assert http_client.infer("identity_fp32", [h], request_id="r9").get_response()["id"] == "r9"


def test_http_compression_both_ways(http_client: httpclient.InferenceServerClient) -> None:
    x = np.random.default_rng(2).standard_normal((4, 64)).astype(np.float32)
    reference = None
    for algorithm in ("gzip", "deflate"):
        h = httpclient.InferInput("x", [4, 64], "FP32")
        h.set_data_from_numpy(x)
        out = http_client.infer(
            "mlp",
            [h],
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        ).as_numpy("y")
        if reference is None:
            reference = out
        np.testing.assert_array_equal(out, reference)
    assert reference is not None and reference.shape == (4, 10)


def _stats(client: grpcclient.InferenceServerClient, model: str) -> dict:
    return client.get_inference_statistics(model, as_json=True)["model_stats"][0]


def test_statistics_count_successes_failures_and_rows(server: ServerProcess, grpc_client) -> None:
    before = _stats(grpc_client, "identity_int32")
    data = np.ones((3, 4), dtype=np.int32)
    good = grpcclient.InferInput("x", [3, 4], "INT32")
    good.set_data_from_numpy(data)
    for _ in range(4):
        grpc_client.infer("identity_int32", [good])
    bad = grpcclient.InferInput("x", [3, 5], "INT32")
    bad.set_data_from_numpy(np.ones((3, 5), dtype=np.int32))
    with pytest.raises(grpcclient.InferenceServerException):
        grpc_client.infer("identity_int32", [bad])
    after = _stats(grpc_client, "identity_int32")

    def delta(*path: str) -> int:
        a, b = after, before
        for key in path:
            a, b = a.get(key, {}), b.get(key, {})
        return int(a or 0) - int(b or 0)

    assert delta("inference_stats", "success", "count") == 4
    assert delta("inference_stats", "fail", "count") == 1
    assert delta("inference_count") == 12  # rows
    assert delta("execution_count") == 4
    assert int(after["inference_stats"]["compute_infer"]["ns"]) > 0
    http_stats = json.loads(
        urllib.request.urlopen(f"http://{server.http}/v2/models/identity_int32/stats").read()
    )
    assert http_stats["model_stats"][0]["inference_stats"]["success"]["count"] == int(
        after["inference_stats"]["success"]["count"]
    )


def test_repository_index(http_client, grpc_client) -> None:
    index = http_client.get_model_repository_index()
    by_name = {(e["name"], e.get("version", "")): e for e in index}
    assert by_name[("mlp", "1")]["state"] == "READY"
    names = {e.name for e in grpc_client.get_model_repository_index().models}
    assert {"mlp", "two_output", "identity_bytes"} <= names


def test_metrics_endpoint_lists_documented_families(server: ServerProcess, grpc_client) -> None:
    x = grpcclient.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.zeros((1, 4), np.float32))
    grpc_client.infer("identity_fp32", [x])
    text = urllib.request.urlopen(f"http://{server.metrics}/metrics").read().decode()
    for family in (
        "mlserve_request_success_total",
        "mlserve_request_failure_total",
        "mlserve_request_duration_seconds_bucket",
        "mlserve_queue_duration_seconds_bucket",
        "mlserve_compute_duration_seconds_bucket",
        "mlserve_inflight_requests",
        "mlserve_model_state",
        "mlserve_inference_rows_total",
    ):
        assert family in text, family
    assert 'mlserve_model_state{model="mlp",state="READY",version="1"} 1.0' in text
    assert 'mlserve_model_state{model="mlp",state="LOADING",version="1"} 0.0' in text


def test_grpc_health_service(server: ServerProcess) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(server.grpc) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(health_pb2.HealthCheckRequest(service="other"), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_unimplemented_rpcs_say_so(server: ServerProcess) -> None:
    import grpc

    with grpc.insecure_channel(server.grpc) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/SystemSharedMemoryStatus",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as info:
            call(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
