"""What a rollout's traffic split costs the request path.

One mlserve server (native gRPC, pinned to core 0) serves two copies of the
benchmark MLP: `mlp`, with no rollout, and `mlp_split`, whose versions 1 and
2 (the same graph) are in a rollout held at weight 50 (a plan that never
gathers enough evidence to move: every request is routed, drawn, observed
and counted by the rollout, and half are answered by each version). h2load
(core 1, one h2c connection with C streams) loads them window by window,
alternating, each going first in every other round; successes are counted
on the server. The ratio to judge by is split / plain per adjacent pair of
windows.

    .venv/bin/python -m benchmarks.rollout.split_cost [--concurrency 64] [--seconds 3] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.load import drivers, servers
from benchmarks.rollout.pair import alternating, write_pair


def successes(server: servers.Server, model: str) -> float:
    """Answered requests of both versions (the split's) on the server."""
    return sum(
        servers._metric(server, "mlserve_request_success_total", model=model, version=v)
        for v in ("1", "2")
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--weight", type=float, default=50, help="the canary's share, percent")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo, bodies = write_pair(Path(tmp), "mlp_split", f"{{weight: {args.weight:g}}}")
        server = servers.start_mlserve(repo)
        try:
            rates: dict[str, list[float]] = {"mlp": [], "mlp_split": []}
            for model in ("mlp", "mlp_split"):  # warm both
                drivers.h2load(server.ports.grpc, bodies[model], args.concurrency, 1)
            for round_ in range(args.rounds):
                for model in alternating(round_, "mlp", "mlp_split"):
                    before = successes(server, model)
                    started = time.monotonic()
                    drivers.h2load(server.ports.grpc, bodies[model], args.concurrency, args.seconds)
                    rate = (successes(server, model) - before) / (time.monotonic() - started)
                    rates[model].append(rate)
                    print(f"round {round_ + 1} {model}: {rate:,.0f} req/s", flush=True)
        finally:
            server.stop()
    ratios = [s / p for s, p in zip(rates["mlp_split"], rates["mlp"], strict=True)]
    print(
        f"\nsplit at weight {args.weight:g} / no rollout, MLP, c={args.concurrency}, native gRPC, "
        f"server core {servers.SERVER_CPU}, h2load core {drivers.CLIENT_CPU}: "
        f"median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}); "
        f"plain median {statistics.median(rates['mlp']):,.0f} req/s, "
        f"split median {statistics.median(rates['mlp_split']):,.0f} req/s"
    )


if __name__ == "__main__":
    main()
