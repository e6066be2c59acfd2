"""Load benchmark: mlserve against raw onnxruntime in process (the limit), the
transport floors, and the peers people would pick instead (MLServer, KServe),
in one run on this machine.

    .venv/bin/python -m benchmarks.load [--quick] [--models identity,mlp,convnet]
        [--concurrency 1,8,32,64] [--seconds 3] [--windows 2] [--no-peers]
        [--no-perf-analyzer]

Every server runs pinned to core 0 (`taskset -c 0`), every load generator to
core 1. gRPC load is h2load over h2c (one connection, C streams, as one gRPC
channel; ModelStreamInfer as streams of 16 messages), HTTP load is wrk (C
keep-alive connections; V2 JSON, and the binary tensor extension where the
server has it). mlserve runs twice: on its native gRPC transport (named
"mlserve", every mode) and on grpcio ("mlserve-grpcio", the gRPC modes); the
floors are an empty grpcio servicer ("floor") and the native transport
answering a fixed reply ("floor-native"), each measured once, and the empty
grpcio servicer again beside mlserve on grpcio, their windows taking turns
("floor-paired"), which results.md reads window by window. Successes are
counted on the server for mlserve, from the answer bytes for gRPC peers (an
error answer carries no message), and as 2xx for wrk. Before a server is
timed its answer is checked against onnxruntime with tritonclient. Server CPU
is the process tree's, from /proc. Peers come from benchmarks/peers/setup.sh;
perf_analyzer from benchmarks/perf_analyzer/setup.sh; both are skipped when
not set up.

Writes benchmarks/results/<date>-<host>/: results.json, results.md, <model>.png."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import onnxruntime as ort

from benchmarks.load import drivers, report, servers, verify, workload
from benchmarks.load.drivers import LoadFigures
from benchmarks.load.servers import Server
from mlserve import __version__
from mlserve.proto import grpc_service_pb2 as pb

Run = dict[str, Any]
# Raw onnxruntime for a model and the batch it ran fastest at in the sweep.
RawPoint = tuple[workload.RawOnnxruntime, int]
MLSERVE_MODES = ("grpc", "grpc-stream", "http-binary", "http-json")  # gRPC on native
GRPCIO_MODES = ("grpc", "grpc-stream")  # mlserve again, on its grpcio transport
# The HTTP modes each peer has: MLServer refuses the binary tensor extension.
PEER_MODES = {"mlserver": ("grpc", "http-json"), "kserve": ("grpc", "http-binary", "http-json")}


@dataclass
class Target:
    """One variant whose windows take turns with others' (measure_interleaved);
    on its own server if `server` is set, else on the measurement's."""

    variant: str
    successes: SuccessCounter
    labels: dict[str, Any] = field(default_factory=dict)
    server: Server | None = None


