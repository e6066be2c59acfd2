"""Queueing and overload protection on a real server: queue limits,
deadlines, priorities, ordering, withdrawal of requests whose clients left,
and the latency budget; the model's runs are held at the tests' gate."""

from __future__ import annotations

import contextlib
import json
import queue
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from mlserve import examples
from mlserve.proto import grpc_service_pb2 as pb
from tests.conftest import (
    ServerProcess,
    metric,
    start_server,
    wait_until,
)
from tests.gate import Gate
from tests.integration.batching_support import (
    inflight,
)
from tests.integration.h2_raw import RawH2, grpc_message


def _occupy(
    server: ServerProcess, gate: Gate, model: str = "slow", rows: int = 512
) -> threading.Thread:
    """Start one request of `rows` rows on `model` and return once its run
    waits at the gate (which the caller has closed): the instance is busy
    until the caller opens it. The thread ends with the request's answer."""
    client = grpcclient.InferenceServerClient(server.grpc)
    tensor = grpcclient.InferInput("x", [rows, 512], "FP32")
    tensor.set_data_from_numpy(np.ones((rows, 512), np.float32))
    held = gate.held(model)
    thread = threading.Thread(target=lambda: client.infer(model, [tensor]))
    thread.start()
    gate.wait_held(model, held + 1)
    return thread


def _slow_request(model: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 512])
    request.raw_input_contents.append(np.ones((1, 512), np.float32).tobytes())
    return request


def _check_withdrawn(
    server: ServerProcess,
    gate: Gate,
    model: str,
    queued: int,
    client_session: contextlib.AbstractContextManager[None],
) -> None:
    """Entering `client_session` sends `queued` requests to `model`, which
    queue behind a run held at the gate; leaving it is the client going away
    (cancel, close). They must leave the queue, counted as failures with
    reason cancelled, and never run."""
    client = grpcclient.InferenceServerClient(server.grpc)
    before = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    cancelled_before = metric(
        server, "mlserve_request_failure_total", model=model, reason="cancelled"
    )
    with gate.closed(model):
        busy = _occupy(server, gate, model)
        try:
            with client_session:
                wait_until(lambda: inflight(server, model) >= queued + 1, "the requests queued")
            wait_until(lambda: inflight(server, model) <= 1, "the abandoned requests left")
        finally:
            gate.open(model)
            busy.join()
    after = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    ran = int(after.get("execution_count", 0)) - int(before.get("execution_count", 0))
    assert ran == 1  # the occupying request only
    cancelled = metric(server, "mlserve_request_failure_total", model=model, reason="cancelled")
    assert cancelled - cancelled_before == queued


@pytest.mark.parametrize("model", ["slow", "slow_alone"])
def test_a_request_whose_client_cancels_is_withdrawn_before_it_runs(
    batching_server: ServerProcess, gate: Gate, model: str
) -> None:
    """A gRPC client cancels a ModelInfer queued behind a busy instance: the
    request leaves the queue (counted a failure, reason cancelled) and never
    runs, with batching on or off (Triton cancels gRPC requests alike)."""

    @contextlib.contextmanager
    def cancelled_call() -> Iterator[None]:
        with grpc.insecure_channel(batching_server.grpc) as channel:
            infer = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=pb.ModelInferResponse.FromString,
            )
            call = infer.future(_slow_request(model), timeout=30)
            yield
            call.cancel()

    _check_withdrawn(batching_server, gate, model, 1, cancelled_call())


