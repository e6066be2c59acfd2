"""The native gRPC transport against clients that send and do not read, or
read slowly: what the server holds stays bounded (answers waiting on a
client's flow-control window, unfinished requests, idle connections), other
clients are served meanwhile, and answers taken a little at a time arrive
whole."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hyperframe.frame import WindowUpdateFrame

from mlserve.proto import grpc_service_pb2 as pb
from mlserve.runtime import grpc_native
from tests.conftest import ServerProcess, start_server
from tests.integration.h2_raw import PREFACE, RawH2, grpc_message
from tests.integration.native_helpers import (
    FLOW_CONTROL_ERROR,
    LIMIT,
    assert_serving,
    mlp_request,
    port,
    start_native,
    stream_answers,
)

pytestmark = pytest.mark.skipif(not grpc_native.AVAILABLE, reason=grpc_native.UNAVAILABLE_REASON)


@pytest.fixture(autouse=True)
def _under_each_grpc_impl() -> None:
    """Once: these tests are about the native transport itself."""


@pytest.fixture(scope="module")
def native(model_repository: Path) -> Iterator[ServerProcess]:
    server = start_native(model_repository)
    yield server
    server.terminate()


def test_slow_reader_does_not_grow_memory_or_block_others(native: ServerProcess) -> None:
    """A client that sends 2,000 requests on one connection (twice the stream
    limit: the rest are refused) and reads nothing: the server answers others
    meanwhile and holds little (7 MiB of RSS growth measured here)."""
    rss_before = native.rss_kib()
    raw = RawH2(port(native))
    message = grpc_message(mlp_request(8))
    try:
        for batch in range(40):
            frames = []
            for i in range(50):
                sid = 2 * (batch * 50 + i) + 1
                frames += [*raw.headers(sid), RawH2.data(sid, message)]
            raw.send(*frames)
    except OSError:
        pass  # the server may stop reading from us: that is the point
    assert_serving(native)
    growth = native.rss_kib() - rss_before
    assert growth < 32 * 1024, f"server RSS grew {growth} KiB for one slow reader"
    raw.close()
    assert_serving(native)


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with `wide`: identity on 12,000 floats a row (48 KB answers)."""
    from mlserve import examples

    root = tmp_path_factory.mktemp("wide")
    examples.write_model(root, "wide", examples.identity_model("FP32", (12_000,)))
    server = start_server(root, "--grpc-impl", "native")
    yield server
    server.terminate()


def test_stream_that_never_reads_its_answers_is_held_back(wide: ServerProcess) -> None:
    """ModelStreamInfer with a client that sends and never reads: past 16 MiB of
    answers waiting on its flow-control window, the server holds back the
    connection window its requests need, and keeps reading (for the
    WINDOW_UPDATEs that would let those answers go). This client ignores flow
    control and sends on past the window: that breaks HTTP/2, so it gets
    GOAWAY FLOW_CONTROL_ERROR, what it sent is not kept, and others are served.
    (A grpc client that reads late gets every answer: test_batching.)"""
    native = wide
    rss_before = native.rss_kib()
    raw = RawH2(port(native), timeout_s=2)
    raw.read_for(0.1)
    request = pb.ModelInferRequest(model_name="wide")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 12_000])  # 48 KB answers
    request.raw_input_contents.append(np.ones((1, 12_000), np.float32).tobytes())
    message = grpc_message(request.SerializeToString())
    raw.send(*raw.headers(1, path="/inference.GRPCInferenceService/ModelStreamInfer"))
    frames = [
        RawH2.data(1, message[i : i + 16000], end_stream=False)
        for i in range(0, len(message), 16000)
    ]
    with contextlib.suppress(TimeoutError, OSError):  # the server may close first
        for _ in range(2000):  # 96 MB of requests, and of answers
            raw.send(*frames)
    raw.read_for(1)
    assert raw.goaway is not None and raw.goaway.error_code == FLOW_CONTROL_ERROR
    growth = native.rss_kib() - rss_before
    assert growth < 128 * 1024, f"server RSS grew {growth} KiB for one stream that never reads"
    other = RawH2(port(native))  # another client is served
    other.send(*other.headers(1), *frames[:-1], RawH2.data(1, frames[-1].data))
    answer = other.answer(1, 10)
    assert answer.header("grpc-status") == "0", answer.header("grpc-message")
    other.close()
    raw.close()


