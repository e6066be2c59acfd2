"""The native gRPC transport against malformed and abusive HTTP/2 and gRPC
input from a raw client: every case gets a clear answer (a grpc-status with a
message naming the problem, or GOAWAY for connection-level errors), the server
never crashes or hangs, and it keeps serving well-formed clients. Also:
compressed requests, keepalive PINGs, GOAWAY on shutdown and the asyncio
tritonclient. Memory and flow control under clients that do not read:
test_native_backpressure.py."""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import hpack
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
from hyperframe.frame import GoAwayFrame, PingFrame, SettingsFrame, WindowUpdateFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlserve.proto import grpc_service_pb2 as pb
from mlserve.runtime import grpc_native
from tests.conftest import ServerProcess, metric, start_server, succeeded, wait_until
from tests.gate import Gate
from tests.integration.h2_raw import INFER, RawH2, grpc_message
from tests.integration.native_helpers import (
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


def _status(server: ServerProcess, stream: int, send: list, timeout_s: float = 5.0) -> tuple:
    client = RawH2(port(server))
    try:
        client.send(*send)
        answer = client.answer(stream, timeout_s)
        return answer.header(":status"), answer.header("grpc-status"), answer.header("grpc-message")
    finally:
        client.close()


# -- gRPC framing: a clear status per stream ---------------------------------------


def _case(name: str) -> list:
    """The frames of one malformed request, its expected grpc-status and words."""
    raw = RawH2.__new__(RawH2)  # only for its frame builders (no connection)
    raw.encoder = hpack.Encoder()  # fresh: only this case's headers go through it
    body = mlp_request()
    cases = {
        "truncated message": lambda: (
            [*raw.headers(1), RawH2.data(1, grpc_message(body[:10], length=len(body)))],
            "13",
            "ended inside a gRPC message",
        ),
        "bad compressed flag": lambda: (
            [*raw.headers(1), RawH2.data(1, grpc_message(body, flag=2))],
            "13",
            "invalid gRPC compressed-flag 2",
        ),
        "compressed without encoding": lambda: (
            [*raw.headers(1), RawH2.data(1, grpc_message(gzip.compress(body), flag=1))],
            "13",
            "compressed message without a grpc-encoding",
        ),
        "unsupported encoding": lambda: (
            [
                *raw.headers(1, extra=[("grpc-encoding", "br")]),
                RawH2.data(1, grpc_message(b"xx", flag=1)),
            ],
            "12",
            "grpc-encoding 'br' is not supported",
        ),
        "corrupt gzip": lambda: (
            [
                *raw.headers(1, extra=[("grpc-encoding", "gzip")]),
                RawH2.data(1, grpc_message(b"not gzip at all", flag=1)),
            ],
            "13",
            "cannot decompress the gzip message",
        ),
        "gzip bomb": lambda: (
            [
                *raw.headers(1, extra=[("grpc-encoding", "gzip")]),
                RawH2.data(1, grpc_message(gzip.compress(bytes(8 * LIMIT)), flag=1)),
            ],
            "3",
            "over the server's limit of 1048576 bytes once decompressed",
        ),
        "declared size over the limit": lambda: (
            [*raw.headers(1), RawH2.data(1, grpc_message(b"", length=LIMIT + 1), end_stream=False)],
            "3",
            "ModelInferRequest is 1048577 bytes, over the server's limit of 1048576",
        ),
        "no message": lambda: ([*raw.headers(1, end_stream=True)], "12", "got no request message"),
        "two messages on a unary call": lambda: (
            [*raw.headers(1), RawH2.data(1, grpc_message(body) * 2)],
            "12",
            "more than one request message",
        ),
        "not protobuf": lambda: (
            [*raw.headers(1), RawH2.data(1, grpc_message(b"\xff\xff\xff\xff"))],
            "3",
            "ModelInferRequest is not a valid protobuf message",
        ),
        "unknown method": lambda: (
            [*raw.headers(1, path="/inference.GRPCInferenceService/Nope", end_stream=True)],
            "12",
            "unknown method /inference.GRPCInferenceService/Nope",
        ),
        "malformed grpc-timeout": lambda: (
            [*raw.headers(1, extra=[("grpc-timeout", "soon")]), RawH2.data(1, grpc_message(body))],
            "13",
            "malformed grpc-timeout header",
        ),
        "metadata over the limit": lambda: (
            [*raw.headers(1, extra=[("x-big", "v" * 20_000)]), RawH2.data(1, grpc_message(body))],
            "8",
            "request metadata is over the server's limit of 16384 bytes",
        ),
        "expired grpc-timeout": lambda: (
            [*raw.headers(1, extra=[("grpc-timeout", "1n")]), RawH2.data(1, grpc_message(body))],
            "4",
            "",
        ),
    }
    return list(cases[name]())


CASES = [
    "truncated message",
    "bad compressed flag",
    "compressed without encoding",
    "unsupported encoding",
    "corrupt gzip",
    "gzip bomb",
    "declared size over the limit",
    "no message",
    "two messages on a unary call",
    "not protobuf",
    "unknown method",
    "malformed grpc-timeout",
    "metadata over the limit",
    "expired grpc-timeout",
]


@pytest.mark.parametrize("name", CASES)
def test_malformed_grpc_gets_a_status_naming_the_problem(native: ServerProcess, name: str) -> None:
    frames, code, words = _case(name)
    http_status, grpc_status, message = _status(native, 1, frames)
    assert http_status == "200"
    assert grpc_status == code, (name, grpc_status, message)
    assert words in (message or "").replace("%20", " ").replace("%27", "'")
    assert_serving(native)


def test_non_grpc_content_type_is_415(native: ServerProcess) -> None:
    raw = RawH2(port(native))
    raw.send(*raw.headers(1, content_type="application/json", end_stream=True))
    answer = raw.answer(1)
    assert answer.header(":status") == "415"
    assert "application/grpc" in (answer.header("grpc-message") or "")
    raw.close()


def test_compressed_requests_are_served(native: ServerProcess) -> None:
    """gzip and deflate from grpcio's own compression, and by hand."""
    for compression in (grpc.Compression.Gzip, grpc.Compression.Deflate):
        with grpc.insecure_channel(native.grpc, compression=compression) as channel:
            call = channel.unary_unary(INFER)
            reply = pb.ModelInferResponse.FromString(call(mlp_request(3), timeout=10))
            assert list(reply.outputs[0].shape) == [3, 10]
    raw = RawH2(port(native))
    deflated = zlib.compress(mlp_request())
    raw.send(
        *raw.headers(1, extra=[("grpc-encoding", "deflate")]),
        RawH2.data(1, grpc_message(deflated, flag=1)),
    )
    answer = raw.answer(1)
    assert answer.header("grpc-status") == "0"
    reply = pb.ModelInferResponse.FromString(answer.data[5:])
    assert list(reply.outputs[0].shape) == [1, 10]
    raw.close()


def test_message_split_across_many_data_frames(native: ServerProcess) -> None:
    raw = RawH2(port(native))
    message = grpc_message(mlp_request(4))
    frames = [
        RawH2.data(1, message[i : i + 7], end_stream=False) for i in range(0, len(message), 7)
    ]
    raw.send(*raw.headers(1), *frames, RawH2.data(1, b""))
    answer = raw.answer(1)
    assert answer.header("grpc-status") == "0"
    assert list(pb.ModelInferResponse.FromString(answer.data[5:]).outputs[0].shape) == [4, 10]
    raw.close()


@pytest.mark.parametrize("piece", [3, 5, 700])
def test_streamed_messages_split_anywhere_arrive_intact(native: ServerProcess, piece: int) -> None:
    """Three requests of different sizes on one ModelStreamInfer, cut into
    DATA frames of `piece` bytes (3: every 5-byte prefix is cut; 700: a few
    frames per message): each answer equals the one for the same request sent
    whole."""
    stream_path = "/inference.GRPCInferenceService/ModelStreamInfer"
    requests = []
    for index, rows in enumerate((1, 8, 3)):
        request = pb.ModelInferRequest(model_name="mlp", id=str(index))
        request.inputs.add(name="x", datatype="FP32", shape=[rows, 64])
        values = np.arange(rows * 64, dtype=np.float32).reshape(rows, 64) / (index + 7)
        request.raw_input_contents.append(values.tobytes())
        requests.append(grpc_message(request.SerializeToString()))
    raw = RawH2(port(native))
    whole_frames = [RawH2.data(1, r, end_stream=False) for r in requests]  # one message each
    raw.send(*raw.headers(1, path=stream_path), *whole_frames, RawH2.data(1, b""))
    whole = stream_answers(raw.answer(1).data)
    body = b"".join(requests)
    frames = [
        RawH2.data(3, body[i : i + piece], end_stream=False) for i in range(0, len(body), piece)
    ]
    raw.send(*raw.headers(3, path=stream_path), *frames, RawH2.data(3, b""))
    split = stream_answers(raw.answer(3).data)
    raw.close()
    # Answered as each is done, not in order: matched by id.
    whole.sort(key=lambda a: a.id)
    split.sort(key=lambda a: a.id)
    assert [a.id for a in split] == ["0", "1", "2"]
    assert [a.raw_output_contents for a in split] == [a.raw_output_contents for a in whole]
    assert [list(a.outputs[0].shape) for a in split] == [[1, 10], [8, 10], [3, 10]]


# -- connection-level abuse: GOAWAY or close, and the server goes on ------------


def test_truncated_frame_then_hang_up(native: ServerProcess) -> None:
    raw = RawH2(port(native))
    raw.send_raw(b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + bytes(4))  # 4 of 8 bytes
    raw.read_for(0.2)
    assert not raw.closed  # a frame in transit is not an error; the server waits for it
    raw.close()
    assert_serving(native)


def test_garbage_instead_of_the_preface_closes_the_connection(native: ServerProcess) -> None:
    raw = RawH2(port(native), preface=False)
    raw.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(64))
    assert raw.read_until_closed()
    raw.close()
    assert_serving(native)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(b"\x10\x00\x00\x00\x00\x00\x00\x00\x01" + bytes(64), id="oversized-frame"),
        pytest.param(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x", id="data-on-stream-0"),
        pytest.param(b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" + bytes(4), id="zero-window-update"),
        pytest.param(b"\x00\x00\x04\x06\x00\x00\x00\x00\x00" + bytes(4), id="short-ping"),
        pytest.param(b"\x00\x00\x05\x00\x01\x00\x00\x00\x02hello", id="data-on-idle-stream"),
    ],
)
def test_protocol_errors_get_goaway(native: ServerProcess, frame: bytes) -> None:
    raw = RawH2(port(native))
    raw.send_raw(frame)
    assert raw.read_until_closed()
    assert isinstance(raw.goaway, GoAwayFrame) and raw.goaway.error_code != 0
    raw.close()
    assert_serving(native)


