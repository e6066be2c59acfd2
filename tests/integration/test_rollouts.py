"""Canary rollouts in `mlserve serve`: two versions of a model built here,
real server processes, real clients, the admin API and `mlserve rollout`.

Every wait is for a condition (the rollout's state, a count), with bounds
only a hang reaches; the judge's thresholds are loosened so that a few dozen
requests decide (its statistics are tested on their own in
tests/unit/test_judge.py and benchmarks/judge)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from mlserve import examples
from tests.conftest import ServerProcess, metric, start_server, wait_until

# A plan that a few dozen requests decide: shadow, then half, then all.
PLAN = """
rollout:
  {versions}
  steps: [{{shadow: 100}}, {{weight: 50}}, {{weight: 100}}]
  interval_s: 0.3
  min_requests: 30
  max_step_s: 120
  judge:
    alpha: 0.05
    error_mixture_sd: 0.2
    error_tolerance_abs: 0.5
    latency_tolerance: 100.0
    latency_tail_factor: 1000.0
    agreement_min: 0.5
    output_distance_max: 1.0
warmup: {{kind: none}}
"""


def failing_model() -> bytes:
    """y = x[:, [0, 1, 2, 10]]: loads, and fails on every request (index 10
    is past the 4 columns): a canary that cannot serve."""
    from onnx import TensorProto, helper, numpy_helper

    indices = numpy_helper.from_array(np.array([0, 1, 2, 10], np.int64), "indices")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["x", "indices"], ["y"], axis=1)],
        "failing",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [indices],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def repository(root: Path, canary: bytes, versions: str = "stable: 1\n  canary: 2") -> Path:
    models = root / "models"
    examples.write_model(
        models, "m", examples.scaled_model(1.0), config=PLAN.format(versions=versions)
    )
    examples.write_model(models, "m", canary, version=2)
    return models


def rollout_status(server: ServerProcess, token: str | None = None) -> dict[str, Any]:
    request = urllib.request.Request(f"http://{server.http}/v2/rollouts/m")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request) as response:
        return json.load(response)  # type: ignore[no-any-return]


class Client:
    """Sends one request after another over HTTP until stopped, and keeps
    what each answer said: status, the version that answered, its route."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.answers: list[tuple[int, str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Client:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        body = json.dumps(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
        ).encode()
        while not self._stop.is_set():
            request = urllib.request.Request(
                f"http://{self.server.http}/v2/models/m/infer", data=body, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    doc = json.load(response)
                    self.answers.append(
                        (200, doc["model_version"], response.headers.get("mlserve-route", ""))
                    )
            except urllib.error.HTTPError as error:
                with error:
                    self.answers.append((error.code, "", error.headers.get("mlserve-route", "")))


def until_state(server: ServerProcess, *states: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def reached() -> bool:
        found.update(rollout_status(server))
        return found["state"] in states

    wait_until(reached, f"the rollout reached {states}", timeout_s=120)
    return found


def test_a_good_canary_is_promoted_through_every_step_and_stays_after_a_restart(
    tmp_path: Path,
) -> None:
    models = repository(tmp_path, examples.scaled_model(1.0))
    state_dir = tmp_path / "state"
    server = start_server(models, "--state-dir", str(state_dir))
    try:
        with Client(server) as client:
            status = until_state(server, "succeeded", "rolled_back")
        assert status["state"] == "succeeded", status
        history = [event["reason"] for event in status["history"]]
        assert any("step 1 (weight 50%)" in reason for reason in history), history
        assert any("step 2 (weight 100%)" in reason for reason in history), history
        versions = {version for code, version, _ in client.answers if code == 200}
        assert versions == {"1", "2"}  # both answered while the split ran
        assert all(code == 200 for code, _, _ in client.answers)
        assert metric(server, "mlserve_rollout_state", model="m", state="succeeded") == 1
        for track in ("stable", "canary"):
            labels = {"model": "m", "track": track}
            assert metric(server, "mlserve_routed_requests_total", outcome="ok", **labels) > 0
            assert metric(server, "mlserve_routed_request_duration_seconds_count", **labels) > 0
        assert metric(server, "mlserve_rollout_verdicts_total", model="m", verdict="promote") == 3
    finally:
        server.terminate()
    again = start_server(models, "--state-dir", str(state_dir))
    try:
        grpc = grpcclient.InferenceServerClient(again.grpc)
        tensor = grpcclient.InferInput("x", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
        assert grpc.infer("m", [tensor]).get_response().model_version == "2"
        assert not grpc.is_model_ready("m", "1")  # the old stable stays unloaded
        assert rollout_status(again)["state"] == "succeeded"
    finally:
        again.terminate()


def test_a_canary_failing_every_request_is_cut_off_at_once(tmp_path: Path) -> None:
    models = repository(tmp_path, failing_model())
    (models / "m" / "config.yaml").write_text(
        PLAN.format(versions="stable: 1\n  canary: 2").replace(
            "[{shadow: 100}, {weight: 50}, {weight: 100}]", "[{weight: 50}, {weight: 100}]"
        )
    )
    server = start_server(models, "--state-dir", str(tmp_path / "state"))
    try:
        with Client(server) as client:
            status = until_state(server, "rolled_back", "succeeded")
            seen = len(client.answers)
            wait_until(lambda: len(client.answers) >= seen + 50, "50 answers after the cut")
        assert status["state"] == "rolled_back"
        assert status["reason"].startswith("canary_failing"), status
        failed = [a for a in client.answers if a[0] != 200]
        assert failed and all(route == "canary" for _, _, route in failed)
        assert len(failed) <= 20  # cut at the 20th failure in a row (one client)
        errors = metric(
            server, "mlserve_routed_requests_total", model="m", track="canary", outcome="error"
        )
        assert errors == len(failed)
        assert metric(server, "mlserve_rollout_weight", model="m", track="canary") == 0
        after = client.answers[seen:]
        assert all(a == (200, "1", "") for a in after), after[:5]  # stable alone, no split
    finally:
        server.terminate()


def test_a_canary_that_answers_differently_is_rolled_back_in_its_shadow_step(
    tmp_path: Path,
) -> None:
    models = repository(tmp_path, examples.scaled_model(2.0))
    server = start_server(models, "--state-dir", str(tmp_path / "state"))
    try:
        with Client(server) as client:
            status = until_state(server, "rolled_back", "succeeded")
        assert status["state"] == "rolled_back"
        assert status["reason"] == "output_agreement", status
        assert status["step"] == 0  # the shadow step
        # No client saw the canary: stable answered all, routed ("stable")
        # while the shadow step ran, unrouted ("") once it was rolled back.
        assert set(client.answers) <= {(200, "1", "stable"), (200, "1", "")}
        assert (200, "1", "stable") in client.answers
    finally:
        server.terminate()


def test_killed_mid_rollout_the_server_resumes_the_same_step(tmp_path: Path) -> None:
    """SIGKILL during the weight step; started again, it routes that step."""
    models = repository(tmp_path, examples.scaled_model(1.0))
    (models / "m" / "config.yaml").write_text(
        PLAN.format(versions="stable: 1\n  canary: 2").replace(
            "min_requests: 30", "min_requests: 1000000"
        )
    )
    state_dir = tmp_path / "state"
    server = start_server(models, "--state-dir", str(state_dir))
    try:
        rollout_status(server)
        http = f"http://{server.http}/v2/rollouts/m/promote"
        urllib.request.urlopen(urllib.request.Request(http, data=b"{}", method="POST")).close()
        assert rollout_status(server)["step"] == 1
    finally:
        server.process.send_signal(signal.SIGKILL)
        server.terminate()
    again = start_server(models, "--state-dir", str(state_dir))
    try:
        status = rollout_status(again)
        assert (status["state"], status["step"]) == ("progressing", 1)
        assert status["weights"]["canary"] == 0.5
        with Client(again) as client:
            wait_until(
                lambda: {v for c, v, _ in client.answers if c == 200} == {"1", "2"},
                "both versions answering",
            )
    finally:
        again.terminate()


@pytest.fixture
def admin_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """Version 1 serving; version 2 written after start-up, for `rollout start`."""
    models = tmp_path / "models"
    config = PLAN.format(versions="").replace("min_requests: 30", "min_requests: 1000000")
    examples.write_model(models, "m", examples.scaled_model(1.0), config=config)
    server = start_server(
        models, "--state-dir", str(tmp_path / "state"), env={"MLSERVE_ADMIN_TOKEN": "s3cret"}
    )
    examples.write_model(models, "m", examples.scaled_model(1.0), version=2)
    yield server
    server.terminate()


def cli(
    server: ServerProcess, *args: str, token: str | None = "s3cret"
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mlserve.cli.main", "rollout", *args, "--url", server.http]
    if token:
        command += ["--token", token]
    env = {k: v for k, v in os.environ.items() if k != "MLSERVE_ADMIN_TOKEN"}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_every_admin_call_over_the_cli_with_and_without_the_token(
    admin_server: ServerProcess,
) -> None:
    refused = cli(admin_server, "status", "m", token=None)
    assert refused.returncode == 2 and "403" in refused.stderr and "admin token" in refused.stderr
    wrong = cli(admin_server, "status", token="guess")
    assert wrong.returncode == 2 and "403" in wrong.stderr
    started = cli(admin_server, "start", "m", "--canary", "2", "--json")
    assert started.returncode == 0, started.stderr
    doc = json.loads(started.stdout)
    assert (doc["state"], doc["stable"], doc["canary"]) == ("shadowing", 1, 2)
    for action, state in (("pause", "paused"), ("resume", "shadowing"), ("promote", "progressing")):
        done = cli(admin_server, action, "m", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["state"] == state
    human = cli(admin_server, "status", "m")
    assert human.returncode == 0 and "m: progressing step 2/3 (weight 50%)" in human.stdout
    listing = cli(admin_server, "status", "--json")
    assert [r["model"] for r in json.loads(listing.stdout)["rollouts"]] == ["m"]
    aborted = cli(admin_server, "abort", "m", "--json")
    assert json.loads(aborted.stdout)["state"] == "aborted"
    again = cli(admin_server, "abort", "m")
    assert again.returncode == 2 and "no rollout to abort" in again.stderr
    missing = cli(admin_server, "start", "nope", "--canary", "2")
    assert missing.returncode == 2 and "404" in missing.stderr


def test_over_grpc_the_route_follows_metadata_and_every_answer_says_who_answered(
    tmp_path: Path,
) -> None:
    """A weight-50 step: gRPC metadata `mlserve-route` forces a track,
    `mlserve-route-key` sticks a user to one; every answer carries the
    version, the `mlserve_route` parameter and `mlserve-route` initial
    metadata (on either gRPC transport)."""
    import grpc

    from mlserve.proto import grpc_service_pb2 as pb

    models = repository(tmp_path, examples.scaled_model(2.0))
    config = PLAN.format(versions="stable: 1\n  canary: 2").replace(
        "[{shadow: 100}, {weight: 50}, {weight: 100}]", "[{weight: 50}]"
    )
    (models / "m" / "config.yaml").write_text(
        config.replace("min_requests: 30", "min_requests: 1000000")
    )
    server = start_server(models, "--state-dir", str(tmp_path / "state"))
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(np.ones((1, 4), np.float32).tobytes())
    try:
        with grpc.insecure_channel(server.grpc) as channel:
            infer = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=pb.ModelInferResponse.FromString,
            )

            def ask(*metadata: tuple[str, str]) -> tuple[str, str, str]:
                reply, call = infer.with_call(request, metadata=metadata, timeout=60)
                header = dict(call.initial_metadata()).get("mlserve-route", "")
                return reply.model_version, reply.parameters["mlserve_route"].string_param, header

            assert ask(("mlserve-route", "canary")) == ("2", "canary", "canary")
            assert ask(("mlserve-route", "stable")) == ("1", "stable", "stable")
            for user in ("user-1", "user-2", "user-3", "user-4"):
                first = ask(("mlserve-route-key", user))
                assert all(ask(("mlserve-route-key", user)) == first for _ in range(5))
                assert first in {("1", "stable", "stable"), ("2", "canary", "canary")}
            with pytest.raises(grpc.RpcError) as refused:
                ask(("mlserve-route", "green"))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "mlserve-route must be 'stable' or 'canary'" in (refused.value.details() or "")
    finally:
        server.terminate()
