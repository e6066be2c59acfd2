"""Model lifecycle on a real server: explicit load/unload, failed loads
reported with their reason, provenance checks, poll-mode hot swap under load
with no failed request, and SIGTERM draining in-flight requests."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mlserve import examples
from tests.conftest import start_server, wait_until
from tests.gate import Gate


def post(address: str, path: str, body: dict | None = None) -> tuple[int, object]:
    request = urllib.request.Request(
        f"http://{address}{path}", data=json.dumps(body or {}).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            data = response.read()
            return response.status, json.loads(data) if data else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def infer_scaled(client: grpcclient.InferenceServerClient, model: str) -> tuple[float, str]:
    tensor = grpcclient.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
    result = client.infer(model, [tensor])
    return float(result.as_numpy("y")[0, 0]), result.get_response().model_version


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    examples.write_model(tmp_path, "alpha", examples.scaled_model(1.0))
    examples.write_model(tmp_path, "beta", examples.scaled_model(3.0))
    return tmp_path


def index_by_key(address: str) -> dict[tuple[str, str], dict]:
    status, entries = post(address, "/v2/repository/index")
    assert status == 200
    assert isinstance(entries, list)
    return {(e["name"], e["version"]): e for e in entries}


def test_explicit_load_and_unload(repo: Path) -> None:
    server = start_server(repo, "--model-control-mode", "explicit", "--load-model", "alpha")
    try:
        client = grpcclient.InferenceServerClient(server.grpc)
        assert infer_scaled(client, "alpha") == (1.0, "1")
        assert not client.is_model_ready("beta")
        assert index_by_key(server.http)[("beta", "")]["state"] == "UNAVAILABLE"
        status, _ = post(server.http, "/v2/repository/models/beta/load")
        assert status == 200
        assert infer_scaled(client, "beta") == (3.0, "1")
        client.unload_model("beta")
        with pytest.raises(grpcclient.InferenceServerException) as info:
            infer_scaled(client, "beta")
        assert "unloaded" in info.value.message()
        assert info.value.status() == "StatusCode.UNAVAILABLE"
        client.load_model("beta")  # load again over gRPC
        assert infer_scaled(client, "beta") == (3.0, "1")
        # Unknown and path-escaping names are refused and nothing else changes.
        status, doc = post(server.http, "/v2/repository/models/zzz/load")
        assert status == 404 and "zzz" in doc["error"]  # type: ignore[index]
        status, doc = post(server.http, "/v2/repository/models/..%2Fetc/load")
        assert status == 400 and "not allowed" in doc["error"]  # type: ignore[index]
        # Load parameters that are not an object (found by fuzzing: was a 500).
        status, doc = post(server.http, "/v2/repository/models/beta/load", {"parameters": 1})
        assert status == 400 and "'parameters' must be a JSON object" in doc["error"]  # type: ignore[index]
        assert infer_scaled(client, "alpha") == (1.0, "1")
    finally:
        assert server.terminate() == 0


def test_load_api_refused_outside_explicit_mode(repo: Path) -> None:
    server = start_server(repo)
    try:
        status, doc = post(server.http, "/v2/repository/models/alpha/unload")
        assert status == 501 and "explicit" in doc["error"]  # type: ignore[index]
        assert grpcclient.InferenceServerClient(server.grpc).is_model_ready("alpha")
    finally:
        server.terminate()


def test_broken_model_is_reported_and_the_rest_serve(repo: Path) -> None:
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx model")
    examples.write_model(
        repo, "badconfig", examples.scaled_model(1.0), config="max_batch_size: -4\n"
    )
    digest = "0" * 64
    examples.write_model(
        repo, "tampered", examples.scaled_model(2.0), config=f"sha256: '{digest}'\n"
    )
    server = start_server(repo)
    try:
        client = grpcclient.InferenceServerClient(server.grpc)
        http = httpclient.InferenceServerClient(server.http)
        assert infer_scaled(client, "alpha") == (1.0, "1")
        assert not http.is_server_ready()  # strict readiness: not every model loaded
        assert not client.is_server_ready()
        with pytest.raises(urllib.error.HTTPError) as not_ready:  # the protocol's JSON body
            urllib.request.urlopen(f"http://{server.http}/v2/health/ready")
        with not_ready.value as answer:
            assert answer.code == 503 and json.load(answer) == {"ready": False}
        with pytest.raises(urllib.error.HTTPError) as broken:
            urllib.request.urlopen(f"http://{server.http}/v2/models/broken/ready")
        with broken.value as answer:
            assert answer.code == 503 and json.load(answer) == {"name": "broken", "ready": False}
        assert http.is_server_live()
        with grpc.insecure_channel(server.grpc) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        index = index_by_key(server.http)
        assert index[("broken", "1")]["state"] == "UNAVAILABLE"
        assert "onnxruntime could not load" in index[("broken", "1")]["reason"]
        assert (
            "badconfig/config.yaml: max_batch_size: must be >= 0, got -4"
            in index[("badconfig", "")]["reason"]
        )
        assert "sha256" in index[("tampered", "1")]["reason"]
        assert "refusing to load" in index[("tampered", "1")]["reason"]
        with pytest.raises(grpcclient.InferenceServerException) as info:
            infer_scaled(client, "broken")
        assert info.value.status() == "StatusCode.UNAVAILABLE"
        assert "could not load" in info.value.message()
    finally:
        server.terminate()


def test_sha256_match_loads_and_is_reported(repo: Path) -> None:
    path = examples.write_model(repo, "pinned", examples.scaled_model(5.0))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (repo / "pinned" / "config.yaml").write_text(f"sha256: {{1: '{digest}'}}\n")
    server = start_server(repo)
    try:
        http = httpclient.InferenceServerClient(server.http)
        assert http.is_server_ready()
        assert http.get_model_metadata("pinned")["parameters"]["sha256"] == digest
        assert http.get_model_config("pinned")["parameters"]["sha256"]["string_value"] == digest
    finally:
        server.terminate()


def _publish_version(repo: Path, model: str, version: int, factor: float) -> None:
    """Write a version folder elsewhere and rename it in, as a deploy tool would."""
    staging = repo.parent / f"staging-{model}-{version}"
    examples.write_model(staging, model, examples.scaled_model(factor), version=version)
    os.rename(staging / model / str(version), repo / model / str(version))
    shutil.rmtree(staging)


def test_poll_mode_hot_swap_under_load_loses_nothing(repo: Path) -> None:
    server = start_server(repo, "--model-control-mode", "poll", "--repository-poll-secs", "0.2")
    stop = threading.Event()
    failures: list[str] = []
    seen: list[tuple[float, str]] = []
    lock = threading.Lock()

    def client_loop() -> None:
        client = grpcclient.InferenceServerClient(server.grpc)
        while not stop.is_set():
            try:
                answer = infer_scaled(client, "alpha")
            except Exception as exc:
                with lock:
                    failures.append(repr(exc))
                continue
            with lock:
                seen.append(answer)

    threads = [threading.Thread(target=client_loop) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: len(seen) >= 20, "version 1 answered under load")
        _publish_version(repo, "alpha", 2, 2.0)
        wait_until(lambda: "2" in (v for _, v in seen), "version 2 answered")
        with lock:
            first_v2 = next(i for i, (_, v) in enumerate(seen) if v == "2")
        # Keep the load on after the swap: 40 answers past those that may
        # still have been in flight on version 1 then (one per client).
        settled = first_v2 + len(threads)
        wait_until(lambda: len(seen) >= settled + 40, "40 answers after the swap")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    try:
        assert failures == []
        answers = set(seen)
        assert answers == {(1.0, "1"), (2.0, "2")}, answers
        # After the swap only version 2 answers (latest policy, one version).
        assert all(answer == (2.0, "2") for answer in seen[settled:])
        index = index_by_key(server.http)
        assert index[("alpha", "2")]["state"] == "READY"
        assert index[("alpha", "1")]["state"] == "UNAVAILABLE"
        assert index[("alpha", "1")]["reason"] == "unloaded"
    finally:
        server.terminate()


def test_poll_mode_failed_reload_keeps_serving_the_old_version(repo: Path) -> None:
    server = start_server(repo, "--model-control-mode", "poll", "--repository-poll-secs", "0.2")
    try:
        client = grpcclient.InferenceServerClient(server.grpc)
        staging = repo.parent / "staging-bad"
        (staging / "2").mkdir(parents=True)
        (staging / "2" / "model.onnx").write_bytes(b"garbage")
        os.rename(staging / "2", repo / "alpha" / "2")
        wait_until(
            lambda: index_by_key(server.http).get(("alpha", "2"), {}).get("state") == "UNAVAILABLE",
            "the bad version 2 reported UNAVAILABLE",
        )
        assert index_by_key(server.http)[("alpha", "2")]["state"] == "UNAVAILABLE"
        assert infer_scaled(client, "alpha") == (1.0, "1")
    finally:
        server.terminate()


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    """A request held at the gate when SIGTERM comes: the server drains
    (turning away new requests with 503 while the held one is in flight),
    answers it once the gate opens, and exits 0."""
    examples.write_model(
        tmp_path / "models",
        "slow",
        examples.matmul_chain_model(512, 2),
        config="max_batch_size: 512\nexecution: threads\nwarmup:\n  kind: none\n",
    )
    gate = Gate(tmp_path / "gate")
    gate.close("slow")
    server = start_server(tmp_path / "models", "--exit-timeout-secs", "60", gate=gate)
    try:
        client = grpcclient.InferenceServerClient(server.grpc)
        x = np.ones((512, 512), np.float32)
        tensor = grpcclient.InferInput("x", [512, 512], "FP32")
        tensor.set_data_from_numpy(x)
        results: list[object] = []

        def in_flight() -> None:
            try:
                results.append(client.infer("slow", [tensor]).as_numpy("y").shape)
            except Exception as exc:
                results.append(f"{exc!s}")

        thread = threading.Thread(target=in_flight)
        thread.start()
        gate.wait_held("slow")  # in flight, and stays so until the gate opens
        host, port = server.http.rsplit(":", 1)
        keep_alive = http.client.HTTPConnection(host, int(port), timeout=60)
        keep_alive.request("GET", "/v2/health/ready")
        assert json.loads(keep_alive.getresponse().read()) == {"ready": True}
        server.process.send_signal(signal.SIGTERM)
        server.wait_for_line("shutting down: draining")
        # A new request on an open connection is turned away while the old one finishes.
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "datatype": "FP32",
                        "shape": [1, 512],
                        "parameters": {"binary_data_size": 2048},
                    }
                ]
            }
        ).encode()
        keep_alive.request(
            "POST",
            "/v2/models/slow/infer",
            body=header + bytes(2048),
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
        refused = keep_alive.getresponse()
        assert refused.status == 503
        assert "shutting down" in json.loads(refused.read())["error"]
        keep_alive.close()
        gate.open("slow")
        code = server.process.wait(timeout=60)
    finally:
        gate.open("slow")
        server.terminate(timeout_s=30)
    thread.join()
    assert code == 0
    assert results == [(512, 512)], results
    assert "mlserve stopped" in server.output()
    assert "draining" in server.output()


def test_warmup_from_a_sample_file(repo: Path) -> None:
    examples.write_model(
        repo, "sampled", examples.scaled_model(2.0), config="warmup:\n  kind: file\n  file: s.npz\n"
    )
    np.savez(repo / "sampled" / "s.npz", x=np.ones((3, 4), np.float32))
    examples.write_model(
        repo,
        "badsample",
        examples.scaled_model(2.0),
        config="warmup:\n  kind: file\n  file: s.npz\n",
    )
    np.savez(repo / "badsample" / "s.npz", wrong=np.ones((3, 4), np.float32))
    server = start_server(repo)
    try:
        client = grpcclient.InferenceServerClient(server.grpc)
        assert infer_scaled(client, "sampled") == (2.0, "1")
        stats = client.get_inference_statistics("sampled", as_json=True)["model_stats"][0]
        assert int(stats.get("inference_count", 0)) == 1  # warmup runs are not counted
        reason = index_by_key(server.http)[("badsample", "1")]["reason"]
        assert "warmup" in reason and "lacks inputs ['x']" in reason
    finally:
        server.terminate()
