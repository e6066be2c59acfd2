"""Dynamic batching and streaming on a real server: batches form from
queued requests and split back exactly."""

from __future__ import annotations

import json
import math
import queue
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

from mlserve.proto import grpc_service_pb2 as pb
from tests.conftest import (
    ServerProcess,
    infer_concurrently,
    metric,
    wait_until,
)
from tests.gate import Gate
from tests.integration.batching_support import (
    inflight,
    reference,
)
from tests.integration.h2_raw import RawH2, grpc_message


def _check_split_exactly(
    batching_repo: Path, model: str, inputs: list[np.ndarray], results: list[np.ndarray]
) -> None:
    expected = reference(batching_repo, np.concatenate(inputs), model)
    offset = 0
    for index, x in enumerate(inputs):
        np.testing.assert_allclose(
            results[index], expected[offset : offset + len(x)], rtol=1e-5, atol=1e-6
        )
        offset += len(x)


def _mixed_rows(count: int = 48) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.standard_normal((int(rng.integers(1, 4)), 64)).astype(np.float32) for _ in range(count)
    ]


@pytest.mark.parametrize(
    ("model", "instances"), [("mlp_threads", 1), ("mlp_padded", 1), ("mlp_triton", 2)]
)
def test_concurrent_requests_are_batched_and_split_exactly(
    batching_server: ServerProcess, batching_repo: Path, gate: Gate, model: str, instances: int
) -> None:
    """48 requests of 1-3 rows sent while the model's instances are held at
    the gate: all of them queue (a batch forms only when an instance is
    free), and once the gate opens they go in batches of up to 32 rows, each
    answer exactly its own rows. Besides the runs held at the gate (one per
    instance), every batch but the last of its turn is full to within a
    request: it closed because the next request's rows (3 at most) did not fit."""
    before = metric(batching_server, "mlserve_batch_requests_count", model=model)
    inputs = _mixed_rows()

    def queued_then_open() -> None:
        wait_until(lambda: inflight(batching_server, model) >= len(inputs), "requests queued")
        gate.open(model)

    with gate.closed(model):
        results = infer_concurrently(
            batching_server.grpc, model, inputs, while_waiting=queued_then_open
        )
    _check_split_exactly(batching_repo, model, inputs, results)
    batches = metric(batching_server, "mlserve_batch_requests_count", model=model) - before
    requests = metric(batching_server, "mlserve_batch_requests_sum", model=model)
    rows = sum(len(x) for x in inputs)
    assert batches <= instances + math.ceil(rows / (32 - 2)), f"{batches} batches"
    client = grpcclient.InferenceServerClient(batching_server.grpc)
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    assert int(stats["execution_count"]) == metric(
        batching_server, "mlserve_batch_requests_count", model=model
    )
    assert int(stats["inference_count"]) >= rows
    assert requests >= len(inputs)


def _answers_of_one_write(
    server: ServerProcess, model: str, inputs: list[np.ndarray]
) -> list[np.ndarray]:
    """Send every input as a ModelInfer on its own stream of one HTTP/2
    connection, all in one write, and return each answer's "y"."""
    raw = RawH2(int(server.grpc.rsplit(":", 1)[1]), timeout_s=60)
    try:
        frames = []
        for index, x in enumerate(inputs):
            request = pb.ModelInferRequest(model_name=model)
            request.inputs.add(name="x", datatype="FP32", shape=x.shape)
            request.raw_input_contents.append(x.tobytes())
            sid = 2 * index + 1
            frames += [
                *raw.headers(sid),
                RawH2.data(sid, grpc_message(request.SerializeToString())),
            ]
        raw.send(*frames)
        results = []
        for index, x in enumerate(inputs):
            answer = raw.answer(2 * index + 1, timeout_s=60)
            assert answer.header("grpc-status") == "0", answer.header("grpc-message")
            reply = pb.ModelInferResponse.FromString(answer.data[5:])
            results.append(
                np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(len(x), -1)
            )
        return results
    finally:
        raw.close()