class Runner:
    """Holds the settings and the request bodies; measures one point at a time."""

    def __init__(self, work: Path, concurrency: list[int], seconds: float, windows: int) -> None:
        self.work = work
        self.concurrency = concurrency
        self.seconds = seconds
        self.windows = windows
        self.runs: list[Run] = []
        self.raw: dict[str, RawPoint] = {}  # by model, measured between windows

    def body(self, model: str, mode: str) -> tuple[Path, int | None]:
        """The request body file for a model and mode (and the binary header length)."""
        path = self.work / f"{model}.{mode}.body"
        length = None
        if mode == "grpc":
            data = workload.grpc_frame(model)
        elif mode == "grpc-stream":
            data = workload.grpc_frame(model, workload.STREAM_MESSAGES)
        elif mode == "http-json":
            data = workload.http_json_body(model)
        else:
            data, length = workload.http_binary_body(model)
        path.write_bytes(data)
        return path, length

    def load(self, server: Server, model: str, mode: str, c: int, seconds: float) -> LoadFigures:
        body, header_length = self.body(model, mode)
        if mode == "grpc":
            return drivers.h2load(server.ports.grpc, body, c, seconds)
        if mode == "grpc-stream":
            return drivers.h2load(server.ports.grpc, body, c, seconds, path=drivers.STREAM_PATH)
        url = f"/v2/models/{model}/infer"
        if mode == "http-json":
            return drivers.wrk(server.ports.http, url, body, c, seconds)
        return drivers.wrk(
            server.ports.http,
            url,
            body,
            c,
            seconds,
            content_type="application/octet-stream",
            header_length=header_length,
        )

    def measure(
        self,
        server: Server,
        variant: str,
        mode: str,
        successes: SuccessCounter,
        **labels: Any,
    ) -> None:
        """Warm up, then `windows` windows per concurrency; medians recorded."""
        self.measure_interleaved(server, mode, [Target(variant, successes, labels)])

    def measure_interleaved(
        self,
        server: Server,
        mode: str,
        targets: list[Target],
        raw: RawPoint | None = None,
    ) -> None:
        """Several variants (on `server` unless a target names its own), their
        windows taking turns at each concurrency (A B B A A B ...), so that a
        ratio between them (batching on against off, mlserve against a floor)
        does not carry the machine's drift between two points measured
        minutes apart, nor a bias for going first. With `raw`, at the top
        concurrency each round ends with a window of raw onnxruntime at its
        best batch, recorded beside that round's windows."""
        for target in targets:
            self.load(target.server or server, target.variant, mode, max(self.concurrency), 1)
        for c in self.concurrency:
            windows: list[list[dict[str, Any]]] = [[] for _ in targets]
            for round_ in range(self.windows):
                order = list(enumerate(targets))
                if round_ % 2:
                    order.reverse()
                for index, target in order:
                    for other in targets:  # the last window's answers drain
                        if other is not target:
                            other.successes.begin()
                    windows[index].append(
                        self._window(
                            target.server or server, target.variant, mode, c, target.successes
                        )
                    )
                if raw is not None and c == max(self.concurrency):
                    session, batch = raw
                    rate = session.rows_per_s(batch, self.seconds)
                    for measured in windows:
                        measured[-1]["raw_rows_per_s"] = rate
                        measured[-1]["raw_batch"] = batch
            for target, measured in zip(targets, windows, strict=True):
                self._record(
                    target.server or server,
                    target.variant,
                    mode,
                    c,
                    labels=target.labels,
                    windows=measured,
                )

    def _window(
        self, server: Server, variant: str, mode: str, c: int, successes: SuccessCounter
    ) -> dict[str, Any]:
        successes.begin()
        before = server.cpu_seconds()
        figures = self.load(server, variant, mode, c, self.seconds)
        cpu = server.cpu_seconds() - before
        ok = successes.end(figures)
        window = {
            **asdict(figures),
            "successes": ok,
            "rps": ok / figures.seconds if figures.seconds else 0.0,
            "cpu_us": cpu / ok * 1e6 if ok else float("nan"),
        }
        if isinstance(successes, MlserveCounter):
            # {size: [batches, onnxruntime ns]}; string keys, as JSON keeps them
            window["batches"] = {str(k): list(v) for k, v in successes.compute.items()}
        return window

    def _record(
        self,
        server: Server,
        variant: str,
        mode: str,
        c: int,
        *,
        labels: dict[str, Any],
        windows: list[dict[str, Any]],
    ) -> None:
        run: Run = {
            "server": server.name,
            "mode": mode,
            "variant": variant,
            "concurrency": c,
            **labels,
            "windows": windows,
        }
        for figure in ("rps", "cpu_us", "p50_us", "p99_us"):
            run[figure] = statistics.median(w[figure] for w in windows)
        run["client_requests"] = sum(w["requests"] for w in windows)
        if any("batches" in w for w in windows):
            batches: dict[str, list[int]] = {}
            for w in windows:
                for size, (count, ns) in w.get("batches", {}).items():
                    total = batches.setdefault(size, [0, 0])
                    total[0] += count
                    total[1] += ns
            run["batches"] = batches
        run["successes"] = sum(w["successes"] for w in windows)
        self.runs.append(run)
        print(
            f"  {server.name:8} {variant:18} {mode:12} c={c:<3} {run['rps']:9.0f}/s "
            f"cpu {run['cpu_us']:7.1f} us  p50 {run['p50_us']:9.0f} us",
            flush=True,
        )


class SuccessCounter:
    """Counts a window's successes: `begin` before it, `end` after it."""

    def __init__(self, end: Callable[[LoadFigures], float]) -> None:
        self._end = end

    def begin(self) -> None:
        pass

    def end(self, figures: LoadFigures) -> float:
        return self._end(figures)


