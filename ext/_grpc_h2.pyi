import asyncio
from collections.abc import Callable, Iterable
from typing import Any

def percent_encode(message: str) -> bytes: ...
def set_buffer_limit(limit: int) -> None: ...
def buffered_bytes() -> int: ...

class Route:
    handler: Callable[..., None]
    streaming: bool
    message_name: str
    abandoned: Callable[[H2Stream], None] | None
    def __init__(
        self,
        handler: Callable[..., None],
        streaming: bool,
        message_name: str,
        abandoned: Callable[[H2Stream], None] | None = None,
    ) -> None: ...

class H2Stream:
    stream_id: int
    route: Route
    path: bytes
    payload: bytes
    metadata: list[tuple[str, str]]
    deadline: float
    user: Any
    inflight: int
    remote_closed: bool
    @property
    def open(self) -> bool: ...
    def time_remaining(self) -> float | None: ...
    def metadata_value(self, key: str) -> str | None: ...
    def reply(self, message: bytes) -> None: ...
    def send(self, message: bytes) -> None: ...
    def finish(
        self, status: int, message: str = "", trailers: Iterable[tuple[str, str]] | None = None
    ) -> None: ...

class H2Connection(asyncio.Protocol):
    last_activity: float
    ping_sent: float
    pending_out: int
    inflight: int
    read_paused: bool
    holding: bool
    lingering: bool
    def __init__(
        self,
        routes: dict[bytes, Route],
        registry: set[Any],
        *,
        max_message: int,
        max_header_bytes: int = 16384,
        max_streams: int = 1000,
        max_buffered: int = 0,
        close_gently: Callable[[Any], Any] | None = None,
    ) -> None: ...
    def connection_made(self, transport: Any) -> None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> bool: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...
    def shutdown(self) -> None: ...
    def ping(self) -> None: ...
    def abort(self) -> None: ...