def test_rapid_reset_flood_is_cut_off(native: ServerProcess) -> None:
    """CVE-2023-44487: streams opened and reset at once, thousands of times."""
    raw = RawH2(port(native))
    body = grpc_message(mlp_request())
    batch = []
    for i in range(3000):
        sid = 2 * i + 1
        batch += [*raw.headers(sid), RawH2.data(sid, body, end_stream=False), RawH2.rst(sid)]
    try:
        for start in range(0, len(batch), 300):
            raw.send(*batch[start : start + 300])
    except OSError:
        pass  # the server may close first
    assert raw.read_until_closed()
    # nghttp2's limit (a burst of 1,000 resets, then 33/s) ends the connection
    # with GOAWAY long before the 3,000th stream.
    assert raw.goaway is not None and raw.goaway.error_code != 0
    assert raw.goaway.last_stream_id < 2 * 1100
    raw.close()
    assert_serving(native)


def test_reset_mid_message_leaves_the_connection_usable(native: ServerProcess) -> None:
    raw = RawH2(port(native))
    message = grpc_message(mlp_request())
    raw.send(*raw.headers(1), RawH2.data(1, message[:20], end_stream=False), RawH2.rst(1))
    raw.send(*raw.headers(3), RawH2.data(3, message))
    assert raw.answer(3).header("grpc-status") == "0"
    raw.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    frames=st.lists(
        st.tuples(
            st.integers(0, 12),  # frame type, including unknown ones
            st.integers(0, 255),  # flags
            st.integers(0, 9),  # stream id
            st.binary(max_size=64),
        ),
        max_size=12,
    ),
    valid_first=st.booleans(),
)
def test_random_frames_never_break_the_server(
    native: ServerProcess, frames: list[tuple[int, int, int, bytes]], valid_first: bool
) -> None:
    raw = RawH2(port(native), timeout_s=2)
    try:
        data = b""
        if valid_first:
            data += b"".join(
                f.serialize() for f in [*raw.headers(1), RawH2.data(1, grpc_message(mlp_request()))]
            )
        for kind, flags, stream, payload in frames:
            data += len(payload).to_bytes(3, "big") + bytes([kind, flags])
            data += stream.to_bytes(4, "big") + payload
        raw.send_raw(data)
        raw.read_for(0.05)
    except OSError:
        pass
    finally:
        raw.close()
    assert_serving(native)