class MlserveCounter(SuccessCounter):
    """Successes from mlserve's own counter, read around each window; and the
    window's batches by size with onnxruntime's time for them (`compute`)."""

    def __init__(self, server: Server, model: str) -> None:
        self._read = lambda: servers.mlserve_successes(server, model)
        self._read_compute = lambda: servers.mlserve_compute(server, model)
        self._start = 0.0
        self._compute_start: dict[int, tuple[int, int]] = {}
        self.compute: dict[int, tuple[int, int]] = {}

    def begin(self) -> None:
        """Wait for the answers still owed to the last load (its client has
        gone, the server finishes them), so they do not count here."""
        self._start = self._read()
        for _ in range(40):
            time.sleep(0.05)
            now = self._read()
            if now == self._start:
                break
            self._start = now
        self._compute_start = self._read_compute()

    def end(self, figures: LoadFigures) -> float:
        successes = self._read() - self._start
        now = self._read_compute()
        self.compute = {}
        for size, (batches, ns) in now.items():
            before = self._compute_start.get(size, (0, 0))
            if batches > before[0]:
                self.compute[size] = (batches - before[0], ns - before[1])
        return successes


def answer_counter(server: Server, model: str, mode: str) -> SuccessCounter:
    """Successes of a server that is not mlserve: 2xx for HTTP; for gRPC, the
    answer bytes over one answer's size (an error answer carries no message)."""
    if mode.startswith("http"):
        return SuccessCounter(lambda f: float(f.requests - f.bad))
    answer = servers.grpc_answer(server.ports.grpc, workload.infer_message(model))
    return bytes_counter(answer, streaming=mode == "grpc-stream")