@pytest.mark.parametrize("model", ["slow", "slow_alone"])
def test_an_http_request_whose_client_leaves_is_withdrawn_before_it_runs(
    batching_server: ServerProcess, gate: Gate, model: str
) -> None:
    """An HTTP client closes its connection while its request is queued
    behind a busy instance (as a client does when its own timeout fires): the
    request leaves the queue, counted a failure with reason cancelled, and
    never runs, so an overloaded server does not compute answers nobody reads."""
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 512], "data": [1.0] * 512}]}
    ).encode()
    host, port = batching_server.http.rsplit(":", 1)

    @contextlib.contextmanager
    def closed_connection() -> Iterator[None]:
        with socket.create_connection((host, int(port))) as connection:
            connection.sendall(
                f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            yield

    _check_withdrawn(batching_server, gate, model, 1, closed_connection())


@pytest.mark.parametrize("model", ["slow_priority", "slow_alone"])
def test_a_stream_reset_with_requests_queued_withdraws_them(
    batching_server: ServerProcess, gate: Gate, model: str
) -> None:
    """A ModelStreamInfer stream sends three requests that queue behind a busy
    instance, then its client cancels the stream: the three leave the queue
    (counted failures, reason cancelled) and never run, batching on or off."""
    release = threading.Event()

    def messages() -> Iterator[pb.ModelInferRequest]:
        for _ in range(3):
            yield _slow_request(model)
        release.wait(30)  # the stream stays open (not half-closed) until cancelled

    @contextlib.contextmanager
    def cancelled_stream() -> Iterator[None]:
        try:
            with grpc.insecure_channel(batching_server.grpc) as channel:
                stream = channel.stream_stream(
                    "/inference.GRPCInferenceService/ModelStreamInfer",
                    request_serializer=lambda m: m.SerializeToString(),
                    response_deserializer=pb.ModelStreamInferResponse.FromString,
                )
                call = stream(messages(), timeout=30)
                yield
                call.cancel()
        finally:
            release.set()

    _check_withdrawn(batching_server, gate, model, 3, cancelled_stream())


def _small_slow_input() -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("x", [1, 512], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 512), np.float32))
    return tensor


def test_full_queue_answers_resource_exhausted_and_429(
    batching_server: ServerProcess, gate: Gate
) -> None:
    with gate.closed("slow"):
        busy = _occupy(batching_server, gate)
        client = grpcclient.InferenceServerClient(batching_server.grpc)
        queued = threading.Thread(target=lambda: client.infer("slow", [_small_slow_input()]))
        try:
            queued.start()  # fills the one queue slot
            wait_until(lambda: inflight(batching_server, "slow") >= 2, "the queue slot filled")
            with pytest.raises(grpcclient.InferenceServerException) as info:
                client.infer("slow", [_small_slow_input()])
            assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
            assert "queue of this model is full" in info.value.message()
            body = json.dumps(
                {
                    "inputs": [
                        {"name": "x", "datatype": "FP32", "shape": [1, 512], "data": [0.0] * 512}
                    ]
                }
            ).encode()
            request = urllib.request.Request(
                f"http://{batching_server.http}/v2/models/slow/infer", data=body, method="POST"
            )
            with pytest.raises(urllib.error.HTTPError) as http_info:
                urllib.request.urlopen(request)
            with http_info.value as error:
                assert error.code == 429
                assert "full" in json.loads(error.read())["error"]
        finally:
            gate.open("slow")
            queued.join()
            busy.join()
    assert metric(batching_server, "mlserve_request_shed_total", model="slow") >= 2


def _executions(client: grpcclient.InferenceServerClient, model: str) -> int:
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(stats.get("execution_count", 0))


