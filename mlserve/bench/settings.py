"""What one `mlserve bench` run was asked to do, as one frozen value, and the
pure parsers that turn flag text into it. Kept apart from argparse so the
rules (what a shape or a concurrency list may look like) read in one place and
every error names the flag and the expected form."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mlserve.errors import InvalidRequest

Protocol = Literal["grpc", "http"]
HttpBody = Literal["binary", "json"]

DEFAULT_PORTS: dict[str, int] = {"grpc": 8001, "http": 8000}


@dataclass(frozen=True, slots=True)
class BenchSettings:
    """Everything a run needs; the JSON report repeats it under "settings"."""

    model: str
    url: str  # host:port, no scheme
    protocol: Protocol = "grpc"
    model_version: str = ""
    streaming: bool = False
    http_body: HttpBody = "binary"
    # Request shapes by input name; "" applies to every input not named.
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    datatypes: dict[str, str] = field(default_factory=dict)
    batch_size: int = 1
    input_data: Path | None = None
    concurrency: tuple[int, ...] = (1,)
    duration_s: float = 10.0
    requests: int | None = None  # a fixed count per level instead of duration_s
    warmup_s: float = 2.0
    processes: int = 1
    json_path: Path | None = None
    seed: int = 0

    def host_port(self) -> tuple[str, int]:
        host, _, port = self.url.rpartition(":")
        return host, int(port)


def available_cpus() -> int:
    """CPUs this process may run on (so `taskset -c 1 mlserve bench` means one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parse_url(text: str | None, protocol: Protocol) -> str:
    """'HOST[:PORT]' or 'http://HOST:PORT' -> 'HOST:PORT' (port by protocol if absent)."""
    default = DEFAULT_PORTS[protocol]
    if not text:
        return f"127.0.0.1:{default}"
    rest = text.split("://", 1)[-1].rstrip("/")
    if "/" in rest:
        raise InvalidRequest(f"-u/--url must be HOST:PORT, got {text!r} (no path)")
    host, sep, port = rest.rpartition(":")
    if not sep or "]" in port:  # no port, or a bare IPv6 address
        return f"{rest}:{default}"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidRequest(f"-u/--url: port must be 1-65535, got {port!r} in {text!r}")
    return f"{host or '127.0.0.1'}:{port}"


def parse_concurrency(text: str) -> tuple[int, ...]:
    """'1,8,32' or perf_analyzer's 'START:END[:STEP]' (linear, END included)."""
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            start, end = parts[0], parts[1]
            step = parts[2] if len(parts) == 3 else 1
            if step < 1 or end < start:
                raise ValueError
            levels = tuple(range(start, end + 1, step))
        else:
            levels = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise InvalidRequest(
            f"--concurrency must look like 1,8,32 or START:END[:STEP], got {text!r}"
        ) from None
    if not levels or min(levels) < 1:
        raise InvalidRequest(f"--concurrency levels must be >= 1, got {text!r}")
    return levels


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """'[NAME:]D1,D2,...' -> (name or "", dims); dims are the full request shape."""
    name, sep, dims = text.rpartition(":")
    if not sep:
        name, dims = "", text
    try:
        shape = tuple(int(d) for d in dims.split(",")) if dims.strip() else ()
    except ValueError:
        raise InvalidRequest(
            f"--shape must look like [NAME:]D1,D2 (e.g. x:1,64), got {text!r}"
        ) from None
    if any(d < 0 for d in shape):
        raise InvalidRequest(f"--shape {text!r}: dimensions must be concrete (>= 0)")
    return name, shape


def parse_datatype(text: str) -> tuple[str, str]:
    """'[NAME:]DATATYPE' -> (name or "", DATATYPE in upper case)."""
    from mlserve.runtime import datatypes

    name, _, datatype = text.rpartition(":")
    datatype = datatype.upper()
    if datatype not in datatypes.BY_NAME:
        raise InvalidRequest(
            f"--datatype {text!r}: unknown datatype; expected one of {', '.join(datatypes.NAMES)}"
        )
    return name, datatype


def check_settings(settings: BenchSettings) -> None:
    """Refuse combinations that cannot mean anything, before any connection."""
    if settings.duration_s <= 0:
        raise InvalidRequest(f"--duration must be > 0 seconds, got {settings.duration_s}")
    if settings.requests is not None and settings.requests < 1:
        raise InvalidRequest(f"--requests must be >= 1, got {settings.requests}")
    if settings.warmup_s < 0:
        raise InvalidRequest(f"--warmup must be >= 0 seconds, got {settings.warmup_s}")
    if settings.processes < 1:
        raise InvalidRequest(f"--processes must be >= 1, got {settings.processes}")
    if settings.batch_size < 1:
        raise InvalidRequest(f"-b/--batch-size must be >= 1, got {settings.batch_size}")
    if settings.streaming and settings.protocol != "grpc":
        raise InvalidRequest("--streaming is gRPC's ModelStreamInfer; use it with -i grpc")
    if settings.input_data is not None and settings.shapes:
        raise InvalidRequest("give either --input-data or --shape: the file fixes the shapes")