# -- connections: idle ones, keepalive, shutdown -----------------------------------


def test_keepalive_pings_idle_clients_and_drops_silent_ones(model_repository: Path) -> None:
    server = start_server(
        model_repository,
        "--grpc-impl",
        "native",
        "--grpc-keepalive-time",
        "200",
        "--grpc-keepalive-timeout",
        "300",
    )
    try:
        silent = RawH2(port(server))  # acknowledges SETTINGS, never a PING
        assert silent.read_until_closed(), "a client that never acks PINGs was kept"
        assert silent.pings(), "the server closed the connection without a PING first"
        silent.close()
        # grpcio acknowledges PINGs: an idle channel survives several keepalive rounds.
        client = grpcclient.InferenceServerClient(server.grpc)
        assert client.is_server_live()
        time.sleep(1.5)
        assert client.is_server_live()
        client.close()
    finally:
        server.terminate()


READ_TIMEOUT_S = 2.0
STEADY_GAP_S = 0.25  # a steady client's gaps: an eighth of the timeout


def test_a_client_silent_in_the_middle_of_a_message_is_closed_and_a_steady_one_is_not(
    model_repository: Path,
) -> None:
    """--grpc-read-timeout-secs: a connection holding part of a request
    message and silent that long is closed (its buffer freed for others);
    one sending its message slowly, in gaps well under the timeout, is
    answered. Closing happens no earlier than the timeout (how much later
    depends on the sweep and the machine: only a hang bound applies)."""
    server = start_server(
        model_repository,
        "--grpc-impl",
        "native",
        "--grpc-read-timeout-secs",
        str(int(READ_TIMEOUT_S)),
    )
    try:
        stalled = RawH2(port(server))
        stalled.send(
            *stalled.headers(1),
            RawH2.data(1, grpc_message(bytes(1024), length=1 << 20), end_stream=False),
        )
        started = time.monotonic()
        assert stalled.read_until_closed(), "a client silent mid-message was kept"
        assert time.monotonic() - started >= READ_TIMEOUT_S
        stalled.close()

        # Found by fuzzing: silent after 3 bytes of the 5-byte prefix, it was kept.
        prefix_only = RawH2(port(server))
        prefix_only.send(
            *prefix_only.headers(1), RawH2.data(1, grpc_message(b"abc")[:3], end_stream=False)
        )
        started = time.monotonic()
        assert prefix_only.read_until_closed(), "a client silent mid-prefix was kept"
        assert time.monotonic() - started >= READ_TIMEOUT_S
        prefix_only.close()

        steady = RawH2(port(server))
        message = grpc_message(mlp_request())
        steady.send(*steady.headers(3))
        # The 5-byte prefix split too: its first bytes are held until it is whole.
        pieces = [message[:3]] + [message[i : i + 24] for i in range(3, len(message), 24)]
        for piece in pieces[:-1]:
            steady.send(RawH2.data(3, piece, end_stream=False))
            time.sleep(STEADY_GAP_S)
        steady.send(RawH2.data(3, pieces[-1]))
        assert STEADY_GAP_S * (len(pieces) - 1) > READ_TIMEOUT_S  # longer in all
        answer = steady.answer(3)
        assert answer.header("grpc-status") == "0", answer.header("grpc-message")
        # Nothing is held once it was answered: idle past the timeout, the
        # connection stays (a prefix byte still counted would close it).
        time.sleep(READ_TIMEOUT_S * 2.5)
        steady.send(*steady.headers(5), RawH2.data(5, message))
        answer = steady.answer(5)
        assert answer.header("grpc-status") == "0", answer.header("grpc-message")
        steady.close()
        assert_serving(server)
    finally:
        server.terminate()