def test_expired_requests_are_dropped_before_compute(
    batching_server: ServerProcess, gate: Gate
) -> None:
    """Requests with a 20 ms V2 timeout queue behind a run held at the gate:
    each is answered DEADLINE_EXCEEDED / 504 while the gate is still closed
    (the queue's own timer ends it), and none reaches the model."""
    client = grpcclient.InferenceServerClient(batching_server.grpc)
    before = _executions(client, "slow")
    http = httpclient.InferenceServerClient(batching_server.http)
    tensor = httpclient.InferInput("x", [1, 512], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 512), np.float32))
    with gate.closed("slow"):
        busy = _occupy(batching_server, gate)
        try:
            with pytest.raises(grpcclient.InferenceServerException) as info:
                client.infer("slow", [_small_slow_input()], timeout=20_000)  # V2 timeout, in us
            assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED", info.value.message()
            with pytest.raises(httpclient.InferenceServerException) as http_info:
                http.infer("slow", [tensor], timeout=20_000)
            assert http_info.value.status() == "504"
        finally:
            gate.open("slow")
            busy.join()
    # Only the occupying request ran: the expired ones never reached the model.
    assert _executions(client, "slow") - before == 1
    assert metric(batching_server, "mlserve_request_expired_total", model="slow") >= 2


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_higher_priority_request_overtakes_the_queue(
    batching_server: ServerProcess, gate: Gate, protocol: str
) -> None:
    """Three 512-row requests at the default (lower) level queue behind a
    256-row run held at the gate; a 1-row one sent after them with V2
    parameter `priority: 1` runs next. The gate then lets runs under 512
    rows go: the occupying run ends, the high-priority request is answered,
    and a low one is held at the gate, unanswered, until the test opens it."""
    answered: queue.Queue[str] = queue.Queue()

    def infer(name: str, rows: int, priority: int = 0) -> None:
        x = np.ones((rows, 512), np.float32)
        if protocol == "grpc":
            client = grpcclient.InferenceServerClient(batching_server.grpc)
            tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            client.infer("slow_priority", [tensor], priority=priority)
        else:
            http = httpclient.InferenceServerClient(batching_server.http)
            http_tensor = httpclient.InferInput("x", list(x.shape), "FP32")
            http_tensor.set_data_from_numpy(x)
            http.infer("slow_priority", [http_tensor], priority=priority)
        answered.put(name)

    threads = [threading.Thread(target=infer, args=(f"low{i}", 512)) for i in range(3)]
    threads.append(threading.Thread(target=infer, args=("high", 1, 1)))
    with gate.closed("slow_priority"):
        busy = _occupy(batching_server, gate, "slow_priority", rows=256)
        try:
            for count, thread in enumerate(threads, start=2):
                thread.start()  # one at a time: the lows queue before the high one
                wait_until(
                    lambda n=count: inflight(batching_server, "slow_priority") >= n,
                    f"request {count} queued",
                )
            held = gate.held("slow_priority")
            gate.close("slow_priority", min_rows=512)  # the 256-row run goes
            assert answered.get(timeout=60) == "high"
            gate.wait_held("slow_priority", held)  # a low one now waits at the gate
            assert answered.empty(), "a low-priority request ran before the gate opened"
        finally:
            gate.open("slow_priority")
            busy.join()
            for thread in threads:
                thread.join()
    assert sorted(answered.get_nowait() for _ in range(3)) == ["low0", "low1", "low2"]


