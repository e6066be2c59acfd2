"""`--workers 2`: two processes share the ports, every request is counted once
in the merged metrics and in the statistics extension whichever worker
answers, and the supervisor drains and exits cleanly."""

from __future__ import annotations

import http.client
import json
import os
import re
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from mlserve import examples
from mlserve.supervisor import worker_cpus
from tests.conftest import start_server


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics") as response:
        return response.read().decode()


def value(text: str, pattern: str) -> float:
    match = re.search(pattern + r" ([0-9.e+]+)", text)
    assert match, pattern
    return float(match.group(1))


def test_two_workers_serve_and_count_once(tmp_path: Path) -> None:
    examples.write_model(tmp_path, "mlp", examples.mlp_model())
    server = start_server(tmp_path, workers="2")
    try:
        body = json.dumps(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}
        ).encode()
        host, port = server.http.rsplit(":", 1)
        http_requests = 40
        for _ in range(http_requests):  # a new connection each: the kernel spreads them
            connection = http.client.HTTPConnection(host, int(port), timeout=10)
            connection.request("POST", "/v2/models/mlp/infer", body=body)
            response = connection.getresponse()
            assert response.status == 200, response.read()
            response.read()
            connection.close()
        grpc_requests = 0
        answers = set()
        for _ in range(10):
            client = grpcclient.InferenceServerClient(server.grpc)
            tensor = grpcclient.InferInput("x", [1, 64], "FP32")
            tensor.set_data_from_numpy(np.full((1, 64), 0.5, np.float32))
            for _ in range(3):
                answers.add(client.infer("mlp", [tensor]).as_numpy("y").tobytes())
                grpc_requests += 1
            client.close()
        assert len(answers) == 1  # every worker serves the same model
        text = scrape(server.metrics)
        total = value(text, r'mlserve_request_success_total\{model="mlp",version="1"\}')
        assert total == http_requests + grpc_requests
        shares = [
            value(text, rf'mlserve_worker_request_success_total\{{worker="{i}"\}}') for i in (0, 1)
        ]
        assert sum(shares) == total
        assert min(shares) > 0, f"one worker got everything: {shares}"
        assert (
            value(text, r'mlserve_request_duration_seconds_count\{model="mlp",version="1"\}')
            == total
        )
        # Whichever worker answers, the statistics add up every worker's share.
        for _ in range(6):  # new connections: several workers answer
            client = grpcclient.InferenceServerClient(server.grpc)
            assert "statistics" in client.get_server_metadata(as_json=True)["extensions"]
            stats = client.get_inference_statistics("mlp", as_json=True)["model_stats"][0]
            assert int(stats["inference_stats"]["success"]["count"]) == total
            assert int(stats["inference_count"]) == total
            assert int(stats["execution_count"]) == total
            client.close()
        with urllib.request.urlopen(f"http://{server.http}/v2/models/mlp/stats") as response:
            http_stats = json.loads(response.read())["model_stats"][0]
        assert http_stats["inference_stats"]["success"]["count"] == total
        # Each worker runs on its own share of the supervisor's cores.
        pid = server.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        assert len(children) == 2
        masks = [os.sched_getaffinity(int(child)) for child in children]
        assert masks == [worker_cpus(i, 2, sorted(os.sched_getaffinity(pid))) for i in (0, 1)]
    finally:
        assert server.terminate() == 0
    assert "mlserve stopped" in server.output()


def test_explicit_load_and_unload_reach_every_worker(tmp_path: Path) -> None:
    examples.write_model(tmp_path, "alpha", examples.scaled_model(3.0))
    server = start_server(
        tmp_path, "--model-control-mode", "explicit", "--load-model", "alpha", workers="2"
    )
    try:

        def infer_everywhere() -> list[str]:
            """One request per new connection, so both workers are asked."""
            outcomes = []
            for _ in range(16):
                client = grpcclient.InferenceServerClient(server.grpc)
                tensor = grpcclient.InferInput("x", [1, 4], "FP32")
                tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
                try:
                    value = client.infer("alpha", [tensor]).as_numpy("y")[0, 0]
                    outcomes.append(f"ok {value}")
                except grpcclient.InferenceServerException as exc:
                    outcomes.append(exc.status())
                client.close()
            return outcomes

        assert set(infer_everywhere()) == {"ok 3.0"}
        grpcclient.InferenceServerClient(server.grpc).unload_model("alpha")
        assert set(infer_everywhere()) == {"StatusCode.UNAVAILABLE"}
        grpcclient.InferenceServerClient(server.grpc).load_model("alpha")
        assert set(infer_everywhere()) == {"ok 3.0"}
        shares = [
            value(
                scrape(server.metrics), rf'mlserve_worker_request_success_total\{{worker="{i}"\}}'
            )
            for i in (0, 1)
        ]
        assert min(shares) > 0, f"one worker got everything: {shares}"
    finally:
        assert server.terminate() == 0


def test_by_default_small_cpu_models_get_a_worker_per_cpu(tmp_path: Path) -> None:
    """No `--workers`: one serving process per usable CPU for small CPU
    models (one CPU: the server itself serves, no supervisor)."""
    examples.write_model(tmp_path, "mlp", examples.mlp_model())
    server = start_server(tmp_path, workers=None)
    try:
        cpus = len(os.sched_getaffinity(0))
        chosen = server.wait_for_line(r"mlserve workers: (\d+) \((.*)\)")
        assert int(chosen.group(1)) == cpus, chosen.group(0)
        pid = server.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        assert len(children) == (cpus if cpus > 1 else 0)
        client = grpcclient.InferenceServerClient(server.grpc)
        tensor = grpcclient.InferInput("x", [1, 64], "FP32")
        tensor.set_data_from_numpy(np.full((1, 64), 0.5, np.float32))
        assert client.infer("mlp", [tensor]).as_numpy("y").shape == (1, 10)
        client.close()
    finally:
        assert server.terminate() == 0


def test_a_multithreaded_model_keeps_one_worker(tmp_path: Path) -> None:
    """A model that asks for two intra-op threads would only see them take
    turns on a worker's one core: the default then starts one process."""
    examples.write_model(
        tmp_path, "mlp", examples.mlp_model(), config="session: {intra_op_threads: 2}\n"
    )
    server = start_server(tmp_path, workers=None)
    try:
        chosen = server.wait_for_line(r"mlserve workers: (\d+) \((.*)\)")
        assert chosen.group(1) == "1", chosen.group(0)
        pid = server.process.pid
        assert Path(f"/proc/{pid}/task/{pid}/children").read_text().split() == []
    finally:
        assert server.terminate() == 0