def test_shutdown_sends_goaway_and_finishes_in_flight_calls(tmp_path: Path) -> None:
    """Four calls in flight (held at the gate) when SIGTERM comes: the server
    sends GOAWAY, answers all four in full once they run, and exits 0."""
    from mlserve import examples

    examples.write_model(
        tmp_path / "models",
        "slow",
        examples.matmul_chain_model(512, 2),
        config="max_batch_size: 8\nexecution: threads\n",
    )
    gate = Gate(tmp_path / "gate")
    server = start_server(
        tmp_path / "models", "--grpc-impl", "native", "--exit-timeout-secs", "60", gate=gate
    )
    try:
        raw = RawH2(port(server))
        request = pb.ModelInferRequest(model_name="slow")
        request.inputs.add(name="x", datatype="FP32", shape=[4, 512])  # one DATA frame
        request.raw_input_contents.append(np.ones((4, 512), np.float32).tobytes())
        body = grpc_message(request.SerializeToString())
        with gate.closed("slow"):
            for sid in (1, 3, 5, 7):
                raw.send(*raw.headers(sid), RawH2.data(sid, body))
            wait_until(
                lambda: metric(server, "mlserve_inflight_requests", model="slow") >= 4,
                "the four calls in flight",
            )
            server.process.send_signal(signal.SIGTERM)
            server.wait_for_line("shutting down: draining")
        for sid in (1, 3, 5, 7):  # in flight before the GOAWAY: answered in full
            assert raw.answer(sid).header("grpc-status") == "0"
        assert raw.read_until_closed()
        assert raw.goaway is not None and raw.goaway.error_code == 0
        raw.close()
        assert server.process.wait(60) == 0
    finally:
        server.terminate()


