"""The parent's side of the load workers: spawn them, hand each its share of a
step, and collect the results while the progress display polls shared
counters. Processes are spawned, not forked: the parent has already used gRPC
(metadata, probe), and grpc's core does not survive a fork."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any

from mlserve.bench.recorder import StepPlan, StepResult
from mlserve.bench.worker import WorkerSpec, worker_main
from mlserve.errors import InternalError, ModelUnavailable

READY_TIMEOUT_S = 60.0
TICK_S = 0.1


def split(total: int, parts: int) -> list[int]:
    """`total` as `parts` near-equal non-negative shares, larger ones first."""
    base, extra = divmod(total, parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]


class WorkerPool:
    """`size` worker processes, all sending `request` to `url`."""

    def __init__(
        self, *, size: int, protocol: str, streaming: bool, url: str, request: bytes
    ) -> None:
        self.size = size
        self._context = multiprocessing.get_context("spawn")
        self._progress: Any = self._context.RawArray("q", 2 * size)
        self._specs = [
            WorkerSpec(index, protocol, streaming, url, request) for index in range(size)
        ]
        self._pipes: list[Connection] = []
        self._processes: list[BaseProcess] = []

    def __enter__(self) -> WorkerPool:
        try:
            for spec in self._specs:
                mine, theirs = self._context.Pipe()
                process = self._context.Process(
                    target=worker_main,
                    args=(spec, theirs, self._progress),
                    name=f"mlserve-bench-{spec.index}",
                    daemon=True,
                )
                process.start()
                theirs.close()
                self._pipes.append(mine)
                self._processes.append(process)
            self._collect(range(self.size), "ready", READY_TIMEOUT_S)
        except BaseException:
            self.close(grace_s=0.0)
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # On an error or Ctrl-C the workers may be mid-step and not reading
        # their pipes: do not wait for them.
        self.close(grace_s=0.0 if kind is not None else 5.0)

    def close(self, grace_s: float = 5.0) -> None:
        """Ask every worker to stop; terminate the ones that do not within `grace_s`."""
        for pipe in self._pipes:
            with contextlib.suppress(OSError, ValueError):  # already gone
                pipe.send(("stop", None))
        deadline = time.monotonic() + grace_s
        for process in self._processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join(1.0)
        for pipe in self._pipes:
            pipe.close()
        self._pipes, self._processes = [], []

    def prepare(self, shares: list[int]) -> None:
        """Each worker with a share opens its connections (streams) for it."""
        busy = [index for index, share in enumerate(shares) if share]
        for index in busy:
            self._pipes[index].send(("prepare", shares[index]))
        self._collect(busy, "prepared", READY_TIMEOUT_S)

    def run(
        self, plans: dict[int, StepPlan], on_tick: Callable[[int, int], None]
    ) -> list[StepResult]:
        """Run one step; `on_tick(measured_done, warmup_done)` about 10 times a second."""
        for index in range(len(self._progress)):
            self._progress[index] = 0
        for index, plan in plans.items():
            self._pipes[index].send(("run", plan))
        results = self._collect(list(plans), "result", None, on_tick)
        on_tick(*self.counts())
        return results

    def counts(self) -> tuple[int, int]:
        """Requests done so far in this step: (measured, warmup), over all workers."""
        values = list(self._progress)
        return sum(values[0::2]), sum(values[1::2])

    def _collect(
        self,
        indexes: Any,
        expected: str,
        timeout_s: float | None,
        on_tick: Callable[[int, int], None] | None = None,
    ) -> list[Any]:
        waiting = {self._pipes[index]: index for index in indexes}
        answers: dict[int, Any] = {}
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while waiting:
            if deadline is not None and time.monotonic() > deadline:
                raise ModelUnavailable(
                    f"load workers did not become {expected} within {timeout_s:g} s "
                    "(is the server answering?)"
                )
            for pipe in multiprocessing.connection.wait(list(waiting), timeout=TICK_S):
                assert isinstance(pipe, Connection)
                index = waiting.pop(pipe)
                try:
                    kind, payload = pipe.recv()
                except EOFError:
                    self._processes[index].join(1.0)
                    code = self._processes[index].exitcode
                    raise InternalError(
                        f"load worker {index} exited unexpectedly (exit code {code})"
                    ) from None
                if kind == "unreachable":
                    raise ModelUnavailable(f"load worker {index} cannot connect: {payload}")
                if kind == "failed":
                    last = str(payload).strip().splitlines()[-1]
                    raise InternalError(f"load worker {index} failed: {last}\n{payload}")
                if kind != expected:
                    raise InternalError(f"load worker {index} answered {kind!r}, not {expected!r}")
                answers[index] = payload
            if on_tick is not None:
                on_tick(*self.counts())
        return [answers[index] for index in sorted(answers)]