@pytest.mark.parametrize("model", ["mlp_batched", "mlp_inline"])
def test_requests_read_in_one_turn_share_a_batch(
    batching_server: ServerProcess, batching_repo: Path, grpc_impl: str, model: str
) -> None:
    """mlp_inline runs its batches on the event loop thread (mlp_batched too,
    where `execution: auto` picks it), so no gate can hold them: it would
    hold the loop. The native transport hands every request of one read to
    the data plane in one call, and dispatch waits for the end of the turn,
    so 48 requests sent in one write share batches on a machine of any speed.
    grpcio hands the loop one request a turn: there, which requests share a
    batch depends on when they arrive, so only the answers are checked."""
    before = metric(batching_server, "mlserve_batch_requests_count", model=model)
    inputs = _mixed_rows()
    if grpc_impl == "native":
        results = _answers_of_one_write(batching_server, model, inputs)
    else:
        results = infer_concurrently(batching_server.grpc, model, inputs)
    _check_split_exactly(batching_repo, model, inputs, results)
    batches = metric(batching_server, "mlserve_batch_requests_count", model=model) - before
    if grpc_impl == "native":
        assert batches < len(inputs), "no two requests shared a batch"


def test_tritons_spellings_are_reported_back_in_tritons_model_config(
    batching_server: ServerProcess,
) -> None:
    config = httpclient.InferenceServerClient(batching_server.http).get_model_config("mlp_triton")
    batching = config["dynamic_batching"]
    assert batching["max_queue_delay_microseconds"] == 2000
    policy = batching["default_queue_policy"]
    assert policy["max_queue_size"] == 64
    assert policy["default_timeout_microseconds"] == 60_000_000
    assert policy["allow_timeout_override"] is True
    assert policy.get("timeout_action", "REJECT") == "REJECT"
    assert [(g["count"], g["kind"]) for g in config["instance_group"]] == [(2, "KIND_CPU")]


def test_streaming_with_tritonclient(batching_server: ServerProcess, batching_repo: Path) -> None:
    client = grpcclient.InferenceServerClient(batching_server.grpc)
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        rng = np.random.default_rng(1)
        inputs = {f"r{i}": rng.standard_normal((1, 64)).astype(np.float32) for i in range(40)}
        for request_id, x in inputs.items():
            tensor = grpcclient.InferInput("x", [1, 64], "FP32")
            tensor.set_data_from_numpy(x)
            client.async_stream_infer("mlp_batched", [tensor], request_id=request_id)
        bad = grpcclient.InferInput("x", [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
        client.async_stream_infer("mlp_batched", [bad], request_id="bad")
        got: dict[str, np.ndarray] = {}
        errors = []
        for _ in range(len(inputs) + 1):
            result, error = answers.get(timeout=30)
            if error is not None:
                errors.append(error)
            else:
                got[result.get_response().id] = result.as_numpy("y")  # type: ignore[attr-defined]
        assert len(errors) == 1 and "shape [1, 3]" in str(errors[0])
        assert set(got) == set(inputs)
        ref = reference(batching_repo, np.concatenate(list(inputs.values())))
        for index, request_id in enumerate(inputs):
            np.testing.assert_allclose(
                got[request_id], ref[index : index + 1], rtol=1e-5, atol=1e-6
            )
    finally:
        client.stop_stream()


STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"


def _stream_message(request_id: str, x: np.ndarray) -> bytes:
    request = pb.ModelInferRequest(model_name="mlp_batched", id=request_id)
    request.inputs.add(name="x", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.tobytes())
    return request.SerializeToString()


def test_stream_ends_ok_once_every_message_is_answered(
    batching_server: ServerProcess, batching_repo: Path
) -> None:
    """The client sends its messages and half-closes at once; the server still
    answers every one (a bad one with error_message) before it ends the
    stream with OK."""
    rng = np.random.default_rng(2)
    inputs = {f"m{i}": rng.standard_normal((1, 64)).astype(np.float32) for i in range(30)}
    messages = [_stream_message(i, x) for i, x in inputs.items()]
    messages.insert(7, _stream_message("bad", np.zeros((1, 3), np.float32)))
    with grpc.insecure_channel(batching_server.grpc) as channel:
        call = channel.stream_stream(
            STREAM,
            request_serializer=lambda m: m,
            response_deserializer=pb.ModelStreamInferResponse.FromString,
        )(iter(messages), timeout=30)
        answers = list(call)
        assert call.code() == grpc.StatusCode.OK
    assert len(answers) == len(messages)
    errors = {a.infer_response.id: a.error_message for a in answers if a.error_message}
    assert list(errors) == ["bad"] and "shape [1, 3]" in errors["bad"]
    got = {
        a.infer_response.id: np.frombuffer(a.infer_response.raw_output_contents[0], np.float32)
        for a in answers
        if not a.error_message
    }
    assert set(got) == set(inputs)
    expected = reference(batching_repo, np.concatenate(list(inputs.values())))
    for index, request_id in enumerate(inputs):
        np.testing.assert_allclose(got[request_id], expected[index], rtol=1e-5, atol=1e-6)


def test_a_stream_cancelled_mid_flight_leaves_nothing_behind(
    batching_server: ServerProcess,
) -> None:
    """A client that cancels its stream with messages still queued: the server
    runs or drops them, counts none of them in flight afterwards, and serves on."""
    x = np.ones((1, 64), np.float32)
    with grpc.insecure_channel(batching_server.grpc) as channel:
        call = channel.stream_stream(
            STREAM,
            request_serializer=lambda m: m,
            response_deserializer=pb.ModelStreamInferResponse.FromString,
        )(iter([_stream_message(f"c{i}", x) for i in range(200)]), timeout=30)
        next(call)  # the stream is served
        call.cancel()
    wait_until(
        lambda: inflight(batching_server, "mlp_batched") == 0,
        "requests of the cancelled stream left the server",
    )
    client = grpcclient.InferenceServerClient(batching_server.grpc)
    tensor = grpcclient.InferInput("x", [1, 64], "FP32")
    tensor.set_data_from_numpy(x)
    assert client.infer("mlp_batched", [tensor]).as_numpy("y").shape == (1, 10)


def _inferred(server: ServerProcess, model: str) -> int:
    with urllib.request.urlopen(f"http://{server.http}/v2/models/{model}/stats") as response:
        return int(json.load(response)["model_stats"][0]["inference_count"])


def test_a_stream_whose_client_never_reads_stops_being_read(
    batching_server: ServerProcess,
) -> None:
    """A grpc client streams 2,000 messages of 48 KB (96 MB, and as much in
    answers) and reads no answer: the server stops reading that stream once
    answers back up (native: 16 MiB waiting on the connection; grpcio: 256
    messages unanswered), so grpc's flow control stops the client's sending
    and what the server holds stays bounded. Once the client reads, every
    answer arrives and the stream ends OK."""
    request = pb.ModelInferRequest(model_name="wide")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 12_000])
    request.raw_input_contents.append(np.ones((1, 12_000), np.float32).tobytes())
    message = request.SerializeToString()
    sent = 0

    def messages() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(2000):
            sent += 1
            yield message

    before_kib, before_inferred = batching_server.rss_kib(), _inferred(batching_server, "wide")
    with grpc.insecure_channel(batching_server.grpc) as channel:
        call = channel.stream_stream(
            STREAM, request_serializer=lambda m: m, response_deserializer=lambda b: b
        )(messages(), timeout=60)
        previous = -1
        deadline = time.monotonic() + 60
        while (inferred := _inferred(batching_server, "wide")) != previous:  # until it stalls
            assert time.monotonic() < deadline, "the server kept reading"
            previous = inferred
            time.sleep(0.5)
        assert inferred - before_inferred < 1000, f"{inferred} inferred, for a client not reading"
        assert sent < 2000
        growth_mib = (batching_server.rss_kib() - before_kib) / 1024
        assert growth_mib < 64, f"server RSS grew {growth_mib:.0f} MiB"
        answers = sum(1 for _ in call)
        assert answers == 2000 and call.code() == grpc.StatusCode.OK


