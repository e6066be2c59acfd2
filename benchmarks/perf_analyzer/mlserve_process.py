"""The mlserve process check_mlserve.py drives: start it pinned on free
loopback ports, read its counters (Prometheus text and V2 statistics) into
snapshots, stop it with SIGTERM and report how it exited."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlserve.loopback import serve_command

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


def start_server(repo: Path, workdir: Path, cpus: str, timeout: float) -> Server:
    log_path = workdir / "server.log"
    cmd = ["taskset", "-c", cpus, *serve_command(repo)]
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