@pytest.mark.parametrize("model", ["slow", "slow_alone"])
def test_a_grpc_deadline_that_passes_in_the_queue_skips_compute(
    batching_server: ServerProcess, gate: Gate, model: str
) -> None:
    """The gRPC deadline (the grpc-timeout header) bounds a request as the V2
    `timeout` does: one that runs out while queued behind a run held at the
    gate is answered DEADLINE_EXCEEDED by the server and never computed, with
    batching on or off. The client here never cancels, so only the server's
    own deadline can end the request. The gate opens only once that deadline
    has passed: the request was admitted (counted in flight) before the test
    read the clock, so its deadline is at most that long after the reading.

    The premise is that the request reaches the queue before its deadline.
    On a loaded machine a 30 ms one may run out first (grpcio's core then
    answers it before mlserve sees it, or the native transport refuses it on
    arrival): then it is tried again with ten times the deadline."""
    client = grpcclient.InferenceServerClient(batching_server.grpc)
    request = grpc_message(_slow_request(model).SerializeToString())
    with gate.closed(model):
        busy = _occupy(batching_server, gate, model)
        raw = RawH2(int(batching_server.grpc.rsplit(":", 1)[1]), timeout_s=60)
        try:
            for attempt, deadline_ms in enumerate((30, 300, 3000)):
                sid = 2 * attempt + 1
                before = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
                raw.request(sid, request, extra=[("grpc-timeout", f"{deadline_ms}m")])

                def queued_or_answered(sid: int = sid) -> bool:
                    if inflight(batching_server, model) >= 2:
                        return True
                    raw.read_for(0.001)
                    answered = raw.answers.get(sid)
                    return answered is not None and answered.ended

                wait_until(queued_or_answered, "the request queued or answered")
                if inflight(batching_server, model) >= 2:
                    break
                assert raw.answer(sid).header("grpc-status") == "4"  # ran out on its way
            else:
                pytest.fail("a request with a 3 s deadline never reached the queue in time")
            past_deadline = time.monotonic() + deadline_ms / 1000
            wait_until(lambda: time.monotonic() > past_deadline, "its deadline passed")
            gate.open(model)
            answer = raw.answer(sid, timeout_s=60)
        finally:
            gate.open(model)
            raw.close()
            busy.join()
    assert answer.header("grpc-status") == "4", answer.headers  # DEADLINE_EXCEEDED
    after = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    # Only the occupying request ran, which began before `before`.
    assert int(after["execution_count"]) - int(before.get("execution_count", 0)) == 1
    failed = int(after["inference_stats"]["fail"].get("count", 0)) - int(
        before["inference_stats"]["fail"].get("count", 0)
    )
    assert failed == 1


@pytest.mark.parametrize("model", ["slow_ordered", "slow_unordered"])
def test_preserve_ordering_holds_a_stream_s_answers_in_request_order(
    batching_server: ServerProcess, gate: Gate, model: str
) -> None:
    """On one ModelStreamInfer stream, a 512-row request and then a 1-row one,
    each on its own instance; the gate holds runs of 512 rows, so the short
    one is done first (the model's execution count says so). With
    preserve_ordering its answer waits for the long one's; without, it comes
    at once (which shows the test's premise holds)."""
    client = grpcclient.InferenceServerClient(batching_server.grpc)
    order: queue.Queue[str] = queue.Queue()
    before = _executions(client, model)

    def answered(result: object, error: object) -> None:
        assert error is None, error
        order.put(result.get_response().id)  # type: ignore[attr-defined]

    client.start_stream(callback=answered)
    try:
        with gate.closed(model, min_rows=512):
            for request_id, rows in (("long", 512), ("short", 1)):
                tensor = grpcclient.InferInput("x", [rows, 512], "FP32")
                tensor.set_data_from_numpy(np.ones((rows, 512), np.float32))
                client.async_stream_infer(model, [tensor], request_id=request_id)
            gate.wait_held(model)
            wait_until(lambda: _executions(client, model) > before, "the short request ran")
            if model == "slow_unordered":
                assert order.get(timeout=60) == "short"
        got = [order.get(timeout=60) for _ in range(2 if model == "slow_ordered" else 1)]
    finally:
        client.stop_stream()
    assert got == (["long", "short"] if model == "slow_ordered" else ["long"])


def test_an_expired_request_is_counted_under_its_priority(
    batching_server: ServerProcess, gate: Gate
) -> None:
    """mlserve_request_expired_total carries the request's priority as a label."""
    labels = {"model": "slow_priority", "priority": "1"}
    expired_before = metric(batching_server, "mlserve_request_expired_total", **labels)
    client = grpcclient.InferenceServerClient(batching_server.grpc)
    tensor = _small_slow_input()
    with gate.closed("slow_priority"):
        busy = _occupy(batching_server, gate, "slow_priority")
        try:
            with pytest.raises(grpcclient.InferenceServerException) as info:
                client.infer("slow_priority", [tensor], priority=1, timeout=20_000)
            assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED", info.value.message()
        finally:
            gate.open("slow_priority")
            busy.join()
    expired = metric(batching_server, "mlserve_request_expired_total", **labels)
    assert expired - expired_before == 1


