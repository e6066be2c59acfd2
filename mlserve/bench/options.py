"""The `mlserve bench` flags and their translation into `BenchSettings`.

Flag names follow Triton's perf_analyzer where one exists (-m, -x, -u, -i, -b,
--shape, --input-data, --concurrency-range, --streaming, --request-count), so
its users can switch without a manual; the rest are plain words with units in
their help. This module imports only argparse-level code: `mlserve serve`
builds the same parser and must not pay for the benchmark's imports."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mlserve.bench.settings import (
    BenchSettings,
    available_cpus,
    parse_concurrency,
    parse_datatype,
    parse_shape,
    parse_url,
)
from mlserve.errors import InvalidRequest

DESCRIPTION = """\
Load-test a model on any Open Inference Protocol (KServe V2) server: mlserve,
Triton, MLServer, KServe. Reads the model's inputs from the server, sends the
same request (random data or --input-data) from several processes at each
concurrency level, and prints throughput and latency per level."""

EPILOG = """\
Each level runs --warmup seconds (not measured), then --duration seconds or
--requests requests; requests still in flight at the end are awaited and
counted. Latencies are per request, in microseconds, percentiles by nearest
rank over all processes. One extra request is sent first to check that the
server accepts it (the JSON report counts it in check_requests).

exit status: 0 all measured requests succeeded, 1 some failed (see the
error lines under the table), 2 a setup error (server unreachable, unknown
model, bad shape or flags).

examples:
  mlserve bench -m mlp --concurrency 1,8,32
  mlserve bench -m mlp -i http -u 127.0.0.1:8000 --json-body --duration 5
  mlserve bench -m resnet --shape input:8,3,224,224 --streaming --json out.json"""


def add_bench_parser(sub: Any) -> argparse.ArgumentParser:
    """Add `bench` to the `mlserve` subcommands."""
    p: argparse.ArgumentParser = sub.add_parser(
        "bench",
        help="load-test a model on a running V2 server (throughput, latency percentiles)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = p.add_argument_group("target")
    target.add_argument("-m", "--model-name", required=True, help="the model to load-test")
    target.add_argument("-x", "--model-version", default="", help="default: the server's choice")
    target.add_argument(
        "-u", "--url", help="HOST:PORT (default 127.0.0.1:8001 for gRPC, 127.0.0.1:8000 for HTTP)"
    )
    target.add_argument(
        "-i", "--protocol", choices=("grpc", "http"), default="grpc", help="default grpc"
    )
    target.add_argument(
        "--streaming",
        action="store_true",
        help="gRPC only: send over ModelStreamInfer, one stream per in-flight request",
    )
    body = target.add_mutually_exclusive_group()
    body.add_argument(
        "--binary",
        dest="http_body",
        action="store_const",
        const="binary",
        help="HTTP only: binary tensor extension for inputs and outputs (default)",
    )
    body.add_argument(
        "--json-body",
        dest="http_body",
        action="store_const",
        const="json",
        help="HTTP only: plain JSON tensors both ways",
    )

    data = p.add_argument_group("request data")
    data.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="[NAME:]D1,D2",
        help="full request shape of an input, batch dimension included (repeatable; "
        "without NAME: every input). Needed for -1 dimensions other than the batch",
    )
    data.add_argument(
        "--datatype",
        action="append",
        default=[],
        metavar="[NAME:]TYPE",
        help="send this V2 datatype instead of the model's (repeatable)",
    )
    data.add_argument(
        "-b",
        "--batch-size",
        type=int,
        default=1,
        help="size of a leading -1 (batch) dimension when --shape does not give it (default 1)",
    )
    data.add_argument(
        "--input-data",
        type=Path,
        metavar="FILE",
        help=".npy (one-input models) or .npz (one array per input name) instead of "
        "random data; an array without the batch dimension is repeated -b times",
    )
    data.add_argument("--seed", type=int, default=0, help="random data seed (default 0)")

    load = p.add_argument_group("load")
    load.add_argument(
        "--concurrency",
        "--concurrency-range",
        default="1",
        metavar="LEVELS",
        help="requests in flight: a list (1,8,32) or START:END[:STEP] (default 1)",
    )
    amount = load.add_mutually_exclusive_group()
    amount.add_argument(
        "--duration",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="measured time per level (default 10)",
    )
    amount.add_argument(
        "--requests",
        "--request-count",
        type=int,
        metavar="N",
        help="measure N requests per level instead of a duration",
    )
    load.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="unmeasured load before each level (default 2)",
    )
    load.add_argument(
        "--processes",
        type=int,
        metavar="P",
        help=f"client processes sharing the load (default: CPUs available, here "
        f"{available_cpus()}; never more than the concurrency)",
    )

    output = p.add_argument_group("output")
    output.add_argument(
        "--json", type=Path, metavar="PATH", help="also write settings and results as JSON"
    )
    return p


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """Flags -> settings; raises InvalidRequest (exit 2) on malformed values."""
    protocol = args.protocol
    if args.http_body is not None and protocol != "http":
        raise InvalidRequest("--binary and --json-body choose the HTTP body; add -i http")
    shapes: dict[str, tuple[int, ...]] = {}
    for text in args.shape:
        name, shape = parse_shape(text)
        shapes[name] = shape
    datatypes: dict[str, str] = {}
    for text in args.datatype:
        name, datatype = parse_datatype(text)
        datatypes[name] = datatype
    return BenchSettings(
        model=args.model_name,
        url=parse_url(args.url, protocol),
        protocol=protocol,
        model_version=args.model_version,
        streaming=args.streaming,
        http_body=args.http_body or "binary",
        shapes=shapes,
        datatypes=datatypes,
        batch_size=args.batch_size,
        input_data=args.input_data,
        concurrency=parse_concurrency(args.concurrency),
        duration_s=args.duration,
        requests=args.requests,
        warmup_s=args.warmup,
        processes=args.processes if args.processes is not None else available_cpus(),
        json_path=args.json,
        seed=args.seed,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """The `bench` subcommand: 0 clean, 1 some requests failed; setup errors
    raise MlserveError, which the CLI prints in one line with exit 2."""
    import sys

    from mlserve.bench.runner import run_bench

    settings = settings_from_args(args)
    try:
        outcome = run_bench(settings)
    except KeyboardInterrupt:  # the workers are stopped on the way out
        print("mlserve bench: interrupted", file=sys.stderr)
        return 130
    return 1 if outcome.errors else 0
