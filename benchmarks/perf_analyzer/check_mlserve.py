"""Check mlserve against Triton's perf_analyzer: no errors, and exact request counts.

What it does (stdlib + numpy only):

1. Writes the example model repository (`python -m mlserve.examples`) into a
   temp dir and starts `mlserve serve` on it, pinned with `taskset` to core 0
   (`--server-cpus`), on free loopback ports; waits for `mlserve ready: True`
   and for model `mlp` (FP32 [-1,64] -> [-1,10], max_batch_size 64) to be ready.
2. Sweep: for each interface (gRPC and HTTP) and each concurrency (1, 8, 32,
   64), one perf_analyzer run on `mlp`, pinned to core 1 (`--client-cpus`),
   time windows (`--measurement-interval`, default 2000 ms), report in CSV
   (`-f`). Asserts: perf_analyzer exits 0 and prints no error; the server's
   `mlserve_request_failure_total` and `mlserve_request_unrouted_total` did not
   move; its `mlserve_request_success_total{model="mlp"}` delta equals the
   delta of the success count in its own statistics extension
   (`/v2/models/mlp/stats`) and is >= the requests perf_analyzer measured in
   its windows (it also sends requests outside them, so no exact check here).
   A point where perf_analyzer finds no stable measurement (the server's
   throughput swings between 2 s windows at HTTP concurrency 32-64) is run once
   more with 2.5x longer windows; still unstable is a warning, not a failure.
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
import csv
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MODEL = "mlp"
COUNTERS = (
    "mlserve_request_success_total",
    "mlserve_request_failure_total",
    "mlserve_request_unrouted_total",
    "mlserve_inference_rows_total",
    "mlserve_inflight_requests",
)
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


# --------------------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(f"[check_mlserve {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


_LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples of the families in COUNTERS: name -> [(labels, value)]."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name in COUNTERS}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, brace, rest = head.partition("{")
        if name not in out:
            continue
        labels = dict(_LABEL_RE.findall(rest)) if brace else {}
        out[name].append((labels, float(value)))
    return out


@dataclass
class Snapshot:
    success: float
    failure: float  # all reasons, model mlp
    failure_by_reason: dict[str, float]
    unrouted: float  # all reasons (unrouted has no model label)
    rows: float
    inflight: float
    stats_success: int
    stats_fail: int
    stats_inference_count: int

    def delta(self, before: Snapshot) -> dict[str, Any]:
        reasons = set(self.failure_by_reason) | set(before.failure_by_reason)
        return {
            "metrics_success": int(self.success - before.success),
            "metrics_failure": int(self.failure - before.failure),
            "metrics_failure_by_reason": {
                r: int(self.failure_by_reason.get(r, 0) - before.failure_by_reason.get(r, 0))
                for r in sorted(reasons)
                if self.failure_by_reason.get(r, 0) != before.failure_by_reason.get(r, 0)
            },
            "metrics_unrouted": int(self.unrouted - before.unrouted),
            "metrics_rows": int(self.rows - before.rows),
            "metrics_inflight_after": int(self.inflight),
            "stats_success": self.stats_success - before.stats_success,
            "stats_fail": self.stats_fail - before.stats_fail,
            "stats_inference_count": self.stats_inference_count - before.stats_inference_count,
        }


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    log_path: Path
    grpc: str
    http: str
    metrics: str

    def snapshot(self) -> Snapshot:
        status, body = http_get(f"http://{self.metrics}/metrics")
        if status != 200:
            raise RuntimeError(f"GET /metrics -> {status}: {body[:300]!r}")
        fams = parse_prometheus(body.decode())

        def mlp_sum(name: str) -> float:
            return sum(v for lab, v in fams[name] if lab.get("model") == MODEL)

        by_reason: dict[str, float] = {}
        for lab, v in fams["mlserve_request_failure_total"]:
            if lab.get("model") == MODEL:
                by_reason[lab.get("reason", "")] = by_reason.get(lab.get("reason", ""), 0) + v
        status, body = http_get(f"http://{self.http}/v2/models/{MODEL}/stats")
        if status != 200:
            raise RuntimeError(f"GET /v2/models/{MODEL}/stats -> {status}: {body[:300]!r}")
        stats = json.loads(body)["model_stats"]
        s_ok = sum(int(m["inference_stats"]["success"]["count"]) for m in stats)
        s_fail = sum(int(m["inference_stats"]["fail"]["count"]) for m in stats)
        s_inf = sum(int(m.get("inference_count", 0)) for m in stats)
        return Snapshot(
            success=mlp_sum("mlserve_request_success_total"),
            failure=mlp_sum("mlserve_request_failure_total"),
            failure_by_reason=by_reason,
            unrouted=sum(v for _, v in fams["mlserve_request_unrouted_total"]),
            rows=mlp_sum("mlserve_inference_rows_total"),
            inflight=mlp_sum("mlserve_inflight_requests"),
            stats_success=s_ok,
            stats_fail=s_fail,
            stats_inference_count=s_inf,
        )

    def settled_snapshot(self, timeout: float = 5.0) -> Snapshot:
        """A snapshot once the counters stop moving and nothing is in flight
        (the server may count a request just after the client got its answer)."""
        deadline = time.monotonic() + timeout
        prev = self.snapshot()
        while True:
            time.sleep(0.25)
            cur = self.snapshot()
            steady = (cur.success, cur.failure, cur.stats_success, cur.rows) == (
                prev.success,
                prev.failure,
                prev.stats_success,
                prev.rows,
            )
            if (steady and cur.inflight == 0) or time.monotonic() > deadline:
                return cur
            prev = cur

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


def mlserve_command() -> list[str]:
    exe = Path(sys.executable).parent / "mlserve"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "mlserve.cli.main"]


def start_server(repo: Path, workdir: Path, cpus: str, timeout: float) -> Server:
    log_path = workdir / "server.log"
    cmd = [
        "taskset",
        "-c",
        cpus,
        *mlserve_command(),
        "serve",
        "--model-repository",
        str(repo),
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        "--metrics-port",
        "0",
        "--grpc-address",
        "127.0.0.1",
        "--http-address",
        "127.0.0.1",
        "--metrics-address",
        "127.0.0.1",
    ]
    log(f"starting server: {' '.join(cmd)}")
    with open(log_path, "wb") as fh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
        )
    listen_re = re.compile(r"mlserve listening: grpc=(\S+) http=(\S+) metrics=(\S+)")
    deadline = time.monotonic() + timeout
    addrs = None
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if addrs is None and (m := listen_re.search(text)):
            addrs = m.groups()
        if addrs is not None and "mlserve ready: True" in text:
            break
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before ready:\n{text}")
        time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError(f"server not ready in {timeout}s:\n{log_path.read_text()}")
    server = Server(proc, log_path, *addrs)
    while time.monotonic() < deadline:
        status, _ = http_get(f"http://{server.http}/v2/models/{MODEL}/ready")
        if status == 200:
            return server
        time.sleep(0.1)
    raise RuntimeError(f"model {MODEL} not ready in {timeout}s:\n{server.log_tail()}")


def stop_server(server: Server, timeout: float = 40.0) -> dict[str, Any]:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
            return {"exit_code": None, "error": f"did not exit {timeout}s after SIGTERM"}
    return {"exit_code": server.proc.returncode}


# --------------------------------------------------------------------- perf_analyzer


@dataclass
class PaRun:
    name: str
    interface: str
    concurrency: int
    batch: int
    mode: str  # "time_windows" | "request_count"
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
        try:
            run.rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            run.errors.append(f"perf_analyzer did not finish in {timeout:.0f}s (killed)")
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
    if run.rc not in (0, None) and not run.unstable:
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
    status = "FAIL" if not run.ok else "UNSTABLE" if run.unstable else "ok"
    log(
        f"{run.name}: {status} in {run.wall_s:.1f}s; throughput {run.throughput} infer/s, "
        f"p50 {run.p50_us} us, p99 {run.p99_us} us; sent {run.sent}, "
        f"pa counted {run.pa_request_count}, server +{c['metrics_success']} ok "
        f"+{c['metrics_failure']} failed"
    )
    for e in run.errors:
        log(f"  error: {e}")


def sweep_run(
    args: argparse.Namespace, server: Server, workdir: Path, interface: str, concurrency: int
) -> list[PaRun]:
    """Time windows; if perf_analyzer finds no stable measurement (a loaded 2-core box
    is noisy), once more with windows --unstable-retry-factor times as long. Still
    unstable is a warning, not a failure: the counts are checked all the same."""
    interval = args.measurement_interval
    attempts = 1 + (args.unstable_retry_factor > 1)
    tries: list[PaRun] = []
    for attempt in range(1, attempts + 1):
        name = f"sweep_{interface}_c{concurrency}" + (f"_try{attempt}" if attempt > 1 else "")
        run = PaRun(name, interface, concurrency, 1, "time_windows", attempts=attempt)
        csv_path = workdir / f"{name}.csv"
        cmd = [
            *pa_base(args, server, interface, concurrency, 1),
            "--measurement-interval",
            str(interval),
            "--stability-percentage",
            str(args.stability_percentage),
            "--max-trials",
            str(args.max_trials),
            "-f",
            str(csv_path),
            "-v",
        ]
        timeout = args.max_trials * interval / 1000 * 1.5 + 60
        run_pa(
            run,
            cmd,
            workdir=workdir,
            server=server,
            timeout=timeout,
            csv_path=csv_path,
            export_path=None,
        )
        tries.append(run)
        if not run.unstable or not run.ok or attempt == attempts:
            break
        run.superseded = True
        interval = int(interval * args.unstable_retry_factor)
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


# ------------------------------------------------------------------------------- main


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
                "count" if r.mode == "request_count" else "time",
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
                else "unstable"
                if r.unstable
                else "ok",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--interfaces", default="grpc,http", help="sweep interfaces")
    p.add_argument("--concurrency", default="1,8,32,64", help="sweep concurrencies")
    p.add_argument("--measurement-interval", type=int, default=2000, help="ms per window")
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
        help="retry an unstable sweep point once with windows this many times "
        "as long (<= 1: no retry)",
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
                    if r.mode == "time_windows"
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