def bytes_counter(answer: bytes, *, streaming: bool) -> SuccessCounter:
    per_message = len(answer) + 5
    if streaming:  # each stream answer is ModelStreamInferResponse{infer_response: answer}
        wrapped = pb.ModelStreamInferResponse()
        wrapped.infer_response.ParseFromString(answer)
        per_message = wrapped.ByteSize() + 5
    return SuccessCounter(lambda f: float(f.data_bytes // per_message))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="identity, mlserve only, ~1 min")
    parser.add_argument("--models", default="identity,mlp,convnet")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--seconds", type=float, default=3.0, help="per window")
    parser.add_argument("--windows", type=int, default=2, help="measured windows per point")
    parser.add_argument("--no-peers", action="store_true", help="mlserve and floors only")
    parser.add_argument("--no-perf-analyzer", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--server-cpus",
        default=servers.SERVER_CPU,
        help="cores of every server and of raw onnxruntime, comma-separated; onnxruntime "
        f"gets as many intra-op threads (0,1: two, sharing core {drivers.CLIENT_CPU} with "
        "the load generator)",
    )
    parser.add_argument(
        "--preferred-by",
        choices=["server", "raw"],
        default="server",
        help="how the batched models' preferred size is chosen: by serving each candidate "
        "(default) or from raw onnxruntime's rates alone",
    )
    args = parser.parse_args()
    servers.SERVER_CPU = args.server_cpus
    quick = args.quick
    models = ["identity"] if quick else args.models.split(",")
    concurrency = [1, 8] if quick else [int(c) for c in args.concurrency.split(",")]
    seconds, windows = (1.0, 1) if quick else (args.seconds, args.windows)
    server_cpus = {int(cpu) for cpu in args.server_cpus.split(",")}
    threads = len(server_cpus)  # an intra-op thread per server core; the same for raw
    work = Path(tempfile.mkdtemp(prefix="mlserve-bench-"))
    repo = work / "models"
    workload.write_repository(repo, models, threads)
    runner = Runner(work, concurrency, seconds, windows)
    results: dict[str, Any] = {
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "python": sys.version},
        "versions": {
            "mlserve": __version__,
            "onnxruntime": ort.__version__,
            **servers.tool_versions(),
        },
        "settings": {
            "server_cpu": servers.SERVER_CPU,
            "client_cpu": drivers.CLIENT_CPU,
            "seconds": seconds,
            "windows": windows,
            "concurrency": concurrency,
            "intra_op_threads": threads,
            "h2load": "-c 1 -m C",
            "wrk": "-t 1 -c C",
            "stream_messages": workload.STREAM_MESSAGES,
        },
        "models": models,
        "raw_onnxruntime_rows_per_s": {},
        "runs": runner.runs,
        "perf_analyzer": [],
    }
    expected = {}
    for model in models:
        model_file = repo / model / "1" / "model.onnx"
        expected[model] = workload.expected_output(model_file, model)
        raw = workload.RawOnnxruntime(model_file, workload.SHAPES[model], threads, server_cpus)
        rates = {batch: raw.rows_per_s(batch, 1.0) for batch in workload.RAW_BATCHES}
        results["raw_onnxruntime_rows_per_s"][model] = rates
        runner.raw[model] = (raw, max(rates, key=rates.__getitem__))
        print(f"raw onnxruntime {model}: {results['raw_onnxruntime_rows_per_s'][model]}")
    # The batched models' preferred size: raw onnxruntime's pick, or (by
    # default) whichever of it and SWEEP_SIZES mlserve itself served fastest.
    preferred = {
        model: workload.preferred_batch(results["raw_onnxruntime_rows_per_s"][model])
        for model in models
    }
    rule = workload.PREFERRED_RULE
    if args.preferred_by == "server" and not quick:
        sweep = sweep_preferred(
            work, models, threads, preferred, concurrency=max(concurrency), seconds=seconds
        )
        preferred = {model: max(rates, key=rates.__getitem__) for model, rates in sweep.items()}
        results["settings"]["preferred_batch_sweep"] = {
            model: {str(size or "none"): rate for size, rate in rates.items()}
            for model, rates in sweep.items()
        }
        rule = SWEEP_RULE.format(concurrency=max(concurrency))
        print(f"preferred batch sizes from the sweep: {preferred} ({sweep})")
    results["settings"]["preferred_batch_size"] = preferred
    results["settings"]["preferred_batch_rule"] = rule
    workload.write_repository(repo, models, threads, preferred)
    # Over grpcio, requests reach the loop one at a time: only a queue delay
    # lets them share a batch there, so its batched models keep the delay
    # (workload.QUEUE_DELAY_US) and prefer no size, whatever the native sweep picked.
    grpcio_repo = work / "models-grpcio"
    workload.write_repository(grpcio_repo, models, threads)
    results["settings"]["grpcio_batching"] = GRPCIO_BATCHING.format(delay=workload.QUEUE_DELAY_US)

    run_floors(runner, work)
    for grpc_impl, modes, served in (
        ("native", MLSERVE_MODES, repo),
        ("grpcio", GRPCIO_MODES, grpcio_repo),
    ):
        run_mlserve(
            runner,
            served,
            models,
            expected,
            results,
            grpc_impl=grpc_impl,
            modes=modes,
            skip_perf_analyzer=quick or args.no_perf_analyzer or grpc_impl != "native",
        )
    if not (quick or args.no_peers):
        run_peers(runner, repo, models, expected)

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir = args.out / f"{stamp}-{platform.node()}"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    table = report.markdown(results)
    (out_dir / "results.md").write_text(table)
    pictures = report.plots(results, out_dir)
    print(table)
    print(f"written to {out_dir} ({', '.join(p.name for p in pictures)})")


# How mlserve-grpcio's batched models are set (results.md says so).
GRPCIO_BATCHING = (
    "max_queue_delay_us {delay} and no preferred size: grpcio hands the loop one request at "
    "a time, so without a delay no two share a batch"
)
# The preferred batch sizes the sweep tries beside raw onnxruntime's pick (None:
# no preferred size, batches grow with the queue).
SWEEP_SIZES: tuple[int | None, ...] = (4, 8, 16, 32, None)
SWEEP_RULE = (
    "the one mlserve served fastest over unary gRPC at c={concurrency}, of raw onnxruntime's "
    "pick, 4, 8, 16, 32 and none, each served three times in alternating order, by median"
)


def sweep_preferred(
    work: Path,
    models: list[str],
    threads: int,
    raw_choice: dict[str, int | None],
    *,
    concurrency: int,
    seconds: float,
) -> dict[str, dict[int | None, float]]:
    """Requests/s of each candidate preferred batch size, served by mlserve.

    Triton's advice is to choose the preferred size by measuring the server
    (its model analyzer sweeps the config), not the model: raw onnxruntime
    cannot show the server's own cost per batch, which larger batches spread
    over more requests. Measured on two cores at c=32, the convnet served
    10.2-12.2k requests/s preferring 32 and 7.4-9.0k preferring 8, the size
    raw onnxruntime's rates had picked in that run (2026-11-29).

    Each candidate is served three times, in alternating order, and read by
    its median: with two windows and their mean, one slow stretch of this
    shared machine picked 16 for the convnet at c=64 on one core (8,090
    against 7,163 for 32), where served by hand, alternating, 32 beat 16 in
    five rounds of five (7.0-7.9k against 6.5-7.1k).

    Which size wins depends on the machine: on a VM with 1 MiB of L2 a core
    the convnet served 4,768 requests/s preferring 4, 4,792 preferring 8,
    4,337 preferring 16 and 4,454 preferring 32 (c=64, one core, four
    alternating rounds, 2026-12-07), onnxruntime inside the server taking
    152 us a row at 4 and 8 against 163-184 at 16 and 32."""
    repo = work / "sweep"
    candidates: dict[str, dict[int | None, str]] = {}
    for model in models:
        onnx_bytes = workload.BUILDERS[model]()
        candidates[model] = {}
        for size in dict.fromkeys((raw_choice[model], *SWEEP_SIZES)):
            name = f"{model}_prefer{size or 'none'}"
            workload.write_batched(repo, name, onnx_bytes, threads, size)
            (work / f"{name}.grpc").write_bytes(workload.grpc_frame(name))
            candidates[model][size] = name
    rates: dict[str, dict[int | None, list[float]]] = {
        model: {size: [] for size in sizes} for model, sizes in candidates.items()
    }
    server = servers.start_mlserve(repo)
    try:
        for model, sizes in candidates.items():
            order = list(sizes.items())
            for size, name in order + order[::-1] + order:
                counter = MlserveCounter(server, name)
                counter.begin()
                figures = drivers.h2load(
                    server.ports.grpc, work / f"{name}.grpc", concurrency, seconds
                )
                ok = counter.end(figures)
                rates[model][size].append(ok / figures.seconds if figures.seconds else 0.0)
    finally:
        server.stop()
    return {
        model: {size: statistics.median(values) for size, values in sizes.items()}
        for model, sizes in rates.items()
    }


def floor_answers(work: Path) -> tuple[Path, Path, Path]:
    """The floors' fixed answers: unary gRPC, streaming gRPC, HTTP JSON."""
    reply = pb.ModelInferResponse(model_name="floor", model_version="1")
    reply.outputs.add(name="y", datatype="FP32", shape=[1, 10])
    reply.raw_output_contents.append(bytes(40))
    grpc_answer = work / "floor.grpc"
    grpc_answer.write_bytes(reply.SerializeToString())
    stream_answer = work / "floor.stream"
    wrapped = pb.ModelStreamInferResponse()
    wrapped.infer_response.CopyFrom(reply)
    stream_answer.write_bytes(wrapped.SerializeToString())
    http_answer = work / "floor.http"
    http_answer.write_bytes(
        b'{"model_name":"floor","model_version":"1","outputs":[{"name":"y","datatype":"FP32",'
        b'"shape":[1,10],"data":[0,0,0,0,0,0,0,0,0,0]}]}'
    )
    return grpc_answer, stream_answer, http_answer


def run_floors(runner: Runner, work: Path) -> None:
    """What the transports alone cost: fixed answers, no model."""
    grpc_answer, stream_answer, http_answer = floor_answers(work)
    for name, kind, answer, mode in (
        ("floor", "grpc-unary", grpc_answer, "grpc"),
        ("floor", "grpc-stream", stream_answer, "grpc-stream"),
        ("floor-native", "native", grpc_answer, "grpc"),
        ("floor-native", "native", grpc_answer, "grpc-stream"),
        ("floor", "http", http_answer, "http-json"),
    ):
        server = servers.start_floor(kind, answer)
        server.name = name
        try:
            count = (
                SuccessCounter(lambda f: float(f.requests - f.bad))
                if mode.startswith("http")
                else bytes_counter(grpc_answer.read_bytes(), streaming=mode == "grpc-stream")
            )
            runner.measure(server, "identity", mode, count, model="-", batched=False)
        finally:
            server.stop()


def run_mlserve(
    runner: Runner,
    repo: Path,
    models: list[str],
    expected: dict[str, Any],
    results: dict[str, Any],
    *,
    grpc_impl: str,
    modes: tuple[str, ...],
    skip_perf_analyzer: bool,
) -> None:
    server = servers.start_mlserve(repo, grpc_impl)
    try:
        for model in models:
            # Batching off and on take turns window by window (measure_interleaved).
            variants = ((model, False), (f"{model}_batched", True))
            problems = {
                variant: "; ".join(
                    p
                    for p in (
                        verify.check_answer("grpc", server.ports.grpc, variant, expected[model]),
                        verify.check_answer("http", server.ports.http, variant, expected[model]),
                    )
                    if p
                )
                for variant, _ in variants
            }
            for mode in modes:
                targets: list[Target] = []
                for variant, batched in variants:
                    labels: dict[str, Any] = {"model": model, "batched": batched}
                    if problems[variant]:
                        runner.runs.append(
                            {
                                "server": server.name,
                                "mode": mode,
                                **labels,
                                "error": problems[variant],
                                "concurrency": 0,
                            }
                        )
                        continue
                    targets.append(Target(variant, MlserveCounter(server, variant), labels))
                if not targets:
                    continue
                # The native transport's windows are read against raw's, pair by
                # pair; grpcio's against the empty grpcio servicer's, taking turns.
                raw = runner.raw.get(model) if grpc_impl == "native" else None
                floor = (
                    start_paired_floor(runner.work, mode, model) if grpc_impl == "grpcio" else None
                )
                try:
                    if floor is not None:
                        targets.append(floor)
                    runner.measure_interleaved(server, mode, targets, raw)
                finally:
                    if floor is not None and floor.server is not None:
                        floor.server.stop()
        if not skip_perf_analyzer and drivers.PERF_ANALYZER.exists():
            side_by_side(runner, server, models, results)
    finally:
        server.stop()


def start_paired_floor(work: Path, mode: str, model: str) -> Target:
    """The empty grpcio servicer for `mode`, as a target whose windows take
    turns with mlserve-on-grpcio's on `model` (recorded as PAIRED_FLOOR,
    under that model)."""
    grpc_answer, stream_answer, _ = floor_answers(work)
    streaming = mode == "grpc-stream"
    server = servers.start_floor(
        "grpc-stream" if streaming else "grpc-unary", stream_answer if streaming else grpc_answer
    )
    server.name = report.PAIRED_FLOOR
    counter = bytes_counter(grpc_answer.read_bytes(), streaming=streaming)
    return Target("identity", counter, {"model": model, "batched": False}, server)


def side_by_side(
    runner: Runner, server: Server, models: list[str], results: dict[str, Any]
) -> None:
    """perf_analyzer's view of mlserve at the lowest and highest concurrency."""
    ours_mode = {"grpc": "grpc", "grpc-streaming": "grpc-stream", "http": "http-binary"}
    for model in models:
        variant = f"{model}_batched"
        for mode in ("grpc", "grpc-streaming", "http"):
            for c in sorted({min(runner.concurrency), max(runner.concurrency)}):
                port = server.ports.http if mode == "http" else server.ports.grpc
                row = drivers.perf_analyzer(
                    variant, mode, port, c, seconds=max(runner.seconds, 2.0), work=runner.work
                )
                ours = [
                    r["rps"]
                    for r in runner.runs
                    if r.get("variant") == variant
                    and r["mode"] == ours_mode[mode]
                    and r["concurrency"] == c
                    and "rps" in r
                ]
                results["perf_analyzer"].append(
                    {
                        "model": variant,
                        "mode": mode,
                        "concurrency": c,
                        **row,
                        "ours_rps": ours[0] if ours else float("nan"),
                    }
                )


def run_peers(runner: Runner, repo: Path, models: list[str], expected: dict[str, Any]) -> None:
    available = servers.peers_available()
    starters = {"mlserver": servers.start_mlserver, "kserve": servers.start_kserve}
    for peer, start in starters.items():
        if not available[peer]:
            print(f"{peer}: not set up (benchmarks/peers/setup.sh); skipped")
            continue
        try:
            server = start(repo, models)
        except RuntimeError as exc:
            runner.runs.append(
                {
                    "server": peer,
                    "mode": "-",
                    "model": "-",
                    "concurrency": 0,
                    "error": str(exc)[-500:],
                }
            )
            continue
        try:
            for model in models:
                for mode in PEER_MODES[peer]:
                    protocol = "grpc" if mode == "grpc" else "http"
                    labels = {"model": model, "batched": False}
                    problem = verify.check_answer(
                        protocol,
                        server.ports.grpc if protocol == "grpc" else server.ports.http,
                        model,
                        expected[model],
                        binary=mode == "http-binary",
                    )
                    if problem:
                        runner.runs.append(
                            {
                                "server": peer,
                                "mode": mode,
                                **labels,
                                "error": problem,
                                "concurrency": 0,
                            }
                        )
                        continue
                    runner.measure(
                        server, model, mode, answer_counter(server, model, mode), **labels
                    )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
