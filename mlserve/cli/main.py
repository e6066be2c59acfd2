"""`mlserve serve | infer | models | bench | --version`.

Flags of `serve` use Triton's names and defaults; any of them can also be
given in a YAML file (`--config`), which the flags override."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlserve._version import __version__
from mlserve.bench.options import add_bench_parser, run_from_args
from mlserve.cli import rollout as rollout_cli
from mlserve.errors import MlserveError


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_serve(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model repository over gRPC and HTTP",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--config", type=Path, help="YAML file with any of these settings")
    p.add_argument("--model-repository", help="the model repository folder")
    for name, port in (("http", 8000), ("grpc", 8001), ("metrics", 8002)):
        p.add_argument(f"--{name}-port", type=int, help=f"default {port}; 0 picks a free port")
        p.add_argument(f"--{name}-address", help="default 0.0.0.0")
        p.add_argument(
            f"--allow-{name}",
            type=_bool,
            nargs="?",
            const=True,
            help="enable this endpoint (default true)",
        )
    p.add_argument("--model-control-mode", choices=("none", "poll", "explicit"))
    p.add_argument(
        "--load-model",
        action="append",
        help="model to load at start in explicit mode (repeatable; '*' = all)",
    )
    p.add_argument("--repository-poll-secs", type=float, help="poll interval (default 15)")
    p.add_argument("--strict-readiness", type=_bool, nargs="?", const=True)
    p.add_argument("--exit-timeout-secs", type=float, help="drain grace period (default 30)")
    p.add_argument("--http-max-input-size", type=int, help="bytes (default 64 MiB)")
    p.add_argument(
        "--http-read-timeout-secs",
        type=float,
        help="a request that stops arriving this long is answered 408 (default 60; 0 = never)",
    )
    p.add_argument("--grpc-max-input-size", type=int, help="bytes (default 64 MiB)")
    p.add_argument(
        "--grpc-impl",
        choices=("native", "grpcio"),
        help="gRPC transport: native (HTTP/2 on libnghttp2, the default) or grpcio",
    )
    p.add_argument(
        "--grpc-keepalive-time", type=int, help="ms without traffic before a PING (7200000)"
    )
    p.add_argument(
        "--grpc-keepalive-timeout", type=int, help="ms to wait for the PING's ack (20000)"
    )
    p.add_argument(
        "--grpc-read-timeout-secs",
        type=float,
        help="native transport: a client silent this long in the middle of a request message "
        "has its connection closed (default 60; 0 = never)",
    )
    for proto in ("grpc", "http"):
        p.add_argument(f"--{proto}-use-ssl", type=_bool, nargs="?", const=True)
        p.add_argument(f"--{proto}-use-ssl-mutual", type=_bool, nargs="?", const=True)
        p.add_argument(f"--{proto}-server-cert")
        p.add_argument(f"--{proto}-server-key")
        p.add_argument(f"--{proto}-root-cert")
    p.add_argument(
        "--grpc-restricted-protocol",
        action="append",
        help="GROUP[,GROUP]:KEY=VALUE, e.g. model-repository:admin-key=secret",
    )
    p.add_argument(
        "--http-restricted-api",
        action="append",
        help="GROUP[,GROUP]:KEY=VALUE, e.g. model-repository:admin-key=secret",
    )
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.add_argument(
        "--state-dir", help="where rollouts keep their state (default: beside the repository)"
    )
    p.add_argument(
        "--admin-token",
        help="bearer token the rollout admin API asks for (default: $MLSERVE_ADMIN_TOKEN, or none)",
    )
    p.add_argument(
        "--workers",
        help="serving processes sharing the ports: N, or 'auto' (the default) = one per "
        "CPU when every model is small, on the CPU and single-threaded, else 1",
    )


def _add_client_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--grpc", dest="protocol", action="store_const", const="grpc")
    group.add_argument("--http", dest="protocol", action="store_const", const="http")
    p.set_defaults(protocol="grpc")
    p.add_argument("--url", help="server address (default 127.0.0.1:8001 gRPC, :8000 HTTP)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlserve", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mlserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    infer = sub.add_parser("infer", help="send one inference request and print the outputs")
    infer.add_argument("model")
    infer.add_argument("--model-version", default="")
    infer.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="NAME=FILE",
        help="an input from a .npy or .json file (repeatable)",
    )
    _add_client_flags(infer)
    rollout_cli.add_parser(sub)
    models = sub.add_parser("models", help="list the repository index of a running server")
    _add_client_flags(models)
    add_bench_parser(sub)
    return parser


def _client(args: argparse.Namespace) -> Any:
    from mlserve.client import GrpcClient, HttpClient

    if args.protocol == "http":
        return HttpClient(args.url or "127.0.0.1:8000")
    return GrpcClient(args.url or "127.0.0.1:8001")


def _run_serve(args: argparse.Namespace) -> int:
    from mlserve.config import load_config_file, server_config_from_mapping
    from mlserve.server import serve

    settings: dict[str, Any] = {}
    config_file = vars(args).pop("config", None)
    if config_file is not None:
        settings.update(load_config_file(config_file))
    for key, value in vars(args).items():
        if key != "command":
            settings[key] = value
    if settings.get("admin_token") is None and os.environ.get("MLSERVE_ADMIN_TOKEN"):
        settings["admin_token"] = os.environ["MLSERVE_ADMIN_TOKEN"]
    config = server_config_from_mapping(settings)
    worker = ""  # a supervisor's workers share its terminal: say whose line it is
    if config.worker_socket is not None and config.worker_socket in config.worker_peers:
        worker = f" [worker {config.worker_peers.index(config.worker_socket)}]"
    logging.basicConfig(
        level=config.log_level.upper(),
        format=f"%(asctime)s %(levelname)s{worker} %(name)s: %(message)s",
    )
    if config.workers != 1 and config.worker_socket is None:
        from mlserve.supervisor import auto_workers, run_supervisor

        count, reason = (config.workers, "--workers") if config.workers else auto_workers(config)
        print(f"mlserve workers: {count} ({reason})", flush=True)
        if count > 1:
            return run_supervisor(config, settings, count)
    try:
        import uvloop
    except ImportError:  # uvloop is optional off Linux/macOS
        return asyncio.run(serve(config))
    return uvloop.run(serve(config))


def _run_infer(args: argparse.Namespace) -> int:
    from mlserve.client import load_input

    client = _client(args)
    expected = {t.name: t for t in client.inputs(args.model, args.model_version)}
    inputs = dict(load_input(spec, expected.get(spec.partition("=")[0])) for spec in args.input)
    outputs = client.infer(args.model, inputs, args.model_version)
    with np.printoptions(threshold=50, edgeitems=3):
        for name, array in outputs.items():
            print(f"{name} {array.dtype} {list(array.shape)}")
            print(array)
    return 0


def _run_models(args: argparse.Namespace) -> int:
    for entry in _client(args).repository_index():
        print(json.dumps(entry))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runners = {
        "serve": _run_serve,
        "infer": _run_infer,
        "models": _run_models,
        "bench": run_from_args,
        "rollout": rollout_cli.run,
    }
    try:
        return runners[args.command](args)
    except MlserveError as exc:
        print(f"mlserve {args.command}: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
