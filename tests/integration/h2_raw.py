"""A raw HTTP/2 client for the native transport's robustness tests: it sends
exactly the frames a test asks for, well-formed or not, and reads back what
the server answers (frames, and the decoded headers of a stream's answer)."""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass, field

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
INFER = "/inference.GRPCInferenceService/ModelInfer"
# How long a read waits for what the server must send: only a hang reaches it.
HANG_S = 30.0


def grpc_message(payload: bytes, *, flag: int = 0, length: int | None = None) -> bytes:
    """The 5-byte gRPC prefix (compressed-flag, big-endian length) and the payload."""
    size = len(payload) if length is None else length
    return bytes([flag]) + size.to_bytes(4, "big") + payload


@dataclass
class Answer:
    """What came back on one stream."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    data: bytes = b""
    ended: bool = False
    reset: int | None = None

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class RawH2:
    def __init__(
        self,
        port: int,
        *,
        timeout_s: float = 5.0,
        preface: bool = True,
        receive_buffer: int | None = None,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:  # before connecting: it sets the TCP window
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(timeout_s)
        self.sock.connect(("127.0.0.1", port))
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.buffer = b""
        self.frames: list[Frame] = []
        self.answers: dict[int, Answer] = {}
        self.goaway: GoAwayFrame | None = None
        self.closed = False
        self._header_block: tuple[int, bytes, bool] | None = None
        if preface:
            self.send_raw(PREFACE + SettingsFrame(0).serialize())

    # -- sending -------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, *frames: Frame) -> None:
        self.send_raw(b"".join(f.serialize() for f in frames))

    def headers(
        self,
        stream_id: int,
        *,
        path: str = INFER,
        extra: list[tuple[str, str]] | None = None,
        content_type: str = "application/grpc",
        end_stream: bool = False,
        max_frame: int = 16384,
    ) -> list[Frame]:
        block = self.encoder.encode(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", path),
                (":authority", "127.0.0.1"),
                ("content-type", content_type),
                ("te", "trailers"),
                *(extra or []),
            ]
        )
        chunks = [block[i : i + max_frame] for i in range(0, len(block), max_frame)] or [b""]
        first = HeadersFrame(stream_id, chunks[0])
        if end_stream:
            first.flags.add("END_STREAM")
        frames: list[Frame] = [first]
        for chunk in chunks[1:]:
            frames.append(ContinuationFrame(stream_id, chunk))
        frames[-1].flags.add("END_HEADERS")
        return frames

    @staticmethod
    def data(stream_id: int, payload: bytes, *, end_stream: bool = True) -> DataFrame:
        frame = DataFrame(stream_id, payload)
        if end_stream:
            frame.flags.add("END_STREAM")
        return frame

    @staticmethod
    def rst(stream_id: int, code: int = 8) -> RstStreamFrame:
        return RstStreamFrame(stream_id, code)

    def request(self, stream_id: int, body: bytes, **headers: object) -> None:
        """HEADERS then one DATA frame carrying `body`, ending the stream."""
        self.send(*self.headers(stream_id, **headers), self.data(stream_id, body))  # type: ignore[arg-type]

    # -- reading ---------------------------------------------------------------

    def _read_once(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self.closed:
            return False
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 16)
        except TimeoutError:
            return False
        except (ConnectionResetError, BrokenPipeError):
            self.closed = True
            return False
        if not chunk:
            self.closed = True
            return False
        self.buffer += chunk
        while len(self.buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
            if len(self.buffer) < 9 + length:
                break
            frame.parse_body(memoryview(self.buffer[9 : 9 + length]))
            self.buffer = self.buffer[9 + length :]
            self._on_frame(frame)
        return True

    def _on_frame(self, frame: Frame) -> None:
        self.frames.append(frame)
        if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
            ack = SettingsFrame(0)
            ack.flags.add("ACK")
            with contextlib.suppress(OSError):
                self.send(ack)
        elif isinstance(frame, GoAwayFrame):
            self.goaway = frame
        elif isinstance(frame, (HeadersFrame, ContinuationFrame)):
            sid = frame.stream_id
            if isinstance(frame, HeadersFrame):
                self._header_block = (sid, frame.data, "END_STREAM" in frame.flags)
            elif self._header_block is not None:
                start = self._header_block
                self._header_block = (sid, start[1] + frame.data, start[2])
            if "END_HEADERS" in frame.flags and self._header_block is not None:
                _, block, end = self._header_block
                self._header_block = None
                answer = self.answers.setdefault(sid, Answer())
                answer.headers += [(str(k), str(v)) for k, v in self.decoder.decode(block)]
                answer.ended = answer.ended or end
        elif isinstance(frame, DataFrame):
            answer = self.answers.setdefault(frame.stream_id, Answer())
            answer.data += frame.data
            answer.ended = answer.ended or "END_STREAM" in frame.flags
        elif isinstance(frame, RstStreamFrame):
            self.answers.setdefault(frame.stream_id, Answer()).reset = frame.error_code

    def answer(self, stream_id: int, timeout_s: float = HANG_S) -> Answer:
        """Read until `stream_id` is answered in full (or reset, or the connection ends)."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.answers.get(stream_id)
            if found is not None and (found.ended or found.reset is not None):
                return found
            if not self._read_once(deadline):
                raise AssertionError(
                    f"no answer on stream {stream_id} (closed={self.closed}, "
                    f"goaway={self.goaway}, frames={[type(f).__name__ for f in self.frames]})"
                )

    def read_until_closed(self, timeout_s: float = HANG_S) -> bool:
        """True if the server closed the connection within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not self.closed and time.monotonic() < deadline:
            self._read_once(deadline)
        return self.closed

    def read_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self._read_once(deadline):
            pass

    def pings(self) -> list[PingFrame]:
        return [f for f in self.frames if isinstance(f, PingFrame) and "ACK" not in f.flags]

    def close(self) -> None:
        self.sock.close()