def test_shutdown_delivers_the_last_answer_to_a_client_still_sending(tmp_path: Path) -> None:
    """The server is done with a connection (GOAWAY sent, its last stream
    answered) while the answer is still in its buffers, because the client
    reads slowly, and the client sends one more frame (a PING; grpcio sends
    WINDOW_UPDATEs as it reads). Closing the socket with those bytes unread
    makes the kernel reset the connection and drop the answer's unsent tail:
    the server must half-close instead and read until the client closes."""
    from mlserve import examples

    examples.write_model(
        tmp_path, "wide", examples.identity_model(dims=(1024,)), config="max_batch_size: 256\n"
    )
    server = start_server(tmp_path, "--grpc-impl", "native", "--exit-timeout-secs", "20")
    try:
        raw = RawH2(port(server), receive_buffer=4096, timeout_s=20)
        wide_open = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 2**31 - 1})
        raw.send(wide_open, WindowUpdateFrame(0, 2**31 - 1 - 65535))
        raw.read_for(0.2)  # the server's SETTINGS, acknowledged: its 1 MiB stream window
        request = pb.ModelInferRequest(model_name="wide")
        request.inputs.add(name="x", datatype="FP32", shape=[64, 1024])  # a 256 KiB answer
        request.raw_input_contents.append(np.arange(64 * 1024, dtype=np.float32).tobytes())
        body = grpc_message(request.SerializeToString())
        stream = "/inference.GRPCInferenceService/ModelStreamInfer"
        raw.send(
            *raw.headers(1, path=stream),
            *(
                RawH2.data(1, body[i : i + 16384], end_stream=False)
                for i in range(0, len(body), 16384)
            ),
        )
        wait_until(lambda: succeeded(server, "wide") == 1, "the stream's request answered")
        # The answer waits in the server's buffers: the client reads slowly.
        server.process.send_signal(signal.SIGTERM)
        server.wait_for_line("shutting down: draining")
        raw.send(RawH2.data(1, b""))  # half-close: the server ends the stream, and is done
        time.sleep(0.3)
        raw.send(PingFrame(0, b"12345678"))
        time.sleep(0.2)
        answer = raw.answer(1)
        assert answer.header("grpc-status") == "0", answer
        reply = pb.ModelStreamInferResponse.FromString(answer.data[5:])
        expected = np.arange(64 * 1024, dtype=np.float32).tobytes()
        assert reply.infer_response.raw_output_contents[0] == expected
        assert raw.read_until_closed()
        raw.close()
        assert server.process.wait(20) == 0
    finally:
        server.terminate()


