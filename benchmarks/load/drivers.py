"""The load generators, none of them ours: h2load (gRPC over h2c), wrk
(HTTP/1.1) and Triton's perf_analyzer. Each runs pinned to the client core and
returns plain figures; nothing here knows which server it is driving."""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CLIENT_CPU = "1"
INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"
STREAM_PATH = "/inference.GRPCInferenceService/ModelStreamInfer"
PERF_ANALYZER = Path(__file__).resolve().parents[1] / "perf_analyzer" / "perf_analyzer"
_WRK_SCRIPT = Path(__file__).with_name("wrk_post.lua")


@dataclass(frozen=True, slots=True)
class LoadFigures:
    """One measured window."""

    seconds: float
    requests: int  # answered requests as the client counts them (HTTP 2xx or any h2 answer)
    rps: float
    p50_us: float
    p99_us: float
    mean_us: float
    bad: int  # non-2xx (wrk); for h2load, see data_bytes
    data_bytes: int  # h2load: response DATA bytes, to count gRPC successes by size


def h2load(
    port: int, body: Path, concurrency: int, seconds: float, *, path: str = INFER_PATH
) -> LoadFigures:
    """One h2c connection with `concurrency` streams, as one gRPC channel;
    per-request times come from h2load's log file."""
    with tempfile.NamedTemporaryFile(suffix=".log") as log:
        command = [
            "taskset", "-c", CLIENT_CPU, "h2load", "-c", "1", "-m", str(concurrency),
            "-D", str(max(1, round(seconds))), f"--data={body}", f"--log-file={log.name}",
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            f"http://127.0.0.1:{port}{path}",
        ]  # fmt: skip
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
        times = _h2load_log(Path(log.name))
    return h2load_figures(proc.stdout + proc.stderr, times)


def h2load_figures(out: str, times: np.ndarray) -> LoadFigures:
    """h2load's summary and its per-request times -> one window's figures."""
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    # "finished in 2.00s" or, for a window just under a second, "999.95ms".
    rate = re.search(r"finished in ([0-9.]+)(ms|s), ([0-9.]+) req/s", out)
    data = re.search(r"traffic: .*?\((\d+)\) data", out)
    if not (done and rate and data):
        raise RuntimeError(f"h2load output not understood:\n{out[-2000:]}")
    return LoadFigures(
        seconds=float(rate.group(1)) / (1000 if rate.group(2) == "ms" else 1),
        requests=int(done.group(2)),
        rps=float(rate.group(3)),
        p50_us=_percentile(times, 50),
        p99_us=_percentile(times, 99),
        mean_us=float(times.mean()) if times.size else float("nan"),
        bad=int(done.group(1)) - int(done.group(2)),
        data_bytes=int(data.group(1)),
    )


def _h2load_log(path: Path) -> np.ndarray:
    """h2load --log-file: start (us since epoch), HTTP status, duration (us)."""
    text = path.read_text()
    if not text.strip():
        return np.empty(0)
    return np.loadtxt(path, usecols=2, ndmin=1, dtype=np.float64)


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


def wrk(
    port: int,
    url_path: str,
    body: Path,
    concurrency: int,
    seconds: float,
    *,
    content_type: str = "application/json",
    header_length: int | None = None,
) -> LoadFigures:
    """`concurrency` keep-alive connections from one wrk thread, POSTing `body`."""
    env = {"BODY": str(body), "CONTENT_TYPE": content_type}
    if header_length is not None:
        env["HEADER_LENGTH"] = str(header_length)
    command = [
        "taskset", "-c", CLIENT_CPU, "wrk", "-t", "1", "-c", str(concurrency),
        "-d", f"{max(1, round(seconds))}s", "--latency", "--timeout", "10s",
        "-s", str(_WRK_SCRIPT), f"http://127.0.0.1:{port}{url_path}",
    ]  # fmt: skip
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    out = proc.stdout + proc.stderr
    total = re.search(r"(\d+) requests in ([0-9.]+)(m?s)", out)
    rate = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if not (total and rate):
        raise RuntimeError(f"wrk output not understood:\n{out[-2000:]}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    lost = sum(int(g) for g in errors.groups()) if errors else 0
    window = float(total.group(2)) / (1000 if total.group(3) == "ms" else 1)
    return LoadFigures(
        seconds=window,
        requests=int(total.group(1)),
        rps=float(rate.group(1)),
        p50_us=_wrk_latency(out, "50%"),
        p99_us=_wrk_latency(out, "99%"),
        mean_us=_wrk_mean(out),
        bad=(int(bad.group(1)) if bad else 0) + lost,
        data_bytes=0,
    )


_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 6e7}


def _wrk_latency(out: str, label: str) -> float:
    found = re.search(rf"^\s+{re.escape(label)}\s+([0-9.]+)(us|ms|s|m)\s*$", out, re.M)
    return float(found.group(1)) * _UNITS[found.group(2)] if found else float("nan")


def _wrk_mean(out: str) -> float:
    found = re.search(r"Latency\s+([0-9.]+)(us|ms|s|m)", out)
    return float(found.group(1)) * _UNITS[found.group(2)] if found else float("nan")


def perf_analyzer(
    model: str, mode: str, port: int, concurrency: int, *, seconds: float, work: Path
) -> dict[str, Any]:
    """Throughput and p50/p99 from Triton's perf_analyzer (benchmarks/perf_analyzer/setup.sh).

    --async: in its default sync mode (one thread per concurrent request)
    perf_analyzer 2.51 starves itself on one core once the server is fast and
    never closes its second window (seen at 10k+ infer/s, concurrency 64).
    Stability 20% rather than 10%: on this shared 2-core machine three windows
    within 10% are often never seen at concurrency 64."""
    csv_file = work / f"pa-{model}-{mode}-{concurrency}.csv"
    command = [
        "taskset", "-c", CLIENT_CPU, str(PERF_ANALYZER), "-m", model,
        "-i", "http" if mode == "http" else "grpc", "-u", f"127.0.0.1:{port}",
        "--concurrency-range", str(concurrency), "--measurement-interval",
        str(int(seconds * 1000)), "-f", str(csv_file), "--async",
        "--stability-percentage", "20",
    ]  # fmt: skip
    if mode == "grpc-streaming":
        command.append("--streaming")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0 or not csv_file.exists():
        # perf_analyzer exits non-zero when no window pair was stable within
        # its trials, as well as on errors: keep its last words to tell which.
        return {"error": proc.returncode, "output": (proc.stdout + proc.stderr)[-400:]}
    header, row = csv_file.read_text().splitlines()[:2]
    values = dict(zip(header.split(","), row.split(","), strict=False))
    return {
        "rps": float(values["Inferences/Second"]),
        "p50_us": float(values["p50 latency"]),
        "p99_us": float(values["p99 latency"]),
    }
