"""perf_analyzer runs for check_mlserve.py: the command line, one run and
its outcome (CSV figures, errors, unstable windows), the throughput sweep, the
exact-count runs, and the table that prints them."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mlserve_process import MODEL, Server, log

# perf_analyzer output lines that mean something went wrong.
PA_ERROR_RE = re.compile(
    r"error|failed|unable|invalid|exception|abort|unsupported|not found|timed? ?out"
    r"|unavailable|refused|mismatch",
    re.IGNORECASE,
)
PA_UNSTABLE_RE = re.compile(r"Failed to obtain stable measurement", re.IGNORECASE)
# perf_analyzer's complaint about its own client-side timestamps ("Failed to update
# context stat: Timer not set correctly. Send time from T1 to T0", T0 < T1: its
# wall-clock send timer ran backwards). It says nothing about the server: warning.
PA_CLIENT_TIMER_RE = re.compile(r"Timer not set correctly", re.IGNORECASE)


@dataclass
class PaRun:
    name: str
    interface: str
    concurrency: int
    batch: int
    mode: str  # "windows" (the sweep) | "request_count"
    rc: int | None = None
    wall_s: float = 0.0
    throughput: float | None = None
    p50_us: int | None = None
    p99_us: int | None = None
    avg_us: int | None = None
    pa_request_count: int | None = None
    pa_server_success: int | None = None
    sent: int | None = None  # exact number sent, where known (request_count mode)
    exported: int | None = None  # requests in --profile-export-file
    exported_responses: int | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    passes: list[tuple[float, int]] = field(default_factory=list)  # -v: (infer/s, avg us)
    unstable: bool = False  # perf_analyzer found no 3 windows within --stability-percentage
    attempts: int = 1
    superseded: bool = False  # an unstable try that was run again
    stalled: bool = False  # killed while the server kept answering at its measured rate
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    output_path: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors


def pa_base(
    args: argparse.Namespace, server: Server, interface: str, concurrency: int, batch: int
) -> list[str]:
    url = server.grpc if interface == "grpc" else server.http
    cmd = [
        "taskset",
        "-c",
        args.client_cpus,
        str(args.perf_analyzer),
        "-m",
        MODEL,
        "-i",
        interface,
        "-u",
        url,
        "--concurrency-range",
        str(concurrency),
    ]
    if batch != 1:
        cmd += ["-b", str(batch)]
    return cmd


def run_pa(
    run: PaRun,
    cmd: list[str],
    *,
    workdir: Path,
    server: Server,
    timeout: float,
    csv_path: Path,
    export_path: Path | None,
) -> None:
    out_path = workdir / f"{run.name}.out"
    run.output_path = str(out_path)
    before = server.settled_snapshot()
    log(f"{run.name}: {' '.join(cmd)}")
    t0 = time.monotonic()
    with open(out_path, "wb") as fh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True
        )
        killed = False
        try:
            run.rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed = True
    run.wall_s = time.monotonic() - t0
    after = server.settled_snapshot()
    run.counts = after.delta(before)
    text = out_path.read_text(errors="replace")

    # --- perf_analyzer's own verdict
    run.passes = [
        (float(a), int(b))
        for a, b in re.findall(
            r"Pass \[\d+\] throughput: ([\d.]+) infer/sec\. Avg latency: (\d+) usec", text
        )
    ]
    for line in text.splitlines():
        s = line.strip()
        if PA_UNSTABLE_RE.search(s):
            run.unstable = True
        elif PA_CLIENT_TIMER_RE.search(s):
            run.warnings.append(f"perf_analyzer (client-side timer): {s}")
        elif PA_ERROR_RE.search(s):
            run.errors.append(f"perf_analyzer: {s}")
        elif s.startswith("WARNING"):
            run.warnings.append(s)
    if killed:
        _judge_kill(run, timeout)
    elif run.rc not in (0, None) and not run.unstable:
        run.errors.append(f"perf_analyzer exited {run.rc}")
    if m := re.search(r"Client:\s*\n\s*Request count: (\d+)", text):
        run.pa_request_count = int(m.group(1))
    if m := re.search(r"Successful request count: (\d+)", text):
        run.pa_server_success = int(m.group(1))
    if m := re.search(r"Client:.*?Avg latency: (\d+) usec", text, re.DOTALL):
        run.avg_us = int(m.group(1))
    if csv_path.exists():
        rows = list(csv.DictReader(csv_path.open()))
        if rows:
            row = rows[-1]
            run.throughput = float(row["Inferences/Second"])
            run.p50_us = int(row["p50 latency"])
            run.p99_us = int(row["p99 latency"])
    elif run.rc == 0:
        run.errors.append(f"perf_analyzer wrote no CSV report ({csv_path.name})")
    elif run.unstable and run.passes:  # no report: show the last window's figures
        run.throughput, run.avg_us = run.passes[-1]
    if export_path is not None and export_path.exists():
        data = json.loads(export_path.read_text())
        reqs = [r for e in data["experiments"] for r in e["requests"]]
        run.exported = len(reqs)
        run.exported_responses = sum(len(r.get("response_timestamps", [])) for r in reqs)
        resp_batches = [
            np.asarray(out[name]).size
            for r in reqs
            for out in r.get("response_outputs", [])
            for name in out
        ]
        if resp_batches and set(resp_batches) != {10 * run.batch}:
            run.errors.append(
                f"response 'y' sizes {sorted(set(resp_batches))}, expected {10 * run.batch}"
            )

    # --- the server's counters
    c = run.counts
    if c["metrics_failure"] or c["stats_fail"]:
        run.errors.append(
            f"server counted failures: metrics {c['metrics_failure']} "
            f"{c['metrics_failure_by_reason']}, statistics {c['stats_fail']}"
        )
    if c["metrics_unrouted"]:
        run.errors.append(f"server counted {c['metrics_unrouted']} unrouted requests")
    if c["metrics_inflight_after"]:
        run.errors.append(f"in-flight gauge is {c['metrics_inflight_after']} after the run")
    if c["metrics_success"] != c["stats_success"]:
        run.errors.append(
            f"success counter delta {c['metrics_success']} != statistics success delta "
            f"{c['stats_success']}"
        )
    if c["metrics_rows"] != c["metrics_success"] * run.batch:
        run.errors.append(
            f"rows delta {c['metrics_rows']} != success delta {c['metrics_success']} x batch "
            f"{run.batch}"
        )
    if c["stats_inference_count"] != c["stats_success"] * run.batch:
        run.errors.append(
            f"statistics inference_count delta {c['stats_inference_count']} != success "
            f"delta {c['stats_success']} x batch {run.batch}"
        )
    if run.sent is not None:
        for label, got in (
            ("perf_analyzer measured", run.pa_request_count),
            ("profile export lists", run.exported),
            ("profile export responses", run.exported_responses),
            ("server success counter", c["metrics_success"]),
            ("server statistics success", c["stats_success"]),
        ):
            if got is not None and got != run.sent:
                run.errors.append(f"{label} {got} != {run.sent} requests sent")
    elif run.pa_request_count is not None and c["metrics_success"] < run.pa_request_count:
        run.errors.append(
            f"server success delta {c['metrics_success']} < the "
            f"{run.pa_request_count} requests perf_analyzer measured"
        )
    status = (
        "FAIL" if not run.ok else "STALLED" if run.stalled else "UNSTABLE" if run.unstable else "ok"
    )
    log(
        f"{run.name}: {status} in {run.wall_s:.1f}s; throughput {run.throughput} infer/s, "
        f"p50 {run.p50_us} us, p99 {run.p99_us} us; sent {run.sent}, "
        f"pa counted {run.pa_request_count}, server +{c['metrics_success']} ok "
        f"+{c['metrics_failure']} failed"
    )
    for e in run.errors:
        log(f"  error: {e}")


def _judge_kill(run: PaRun, timeout: float) -> None:
    """A sweep point killed at its timeout: perf_analyzer's stall, or the server's?

    perf_analyzer 2.51 can stall in its own window bookkeeping against a fast
    server (see sweep_run) while its workers go on sending. That is a warning
    when the server kept answering all along, at least half the rate of the
    windows perf_analyzer did measure; anything else (no window measured, the
    server slowing down or stopping) fails the point. Server failures are
    checked on their own either way. Exact-count runs never pass this way."""
    rate = run.counts["metrics_success"] / run.wall_s if run.wall_s else 0.0
    measured = sorted(t for t, _ in run.passes)
    median = measured[len(measured) // 2] if measured else 0.0
    if run.mode == "windows" and median and rate >= 0.5 * median:
        run.stalled = True
        run.throughput, run.avg_us = run.passes[-1]
        run.warnings.append(
            f"perf_analyzer stalled after {len(measured)} window(s) and was killed at "
            f"{timeout:.0f}s; the server answered {run.counts['metrics_success']} requests "
            f"meanwhile ({rate:,.0f}/s; perf_analyzer's windows {median:,.0f}/s)"
        )
        return
    run.errors.append(
        f"perf_analyzer did not finish in {timeout:.0f}s (killed); the server answered "
        f"{rate:,.0f}/s meanwhile, its windows {median:,.0f}/s"
    )


def sweep_run(
    args: argparse.Namespace, server: Server, workdir: Path, interface: str, concurrency: int
) -> list[PaRun]:
    """Measurement windows of --window-requests requests each (count windows;
    0: time windows of --measurement-interval ms). If perf_analyzer finds no
    stable measurement (a loaded 2-core box is noisy), once more with
    --unstable-retry-factor times as many trials. Still unstable is a warning,
    not a failure: the counts are checked all the same.

    Why count windows: perf_analyzer 2.51 drops each measured request from its
    record vector one erase at a time, so closing a window costs (requests in
    the window) x (requests finished after it). Its workers keep sending
    meanwhile, so above a rate the next window finds more to erase and it
    never catches up: with its main thread sharing core 1 with 64 workers,
    time windows of 2 s stalled for minutes at about 19k infer/s over gRPC,
    and windows of 0.5 s at about 17k over HTTP. A window of a fixed request
    count keeps that cost down; from --async-from concurrency on, the sweep
    also runs perf_analyzer in --async mode (a few client threads in place of
    one a request), so its main thread gets its share of the core: in sync
    mode, count windows still stalled once at HTTP c=64 (about 15k infer/s),
    while --async finished 4 of 4 tries in under 7 s."""
    trials = args.max_trials
    attempts = 1 + (args.unstable_retry_factor > 1)
    tries: list[PaRun] = []
    for attempt in range(1, attempts + 1):
        name = f"sweep_{interface}_c{concurrency}" + (f"_try{attempt}" if attempt > 1 else "")
        run = PaRun(name, interface, concurrency, 1, "windows", attempts=attempt)
        csv_path = workdir / f"{name}.csv"
        if args.window_requests:
            windows = [
                "--measurement-mode",
                "count_windows",
                "--measurement-request-count",
                str(args.window_requests),
            ]
            window_s = args.window_requests / 500  # no sweep point runs under 500 infer/s
        else:
            windows = ["--measurement-interval", str(args.measurement_interval)]
            window_s = args.measurement_interval / 1000
        if concurrency >= args.async_from:
            windows.append("--async")
        cmd = [
            *pa_base(args, server, interface, concurrency, 1),
            *windows,
            "--stability-percentage",
            str(args.stability_percentage),
            "--max-trials",
            str(trials),
            "-f",
            str(csv_path),
            "-v",
        ]
        run_pa(
            run,
            cmd,
            workdir=workdir,
            server=server,
            timeout=trials * window_s * 1.5 + 60,
            csv_path=csv_path,
            export_path=None,
        )
        tries.append(run)
        if not run.unstable or not run.ok or attempt == attempts:
            break
        run.superseded = True
        trials = math.ceil(trials * args.unstable_retry_factor)
    return tries


def counted_run(
    args: argparse.Namespace,
    server: Server,
    workdir: Path,
    name: str,
    *,
    interface: str,
    concurrency: int,
    batch: int,
    count: int,
    export: bool,
    expect_s: float,
    streaming: bool = False,
) -> PaRun:
    run = PaRun(name, interface, concurrency, batch, "request_count")
    run.sent = count
    csv_path = workdir / f"{name}.csv"
    export_path = workdir / f"{name}.profile.json" if export else None
    cmd = [
        *pa_base(args, server, interface, concurrency, batch),
        "--request-count",
        str(count),
        "--max-trials",
        "1",
        "--async",
        "-f",
        str(csv_path),
    ]
    if export_path is not None:
        cmd += ["--profile-export-file", str(export_path)]
    if streaming:
        cmd.append("--streaming")  # gRPC ModelStreamInfer
    run_pa(
        run,
        cmd,
        workdir=workdir,
        server=server,
        timeout=expect_s * 3 + 60,
        csv_path=csv_path,
        export_path=export_path,
    )
    if export_path is not None and not args.keep_tmp and export_path.exists():
        export_path.unlink()
    return run


def fmt_table(runs: list[PaRun]) -> str:
    head = (
        "interface",
        "conc",
        "batch",
        "mode",
        "infer/s",
        "p50 us",
        "p99 us",
        "wall s",
        "sent",
        "pa count",
        "srv ok",
        "stats ok",
        "srv fail",
        "unrouted",
        "result",
    )
    rows = [head]
    for r in runs:
        c = r.counts
        rows.append(
            (
                r.interface,
                str(r.concurrency),
                str(r.batch),
                "count" if r.mode == "request_count" else "windows",
                "-" if r.throughput is None else f"{r.throughput:.0f}",
                "-" if r.p50_us is None else str(r.p50_us),
                "-" if r.p99_us is None else str(r.p99_us),
                f"{r.wall_s:.1f}",
                "?" if r.sent is None else str(r.sent),
                "-" if r.pa_request_count is None else str(r.pa_request_count),
                str(c.get("metrics_success", "-")),
                str(c.get("stats_success", "-")),
                str(c.get("metrics_failure", "-")),
                str(c.get("metrics_unrouted", "-")),
                "FAIL"
                if not r.ok
                else "retried"
                if r.superseded
                else "stalled"
                if r.stalled
                else "unstable"
                if r.unstable
                else "ok",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