def test_unfinished_requests_are_bounded_per_connection(native: ServerProcess) -> None:
    """Streams that send most of a large message and stop: the connection may hold
    16 MiB of them (twice the 1 MiB limit, at least 16 MiB); past that, a stream
    is refused with RESOURCE_EXHAUSTED and its bytes are not kept."""
    raw = RawH2(port(native))
    raw.read_for(0.1)  # the server's SETTINGS and window
    chunk = 16_000
    part = LIMIT - 2 * chunk  # each stream stops short of its declared LIMIT bytes
    prefix = grpc_message(b"", length=LIMIT)
    streams = [2 * i + 1 for i in range(24)]
    for sid in streams:
        frames = [*raw.headers(sid), RawH2.data(sid, prefix, end_stream=False)]
        frames += [RawH2.data(sid, bytes(chunk), end_stream=False) for _ in range(part // chunk)]
        raw.send(*frames)
        raw.read_for(0.01)
    raw.read_for(0.5)
    refused = [sid for sid in streams if raw.answers.get(sid) and raw.answers[sid].ended]
    assert 0 < len(refused) <= 24 - 15, refused  # at least 15 streams' worth fit
    answer = raw.answers[refused[0]]
    assert answer.header("grpc-status") == "8"
    assert "on this connection already hold" in (answer.header("grpc-message") or "")
    # A complete request on the same connection is still served.
    raw.send(*raw.headers(101), RawH2.data(101, grpc_message(mlp_request())))
    assert raw.answer(101).header("grpc-status") == "0"
    raw.close()
    assert_serving(native)


def test_a_thousand_idle_connections_stay_cheap(native: ServerProcess) -> None:
    rss_before = native.rss_kib()
    sockets = []
    try:
        for _ in range(1000):
            sock = socket.create_connection(("127.0.0.1", port(native)), timeout=10)
            sock.sendall(PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            sockets.append(sock)
        for sock in sockets:  # every one got the server's SETTINGS: all accepted
            assert sock.recv(9)[3] == 4
        assert_serving(native)
        growth = native.rss_kib() - rss_before
        assert growth < 48 * 1024, f"1,000 idle connections cost {growth} KiB"
    finally:
        for sock in sockets:
            sock.close()
    assert_serving(native)


def test_stream_answers_taken_a_little_at_a_time_arrive_whole(wide: ServerProcess) -> None:
    """100 messages on one ModelStreamInfer, each answered with 48 KB, read
    through a window opened 20,000 bytes at a time: every DATA frame ends
    somewhere inside an answer, so the server hands its waiting answers to
    nghttp2 in parts, and the stream's list of them is trimmed as it drains.
    Every answer arrives whole, once, with its own request's data."""
    raw = RawH2(port(wide), timeout_s=10)
    raw.read_for(0.1)
    stream = "/inference.GRPCInferenceService/ModelStreamInfer"
    raw.send(*raw.headers(1, path=stream))
    count, step = 100, 20_000
    for i in range(count):
        request = pb.ModelInferRequest(model_name="wide", id=str(i))
        request.inputs.add(name="x", datatype="FP32", shape=[1, 12_000])
        request.raw_input_contents.append(np.full(12_000, i, np.float32).tobytes())
        body = grpc_message(request.SerializeToString())
        raw.send(
            *(
                RawH2.data(1, body[j : j + 16000], end_stream=False)
                for j in range(0, len(body), 16000)
            )
        )
    raw.send(RawH2.data(1, b""))
    deadline = time.monotonic() + 60
    while not (raw.answers.get(1) and raw.answers[1].ended):
        assert time.monotonic() < deadline and not raw.closed, "the stream did not end"
        before = len(raw.answers[1].data) if 1 in raw.answers else 0
        raw.read_for(0.05)
        taken = (len(raw.answers[1].data) if 1 in raw.answers else 0) - before
        if taken or before == 0:
            raw.send(WindowUpdateFrame(0, step), WindowUpdateFrame(1, step))
    answer = raw.answers[1]
    assert answer.header("grpc-status") == "0", answer.header("grpc-message")
    replies = stream_answers(answer.data)  # each without an error
    # In the order they were computed (clients match them by id): each once.
    assert sorted(int(r.id) for r in replies) == list(range(count))
    for reply in replies:
        got = np.frombuffer(reply.raw_output_contents[0], np.float32)
        assert got.shape == (12_000,) and (got == int(reply.id)).all(), f"answer {reply.id}"
    raw.close()