def test_asyncio_tritonclient_unary_and_stream(native: ServerProcess) -> None:
    async def run() -> None:
        client = grpcclient_aio.InferenceServerClient(native.grpc)
        tensor = grpcclient_aio.InferInput("x", [1, 64], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 64), np.float32))
        assert await client.is_server_ready()
        results = await asyncio.gather(*(client.infer("mlp", [tensor]) for _ in range(20)))
        assert all(r.as_numpy("y").shape == (1, 10) for r in results)

        async def requests():  # type: ignore[no-untyped-def]
            for i in range(10):
                yield {"model_name": "mlp", "inputs": [tensor], "request_id": str(i)}

        seen = set()
        async for result, error in client.stream_infer(requests()):
            assert error is None
            seen.add(result.get_response().id)
            if len(seen) == 10:
                break
        assert seen == {str(i) for i in range(10)}
        await client.close()

    asyncio.run(run())


def test_ping_from_the_client_is_acknowledged(native: ServerProcess) -> None:
    raw = RawH2(port(native))
    raw.send(PingFrame(0, b"12345678"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        raw.read_for(0.1)
        acks = [f for f in raw.frames if isinstance(f, PingFrame) and "ACK" in f.flags]
        if acks:
            assert acks[0].opaque_data == b"12345678"
            break
    else:
        raise AssertionError("no PING ack")
    raw.close()


def test_many_streams_on_one_connection_at_once(native: ServerProcess) -> None:
    raw = RawH2(port(native))
    message = grpc_message(mlp_request())
    frames = []
    for i in range(200):
        frames += [*raw.headers(2 * i + 1), RawH2.data(2 * i + 1, message)]
    raw.send(*frames)
    for i in range(200):
        assert raw.answer(2 * i + 1, 10).header("grpc-status") == "0"
    raw.close()


def test_threads_of_clients_each_get_their_own_answer(native: ServerProcess) -> None:
    errors: list[str] = []

    def worker(rows: int) -> None:
        with grpc.insecure_channel(native.grpc) as channel:
            call = channel.unary_unary(INFER)
            for _ in range(20):
                reply = pb.ModelInferResponse.FromString(call(mlp_request(rows), timeout=10))
                if list(reply.outputs[0].shape) != [rows, 10]:
                    errors.append(f"rows {rows}: {list(reply.outputs[0].shape)}")

    threads = [threading.Thread(target=worker, args=(r,)) for r in (1, 2, 3, 5, 8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


@pytest.fixture(scope="module")
def inline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The MLP with batches run on the event loop thread, batching off and on."""
    from mlserve import examples

    root = tmp_path_factory.mktemp("inline")
    examples.write_model(root, "mlp", examples.mlp_model(), config="execution: inline\n")
    examples.write_model(
        root,
        "mlp_batched",
        examples.mlp_model(),
        config="execution: inline\nmax_batch_size: 32\ndynamic_batching: {}\n",
    )
    server = start_server(root, "--grpc-impl", "native")
    yield server
    server.terminate()


@pytest.mark.parametrize("model", ["mlp", "mlp_batched"])
def test_stream_answered_inline_in_the_read_that_ends_it(inline: ServerProcess, model: str) -> None:
    """Sixteen ModelStreamInfer messages and the half-close in one write: answers
    computed inline, during that same read, must not end the stream before the
    later messages reach the handler. Every message gets its answer, then OK."""
    messages = 16
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(np.ones((1, 64), np.float32).tobytes())
    body = grpc_message(request.SerializeToString()) * messages
    raw = RawH2(port(inline))
    raw.send(
        *raw.headers(1, path="/inference.GRPCInferenceService/ModelStreamInfer"),
        RawH2.data(1, body),
    )
    answer = raw.answer(1)
    raw.close()
    assert answer.header("grpc-status") == "0", answer.header("grpc-message")
    replies, at = [], 0
    while at < len(answer.data):
        size = int.from_bytes(answer.data[at + 1 : at + 5], "big")
        replies.append(pb.ModelStreamInferResponse.FromString(answer.data[at + 5 : at + 5 + size]))
        at += 5 + size
    assert len(replies) == messages
    assert all(r.error_message == "" for r in replies)
    assert all(list(r.infer_response.outputs[0].shape) == [1, 10] for r in replies)
