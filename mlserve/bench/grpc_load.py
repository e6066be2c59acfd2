"""gRPC load on `grpc.aio` with raw-bytes methods: no serializer on either
side, so each request writes the ModelInferRequest bytes encoded once, and an
answer is judged by its status alone (unary) or by a scan of its first
protobuf field (streaming), never by parsing the tensors it carries.

Unary: every slot awaits ModelInfer in a loop on one channel (one HTTP/2
connection, many streams, as perf_analyzer and tritonclient do). Streaming:
every slot owns one ModelStreamInfer stream and keeps one request in flight on
it, so the concurrency means the same thing in both modes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import grpc.aio

from mlserve.bench.recorder import StepPlan, StepRecorder, wait_until
from mlserve.client import SERVICE

_now = time.monotonic_ns
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def stream_error(reply: bytes) -> str | None:
    """The error_message (field 1) of a serialized ModelStreamInferResponse, or
    None. Walks only the top-level fields: an answer is usually one tag, one
    length and a skip over infer_response (field 2)."""
    pos, size = 0, len(reply)
    while pos < size:
        tag, pos = _varint(reply, pos)
        wire = tag & 7
        if wire == 2:
            length, pos = _varint(reply, pos)
            if tag >> 3 == 1 and length:
                return reply[pos : pos + length].decode("utf-8", errors="replace")
            pos += length
        elif wire == 0:
            _, pos = _varint(reply, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            return f"malformed ModelStreamInferResponse (wire type {wire})"
    return None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


class GrpcLoad:
    """A worker's gRPC client: one channel for its life, streams per step."""

    def __init__(self, url: str, request: bytes, *, streaming: bool) -> None:
        self._url = url
        self._request = request
        self._streaming = streaming
        self._channel: grpc.aio.Channel | None = None
        self._streams: list[Any] = []
        self._slots = 0

    async def open(self) -> None:
        self._channel = grpc.aio.insecure_channel(self._url, options=CHANNEL_OPTIONS)
        await self._channel.channel_ready()

    def _open_stream(self) -> Any:
        assert self._channel is not None
        return self._channel.stream_stream(f"/{SERVICE}/ModelStreamInfer")()

    async def prepare(self, slots: int) -> None:
        self._slots = slots
        if self._streaming:
            self._streams = [self._open_stream() for _ in range(slots)]

    async def run(self, plan: StepPlan, recorder: StepRecorder) -> None:
        assert self._channel is not None
        await wait_until(plan.start_ns)
        if self._streaming:
            slots = [self._stream_slot(recorder, index) for index in range(self._slots)]
        else:
            call = self._channel.unary_unary(f"/{SERVICE}/ModelInfer")
            slots = [self._unary_slot(call, recorder) for _ in range(self._slots)]
        await asyncio.gather(*slots)
        streams, self._streams = self._streams, []
        await asyncio.gather(*(self._end_stream(stream) for stream in streams))

    async def _unary_slot(self, call: Any, recorder: StepRecorder) -> None:
        request = self._request
        may_send, record = recorder.may_send, recorder.record
        while may_send(start := _now()):
            try:
                await call(request)
            except grpc.aio.AioRpcError as exc:
                record(start, _now(), exc.code().name, exc.details() or "")
                continue
            record(start, _now())

    async def _stream_slot(self, recorder: StepRecorder, index: int) -> None:
        request = self._request
        may_send, record = recorder.may_send, recorder.record
        stream = self._streams[index]
        while may_send(start := _now()):
            try:
                await stream.write(request)
                reply = await stream.read()
            except grpc.aio.AioRpcError as exc:
                record(start, _now(), exc.code().name, exc.details() or "")
                stream = self._streams[index] = self._open_stream()
                continue
            if reply is grpc.aio.EOF:
                record(start, _now(), "stream ended", "the server closed ModelStreamInfer")
                stream = self._streams[index] = self._open_stream()
                continue
            error = stream_error(reply)
            if error is None:
                record(start, _now())
            else:
                record(start, _now(), "ModelStreamInfer error_message", error)

    @staticmethod
    async def _end_stream(stream: Any) -> None:
        try:
            await stream.done_writing()
            while await stream.read() is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError:
            stream.cancel()

    async def close(self) -> None:
        for stream in self._streams:
            stream.cancel()
        if self._channel is not None:
            await self._channel.close()