def test_requests_of_different_widths_batch_apart_and_all_come_back_exact(
    batching_server: ServerProcess, gate: Gate
) -> None:
    """Concurrent requests of three widths and 1-3 rows, queued behind a run
    held at the gate: each answer is exactly its own input (a batch that
    mixed widths could not be gathered, and one split wrongly would hand rows
    to the wrong request), and once the gate opens each width's requests go
    in batches of up to 32 rows."""
    before = metric(batching_server, "mlserve_batch_requests_count", model="ragged")
    rng = np.random.default_rng(1)
    inputs = [
        rng.standard_normal((int(rng.integers(1, 4)), int(rng.choice([3, 5, 8])))).astype(
            np.float32
        )
        for _ in range(60)
    ]

    def queued_then_open() -> None:
        wait_until(lambda: inflight(batching_server, "ragged") >= len(inputs), "requests queued")
        gate.open("ragged")

    with gate.closed("ragged"):
        results = infer_concurrently(
            batching_server.grpc, "ragged", inputs, while_waiting=queued_then_open
        )
    for index, x in enumerate(inputs):
        np.testing.assert_array_equal(results[index], x)
    batches = metric(batching_server, "mlserve_batch_requests_count", model="ragged") - before
    rows_by_width: dict[int, int] = {}
    for x in inputs:
        rows_by_width[x.shape[1]] = rows_by_width.get(x.shape[1], 0) + len(x)
    full = sum(math.ceil(rows / (32 - 2)) for rows in rows_by_width.values())
    assert batches <= 1 + full, f"{batches} batches for {rows_by_width} rows by width"
