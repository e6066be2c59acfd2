"""Check mlserve against Triton's perf_analyzer: no errors, and exact request counts.

What it does (stdlib + numpy only):

1. Writes the example model repository (`python -m mlserve.examples`) into a
   temp dir and starts `mlserve serve` on it, pinned with `taskset` to core 0
   (`--server-cpus`), on free loopback ports; waits for `mlserve ready: True`
   and for model `mlp` (FP32 [-1,64] -> [-1,10], max_batch_size 64) to be ready.
2. Sweep: for each interface (gRPC and HTTP) and each concurrency (1, 8, 32,
   64), one perf_analyzer run on `mlp`, pinned to core 1 (`--client-cpus`),
   windows of 1000 requests each (`--window-requests`; count windows, see
   pa_runs.sweep_run for why not perf_analyzer's time windows; from
   concurrency 32 on, in --async mode, for the same reason), report in CSV
   (`-f`). Asserts: perf_analyzer exits 0 and prints no error; the server's
   `mlserve_request_failure_total` and `mlserve_request_unrouted_total` did not
   move; its `mlserve_request_success_total{model="mlp"}` delta equals the
   delta of the success count in its own statistics extension
   (`/v2/models/mlp/stats`) and is >= the requests perf_analyzer measured in
   its windows (it also sends requests outside them, so no exact check here).
   A point where perf_analyzer finds no stable measurement (the server's
   throughput swings between windows at HTTP concurrency 32-64) is run once
   more with 2.5x as many trials; still unstable is a warning, not a failure.
   A point killed at its timeout while the server kept answering (perf_analyzer
   stalled in its own bookkeeping, pa_runs._judge_kill) is a warning too.
3. Batched run: per interface, `-b 8` at concurrency 8 with a fixed
   `--request-count` and `--profile-export-file`: perf_analyzer's export must
   list exactly that many requests, each with one response, and the server
   must count that many successes and 8x as many rows
   (`mlserve_inference_rows_total`). Then the same exact count over gRPC
   `ModelStreamInfer` (`--streaming`, concurrency 64, 4x as many requests).
4. Load: per interface (default both), 64 concurrent clients for about 30 s.
   To know exactly how many requests the clients sent, perf_analyzer runs with
   `--request-count N --max-trials 1 --async` (it then sends exactly N requests,
   64 in flight, and measures them all in one window; N = throughput measured
   at that concurrency in step 2 x `--load-seconds`). Asserts: perf_analyzer
   exited 0 and measured N; the server's success counter delta == N == its
   statistics success delta; rows delta == N; failures and unrouted deltas ==
   0; in-flight gauge back to 0.
   Why those flags (perf_analyzer 2.51 behaviour, not mlserve's): without
   --request-count its window counts leave out the requests it sends before
   and after its windows, so nothing it prints is the exact number sent; and
   with --request-count in the default sync mode it often hangs (3 of 4 tries
   at concurrency 64) after all N answers arrived: the server has counted N
   and has nothing in flight, perf_analyzer's workers are done, and its main
   thread sleeps in InferenceProfiler::Measure waiting for N collected
   records, so it loses some. --async never hung (10 of 10). Count-mode
   throughput is coarse: perf_analyzer polls its count window once a second.
5. Prints a table (interface, concurrency, batch, throughput infer/s, p50/p99
   latency us, the count comparison) and, with `--out PATH`, writes it all as
   JSON. Stops the server with SIGTERM and checks that it exits 0 and that its
   log has no traceback. Exit status 0 when every check passed, 1 otherwise.

Run from the repo root (after `benchmarks/perf_analyzer/setup.sh`):

    .venv/bin/python benchmarks/perf_analyzer/check_mlserve.py
    .venv/bin/python benchmarks/perf_analyzer/check_mlserve.py --out /tmp/pa.json
    .venv/bin/python benchmarks/perf_analyzer/check_mlserve.py --concurrency 1,64 \
        --load-seconds 10 --load-interfaces grpc --keep-tmp

It takes about 2.5-3.5 minutes with the defaults on a 2-core machine (longer
when a sweep point needs its retry).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mlserve_process import HERE, MODEL, REPO, log, start_server, stop_server
from pa_runs import PaRun, counted_run, fmt_table, sweep_run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--interfaces", default="grpc,http", help="sweep interfaces")
    p.add_argument("--concurrency", default="1,8,32,64", help="sweep concurrencies")
    p.add_argument(
        "--window-requests",
        type=int,
        default=1000,  # 3000 stalled perf_analyzer at 14-20k infer/s (c=32-64, 2 cores)
        help="requests per sweep window (count windows); 0: time windows",
    )
    p.add_argument(
        "--async-from",
        type=int,
        default=32,
        help="sweep concurrencies from this one on run perf_analyzer with --async",
    )
    p.add_argument(
        "--measurement-interval", type=int, default=2000, help="ms per window, time windows only"
    )
    p.add_argument(
        "--stability-percentage",
        type=float,
        default=10.0,
        help="perf_analyzer -s (its default, 10)",
    )
    p.add_argument("--max-trials", type=int, default=10, help="perf_analyzer -r")
    p.add_argument(
        "--unstable-retry-factor",
        type=float,
        default=2.5,
        help="retry an unstable sweep point once with this many times as many trials "
        "(<= 1: no retry)",
    )
    p.add_argument(
        "--batch-count",
        type=int,
        default=500,
        help="requests of the batched (-b 8) exact-count run; 0 skips it",
    )
    p.add_argument(
        "--load-interfaces",
        default="grpc,http",
        help="interfaces of the exact-count load (empty: skip it)",
    )
    p.add_argument("--load-concurrency", type=int, default=64)
    p.add_argument("--load-seconds", type=float, default=30.0)
    p.add_argument("--server-cpus", default="0", help="taskset cpu list for the server")
    p.add_argument("--client-cpus", default="1", help="taskset cpu list for perf_analyzer")
    p.add_argument(
        "--perf-analyzer",
        type=Path,
        default=HERE / "perf_analyzer",
        help="perf_analyzer (default: the wrapper beside this script)",
    )
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, CSVs)")
    args = p.parse_args(argv)
    interfaces = [s for s in args.interfaces.split(",") if s]
    load_ifaces = [s for s in args.load_interfaces.split(",") if s]
    concurrencies = [int(s) for s in args.concurrency.split(",") if s]
    for iface in interfaces + load_ifaces:
        if iface not in ("grpc", "http"):
            p.error(f"unknown interface {iface!r}")

    t_start = time.monotonic()
    load_start = os.getloadavg()
    if shutil.which("taskset") is None:
        log("taskset not found (util-linux)")
        return 2
    probe = subprocess.run(
        [str(args.perf_analyzer), "--version"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        log(
            f"perf_analyzer does not run ({probe.returncode}): {probe.stderr.strip()}\n"
            f"run {HERE / 'setup.sh'} first"
        )
        return 2
    pa_version = probe.stdout.strip()

    workdir = Path(tempfile.mkdtemp(prefix="check_mlserve_"))
    log(f"workdir {workdir}")
    repo = workdir / "models"
    subprocess.run(
        [sys.executable, "-m", "mlserve.examples", str(repo)],
        check=True,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    runs: list[PaRun] = []
    result: dict[str, Any] = {"perf_analyzer": pa_version, "model": MODEL}
    server = None
    fatal = None
    try:
        server = start_server(repo, workdir, args.server_cpus, timeout=120)
        log(f"server up: grpc={server.grpc} http={server.http} metrics={server.metrics}")
        result["server"] = {
            "grpc": server.grpc,
            "http": server.http,
            "metrics": server.metrics,
            "cpus": args.server_cpus,
        }
        for iface in interfaces:
            for conc in concurrencies:
                runs.extend(sweep_run(args, server, workdir, iface, conc))
        if args.batch_count:
            for iface in interfaces:
                runs.append(
                    counted_run(
                        args,
                        server,
                        workdir,
                        f"batched_{iface}_b8",
                        interface=iface,
                        concurrency=8,
                        batch=8,
                        count=args.batch_count,
                        export=True,
                        expect_s=10,
                    )
                )
        if args.batch_count and "grpc" in interfaces:
            runs.append(
                counted_run(
                    args,
                    server,
                    workdir,
                    "streaming_grpc_c64",
                    interface="grpc",
                    concurrency=64,
                    batch=1,
                    count=args.batch_count * 4,
                    export=True,
                    expect_s=10,
                    streaming=True,
                )
            )
        for iface in load_ifaces:
            thr = next(
                (
                    r.throughput
                    for r in reversed(runs)
                    if r.mode == "windows"
                    and r.interface == iface
                    and r.concurrency == args.load_concurrency
                    and r.throughput
                ),
                None,
            )
            if thr is None:  # not in the sweep: calibrate with a short counted run
                cal = counted_run(
                    args,
                    server,
                    workdir,
                    f"calibrate_{iface}",
                    interface=iface,
                    concurrency=args.load_concurrency,
                    batch=1,
                    count=2000,
                    export=False,
                    expect_s=10,
                )
                runs.append(cal)
                thr = cal.throughput or 1000.0
            count = max(args.load_concurrency, math.ceil(thr * args.load_seconds))
            runs.append(
                counted_run(
                    args,
                    server,
                    workdir,
                    f"load_{iface}_c{args.load_concurrency}",
                    interface=iface,
                    concurrency=args.load_concurrency,
                    batch=1,
                    count=count,
                    export=False,
                    expect_s=args.load_seconds,
                )
            )
            if server.proc.poll() is not None:
                break
    except Exception as exc:  # report whatever stopped the check
        fatal = f"{type(exc).__name__}: {exc}"
        log(f"FATAL: {fatal}")
    finally:
        if server is not None:
            alive_before_stop = server.proc.poll() is None
            result["server_exit"] = stop_server(server)
            result["server_exit"]["alive_until_stop"] = alive_before_stop
            server_log = server.log_path.read_text(errors="replace")
            result["server_log_problems"] = [
                ln
                for ln in server_log.splitlines()
                if re.search(r"Traceback|\bERROR\b|\bCRITICAL\b|Exception", ln)
            ][:50]

    problems: list[str] = []
    if fatal:
        problems.append(fatal)
    for r in runs:
        problems += [f"{r.name}: {e}" for e in r.errors]
    if server is not None:
        ex = result["server_exit"]
        if not ex["alive_until_stop"]:
            problems.append(f"server died during the check (exit {ex['exit_code']})")
        elif ex.get("exit_code") != 0:
            problems.append(f"server exit after SIGTERM: {ex}")
        problems += [f"server log: {ln}" for ln in result["server_log_problems"]]
        if problems:
            log(f"server log tail ({server.log_path}):\n{server.log_tail()}")

    elapsed = time.monotonic() - t_start
    table = fmt_table(runs)
    print(table)
    print()
    for r in runs:
        if r.mode == "request_count":
            c = r.counts
            print(
                f"{r.name}: clients sent {r.sent}; perf_analyzer measured "
                f"{r.pa_request_count}; profile export {r.exported}; server "
                f"mlserve_request_success_total +{c.get('metrics_success')}, statistics "
                f"success +{c.get('stats_success')}, rows +{c.get('metrics_rows')}, failures "
                f"+{c.get('metrics_failure')}, unrouted +{c.get('metrics_unrouted')} "
                f"({r.wall_s:.1f}s) -> {'EQUAL' if r.ok else 'MISMATCH/ERROR'}"
            )
    warnings = [
        f"{r.name}: no stable measurement in {r.attempts} tries (windows "
        f"{[round(t) for t, _ in r.passes]} infer/s); shown: last window"
        for r in runs
        if r.unstable and not r.superseded
    ] + [f"{r.name}: {w}" for r in runs for w in r.warnings]
    load_end = os.getloadavg()
    print(
        f"load average at start {load_start[0]:.2f}, at end {load_end[0]:.2f} (1 min; > 2 "
        "means something else shared the 2 cores and the timings are noisy)"
    )
    print(
        f"\n{'PASS' if not problems else 'FAIL'}: {len(runs)} perf_analyzer runs, "
        f"{len(problems)} problems, {len(warnings)} warnings, {elapsed:.0f}s"
    )
    for prob in problems:
        print(f"  - {prob}")
    for w in warnings:
        print(f"  warning: {w}")

    result.update(
        {
            "elapsed_s": round(elapsed, 1),
            "passed": not problems,
            "problems": problems,
            "warnings": warnings,
            "loadavg_start": load_start,
            "loadavg_end": load_end,
            "runs": [{k: v for k, v in vars(r).items()} | {"ok": r.ok} for r in runs],
            "table": table,
            "workdir": str(workdir) if args.keep_tmp else None,
        }
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        log(f"wrote {args.out}")
    if args.keep_tmp or problems:
        log(f"kept {workdir} (server.log, perf_analyzer outputs and CSVs)")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
