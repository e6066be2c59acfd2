"""Overload with client timeouts: what the server computes for clients that
have given up.

    .venv/bin/python -m benchmarks.overload [--clients 32] [--timeout-ms 50]
        [--seconds 10] [--layers 40] [--batching]

Starts `mlserve serve` pinned to core 0 on one model (a chain of 512x512
MatMuls: a few ms a request on one intra-op thread), then `--clients`
threads, pinned to core 1, each sending one V2 JSON request at a time over
HTTP with a `--timeout-ms` socket timeout; a client whose answer is late
closes its connection and sends the next request on a new one, as an HTTP
client with a timeout does. Offered load is set past capacity: the queue
wait outgrows the timeout.

Prints what the clients saw (answered in time, timed out) and what the
server did (model runs, requests counted cancelled) from its statistics and
metrics. A server that computes every abandoned request spends its core on
answers nobody reads and answers almost nobody in time.
`--serve` runs another build's server (the command before `serve`'s flags),
for a before/after comparison."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shlex
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.load.servers import (
    Ports,
    Server,
    mlserve_cancelled,
    mlserve_compute,
)
from mlserve import examples
from mlserve.loopback import serve_command

MODEL = "chain"
# serve_command's interpreter and `-m mlserve.cli.main serve`, replaced by --serve.
_SERVE_PREFIX = 4


def _client(
    port: int, body: bytes, timeout_s: float, stop: threading.Event, counts: dict[str, int]
) -> None:
    headers = {"Content-Type": "application/json"}
    connection: http.client.HTTPConnection | None = None
    while not stop.is_set():
        if connection is None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        try:
            connection.request("POST", f"/v2/models/{MODEL}/infer", body, headers)
            response = connection.getresponse()
            response.read()
            counts["ok" if response.status == 200 else "error"] += 1
        except TimeoutError:
            counts["timed_out"] += 1
            connection.close()  # the client gives up: its connection goes
            connection = None
        except OSError:
            counts["error"] += 1
            connection.close()
            connection = None
    if connection is not None:
        connection.close()


def _model_runs(server: Server) -> int:
    return sum(batches for batches, _ in mlserve_compute(server, MODEL).values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--timeout-ms", type=float, default=50)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--layers", type=int, default=40)
    parser.add_argument("--batching", action="store_true", help="dynamic batching on")
    parser.add_argument("--serve", help="command that runs `mlserve serve` (default: this one)")
    args = parser.parse_args()

    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 512], "data": [0.5] * 512}]}
    ).encode()
    counts = [{"ok": 0, "timed_out": 0, "error": 0} for _ in range(args.clients)]
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        config = "max_batch_size: 8\nsession: {intra_op_threads: 1}\nwarmup: {kind: random}\n"
        if args.batching:
            config += "dynamic_batching: {}\n"
        examples.write_model(
            repo, MODEL, examples.matmul_chain_model(512, args.layers), config=config
        )
        ports = Ports.pick()
        command = serve_command(
            repo, grpc_port=ports.grpc, http_port=ports.http, metrics_port=ports.metrics
        )
        if args.serve:
            command = [*shlex.split(args.serve), *command[_SERVE_PREFIX:]]
        server = Server("mlserve", command, r"mlserve ready: True", ports)  # on core 0
        try:
            os.sched_setaffinity(0, {1})  # the client threads inherit core 1
            runs, cancelled = _model_runs(server), mlserve_cancelled(server, MODEL)
            stop = threading.Event()
            threads = [
                threading.Thread(
                    target=_client, args=(ports.http, body, args.timeout_ms / 1000, stop, c)
                )
                for c in counts
            ]
            for thread in threads:
                thread.start()
            time.sleep(args.seconds)
            stop.set()
            for thread in threads:
                thread.join()
            time.sleep(2 * args.timeout_ms / 1000 + 1)  # what is still queued drains
            runs = _model_runs(server) - runs
            withdrawn = mlserve_cancelled(server, MODEL) - cancelled
        finally:
            server.stop()
    total = {k: sum(c[k] for c in counts) for k in counts[0]}
    sent = sum(total.values())
    print(
        f"{args.clients} clients, {args.timeout_ms:.0f} ms timeout, {args.seconds:.0f} s, "
        f"batching {'on' if args.batching else 'off'}: sent {sent}, answered in time "
        f"{total['ok']} ({total['ok'] / args.seconds:.0f}/s), timed out {total['timed_out']}, "
        f"errors {total['error']}; server: model runs {runs}, withdrawn (cancelled) {withdrawn:.0f}"
    )


if __name__ == "__main__":
    main()
