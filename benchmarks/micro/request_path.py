"""The request path in process, compiled (the modules of mlserve.compiled
built by Cython from their source) against the same modules run from source:
decode a ModelInferRequest, `DataPlane.infer` through the batcher and
onnxruntime, encode the answer, with C requests in flight, driven as the
native transport drives them (no sockets, no HTTP/2).

    .venv/bin/python -m benchmarks.micro.request_path [--model mlp] [--concurrency 64]
        [--requests 40000] [--rounds 4]

Each round runs one fresh process per variant, in alternating order, each
pinned to core 0; the figure is process CPU time per request over its own
batch of requests after a warm-up batch. Prints every round and the medians.
The Cython accelerators of ext/ are compiled in both variants."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VARIANTS = ("source", "compiled")


def _measure(repository: Path, model: str, concurrency: int, requests: int, source: bool) -> float:
    """CPU us per request in this process (the variant chosen before importing)."""
    if source:
        from mlserve.compiled import import_from_source

        import_from_source()
    import uvloop

    from benchmarks.load import workload
    from mlserve.runtime.access import AccessPolicy
    from mlserve.runtime.coroutine_driver import drive
    from mlserve.runtime.dataplane import DataPlane
    from mlserve.runtime.grpc_service import InferenceService
    from mlserve.runtime.metrics import ServerMetrics
    from mlserve.runtime.repository import ModelRepository
    from mlserve.runtime.repository_layout import RepositoryLayout

    message = workload.infer_message(model)

    async def run() -> float:
        repo = ModelRepository(RepositoryLayout(repository))
        dataplane = DataPlane(repo, ServerMetrics())
        await repo.load_many([model])
        dataplane.started = True
        service = InferenceService(dataplane, AccessPolicy([]), 64 << 20)
        loop = asyncio.get_running_loop()

        async def batch() -> None:
            done = loop.create_future()
            counts = {"sent": 0, "answered": 0}

            def answered(_: Any) -> None:
                counts["answered"] += 1
                if counts["sent"] < requests:
                    send()
                elif counts["answered"] == requests and not done.done():
                    done.set_result(None)

            def failed(exc: BaseException) -> None:
                if not done.done():
                    done.set_exception(exc)

            def send() -> None:
                counts["sent"] += 1
                drive(service.model_infer(message, None), answered, failed)

            for _ in range(concurrency):
                send()
            await done

        await batch()  # warm-up
        start = time.process_time()
        await batch()
        return (time.process_time() - start) / requests * 1e6

    return uvloop.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mlp", choices=["mlp", "convnet"])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=40000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--repository", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # one measurement, in a child process
        us = _measure(
            args.repository,
            f"{args.model}_batched",
            args.concurrency,
            args.requests,
            args.variant == "source",
        )
        print(f"{us:.3f}")
        return

    from benchmarks.load import workload

    figures: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        repository = Path(tmp)
        workload.write_repository(repository, [args.model], threads=1)
        for round_ in range(args.rounds):
            order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                out = subprocess.run(
                    ["taskset", "-c", "0", sys.executable, "-m", "benchmarks.micro.request_path",
                     "--variant", variant, "--repository", str(repository),
                     "--model", args.model, "--concurrency", str(args.concurrency),
                     "--requests", str(args.requests)],
                    capture_output=True, text=True, check=True, timeout=600,
                ).stdout  # fmt: skip
                figures[variant].append(float(out.split()[-1]))
                print(f"round {round_}: {variant:8} {figures[variant][-1]:6.2f} us/request")
    source, compiled = (statistics.median(figures[v]) for v in VARIANTS)
    print(
        f"{args.model}_batched, c={args.concurrency}, CPU per request (median of "
        f"{args.rounds}): source {source:.2f} us, compiled {compiled:.2f} us, "
        f"compiled / source {compiled / source:.2f}"
    )


if __name__ == "__main__":
    main()
