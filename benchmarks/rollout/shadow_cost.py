"""What a shadow step costs the clients of stable.

One mlserve server (native gRPC, core 0) serves `mlp` (no rollout) and
`mlp_shadow` (a rollout held in a 100% shadow step: every request is
answered by version 1 and also run, unseen, by version 2). h2load (core 1)
loads them window by window, alternating, at each concurrency; the figures
are the client's p50 and p99 (h2load's own timings) and the requests/s
answered, plus the mirrored copies the server shed
(`mlserve_shadow_dropped_total`):
at low load the canary's work fits beside stable's; on a saturated core the
bound on mirrored work in flight sheds copies instead of slowing clients.

    .venv/bin/python -m benchmarks.rollout.shadow_cost [--concurrency 1,8,64]
        [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.load import drivers, servers
from benchmarks.rollout.pair import alternating, write_pair


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo, bodies = write_pair(Path(tmp), "mlp_shadow", "{shadow: 100}")
        server = servers.start_mlserve(repo)
        try:
            for body in bodies.values():  # warm both
                drivers.h2load(server.ports.grpc, body, 8, 1)
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                figures: dict[str, list[drivers.LoadFigures]] = {"mlp": [], "mlp_shadow": []}
                dropped_before = _shed(server)
                for round_ in range(args.rounds):
                    for model in alternating(round_, "mlp", "mlp_shadow"):
                        figures[model].append(
                            drivers.h2load(
                                server.ports.grpc, bodies[model], concurrency, args.seconds
                            )
                        )
                        _wait_mirrored(server)  # the window's mirrored copies are done
                dropped = _shed(server) - dropped_before
                print(_report(concurrency, figures["mlp"], figures["mlp_shadow"], dropped))
        finally:
            server.stop()
    print(
        f"server core {servers.SERVER_CPU}, h2load core {drivers.CLIENT_CPU}; "
        f"ratios are medians of {args.rounds} window pairs"
    )


def _wait_mirrored(server: servers.Server) -> None:
    """Until every mirrored copy is done: the canary's routed requests and
    the copies shed add up to stable's (or a minute passed)."""

    def routed(track: str) -> float:
        return sum(
            servers._metric(
                server, "mlserve_routed_requests_total", model="mlp_shadow", track=track,
                outcome=outcome,
            )
            for outcome in ("ok", "error")
        )  # fmt: skip

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and routed("canary") + _shed(server) < routed("stable"):
        time.sleep(0.01)


def _shed(server: servers.Server) -> float:
    return servers._metric(server, "mlserve_shadow_dropped_total", model="mlp_shadow")


def _report(
    concurrency: int,
    plain: list[drivers.LoadFigures],
    shadow: list[drivers.LoadFigures],
    dropped: float,
) -> str:
    def ratio(field: str) -> float:
        pairs = zip(shadow, plain, strict=True)
        return statistics.median(getattr(s, field) / getattr(p, field) for s, p in pairs)

    def plain_median(field: str) -> float:
        return statistics.median(getattr(p, field) for p in plain)

    return (
        f"c={concurrency}: shadow / plain p50 {ratio('p50_us'):.3f}, "
        f"p99 {ratio('p99_us'):.3f}, req/s {ratio('rps'):.3f} "
        f"(plain p50 {plain_median('p50_us'):.0f} us, "
        f"p99 {plain_median('p99_us'):.0f} us, {plain_median('rps'):,.0f} req/s); "
        f"mirrored copies shed {dropped:,.0f}"
    )


if __name__ == "__main__":
    main()
