"""A load worker process: its own asyncio loop (uvloop where installed) and one
client, driven by the parent over a pipe, so the client's per-request Python
cost is spread over several CPUs instead of capping the load at one.

Messages from the parent, each answered once:
    ("prepare", slots)  -> ("prepared", None)     connect before the clock starts
    ("run", StepPlan)   -> ("result", StepResult)
    ("stop", None)      -> (exits)
A failure to connect is answered ("unreachable", message), any other failure
("failed", traceback text); either ends the process."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import traceback
from collections.abc import MutableSequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Protocol

from mlserve.bench.recorder import StepPlan, StepRecorder


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker needs, picklable for a spawned process."""

    index: int
    protocol: str
    streaming: bool
    url: str  # host:port
    request: bytes


class Load(Protocol):
    async def open(self) -> None: ...
    async def prepare(self, slots: int) -> None: ...
    async def run(self, plan: StepPlan, recorder: StepRecorder) -> None: ...
    async def close(self) -> None: ...


def _load_for(spec: WorkerSpec) -> Load:
    if spec.protocol == "http":
        from mlserve.bench.http_load import HttpLoad

        host, _, port = spec.url.rpartition(":")
        return HttpLoad(host, int(port), spec.request)
    from mlserve.bench.grpc_load import GrpcLoad

    return GrpcLoad(spec.url, spec.request, streaming=spec.streaming)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # optional off Linux/macOS
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def worker_main(spec: WorkerSpec, pipe: Connection, progress: MutableSequence[int]) -> None:
    """Process entry point (spawned by `WorkerPool`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    loop = _new_loop()
    load: Load | None = None
    try:
        load = _load_for(spec)
        loop.run_until_complete(load.open())
        pipe.send(("ready", None))
        while True:
            command, argument = pipe.recv()
            if command == "stop":
                break
            if command == "prepare":
                loop.run_until_complete(load.prepare(argument))
                pipe.send(("prepared", None))
            elif command == "run":
                recorder = StepRecorder(argument, progress, spec.index)
                loop.run_until_complete(load.run(argument, recorder))
                pipe.send(("result", recorder.result()))
            else:
                raise ValueError(f"unknown command {command!r}")
    except (EOFError, BrokenPipeError):  # the parent went away
        pass
    except OSError as exc:  # cannot connect: the server went away or refuses
        with contextlib.suppress(OSError, ValueError):
            pipe.send(("unreachable", f"{type(exc).__name__}: {exc}"))
    except Exception:
        with contextlib.suppress(OSError, ValueError):
            pipe.send(("failed", traceback.format_exc()))
    finally:
        if load is not None:
            # Closing after a failure may fail too; what matters is that we exit.
            with contextlib.suppress(Exception):
                loop.run_until_complete(load.close())
        loop.close()