def test_bad_schedule_parameters(batching_server: ServerProcess) -> None:
    body = json.dumps(
        {
            "parameters": {"priority": "high"},
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}],
        }
    ).encode()
    request = urllib.request.Request(
        f"http://{batching_server.http}/v2/models/mlp_batched/infer", data=body, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request)
    with info.value as error:
        assert error.code == 400
        assert re.search("priority.*non-negative integer", json.loads(error.read())["error"])


def test_latency_budget_refuses_up_front_with_retry_after(tmp_path: Path) -> None:
    """A model with max_latency_ms learns its compute time, then refuses work
    that would finish late (UNAVAILABLE / 503 + Retry-After) instead of
    queueing it. Its instance is held at the gate while 64-row requests are
    sent one at a time: each queued one adds a full batch to the predicted
    wait, so one is refused once the queue ahead would take longer than the
    budget, whatever this machine's speed; the first is always admitted (one
    batch of 64 rows takes a few tens of ms, the budget is 500)."""
    examples.write_model(
        tmp_path / "models",
        "budget",
        examples.matmul_chain_model(512, 128),
        config="max_batch_size: 64\nexecution: threads\ndynamic_batching:\n  max_latency_ms: 500\n",
    )
    gate = Gate(tmp_path / "gate")
    server = start_server(tmp_path / "models", gate=gate)
    try:
        client = grpcclient.InferenceServerClient(server.grpc)
        for n in (1, 8, 16, 32, 64, 4, 48, 24, 64, 2, 40, 12):  # teach it the a*n + b line
            tensor = grpcclient.InferInput("x", [n, 512], "FP32")
            tensor.set_data_from_numpy(np.ones((n, 512), np.float32))
            client.infer("budget", [tensor])
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "datatype": "FP32",
                        "shape": [64, 512],
                        "parameters": {"binary_data_size": 64 * 512 * 4},
                    }
                ]
            }
        )
        body = header.encode() + np.ones((64, 512), np.float32).tobytes()
        host, port = server.http.rsplit(":", 1)
        outcomes: queue.Queue[tuple[int, str | None]] = queue.Queue()

        def send() -> None:
            import http.client

            connection = http.client.HTTPConnection(host, int(port), timeout=120)
            connection.request(
                "POST",
                "/v2/models/budget/infer",
                body=body,
                headers={"Inference-Header-Content-Length": str(len(header))},
            )
            response = connection.getresponse()
            response.read()
            outcomes.put((response.status, response.getheader("Retry-After")))
            connection.close()

        threads: list[threading.Thread] = []
        refused: tuple[int, str | None] | None = None
        with gate.closed("budget"):
            try:
                while refused is None and len(threads) < 200:
                    threads.append(threading.Thread(target=send))
                    threads[-1].start()
                    wait_until(
                        lambda: inflight(server, "budget") >= len(threads) or not outcomes.empty(),
                        "the request queued or was refused",
                    )
                    if not outcomes.empty():
                        refused = outcomes.get()
            finally:
                gate.open("budget")
                for thread in threads:
                    thread.join()
        assert refused is not None, "200 full batches queued and none was refused"
        status, retry_after = refused
        assert status == 503
        assert retry_after is not None and int(retry_after) >= 1
        admitted = [outcomes.get_nowait() for _ in range(len(threads) - 1)]
        assert admitted, "the first request, with nothing ahead of it, was refused"
        # Every admitted request is served once the gate opens. (Not checked:
        # a request after them. The run held at the gate taught the latency
        # model that 64 rows take as long as the test held it.)
        assert {status for status, _ in admitted} == {200}
        assert metric(server, "mlserve_request_shed_total", model="budget") == 1
    finally:
        server.terminate()
