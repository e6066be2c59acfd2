"""The load benchmark runner keeps working: `python -m benchmarks.load --quick`
(identity model, mlserve and the transport floors, h2load and wrk) writes its
results, checks mlserve's answers, and counts every success on the server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.load.workload import RAW_BATCHES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _under_each_grpc_impl() -> None:
    """Once, not per transport: the runner starts its own servers in every mode."""


def test_quick_run_writes_results_for_every_mode(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.load", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (out_dir,) = tmp_path.iterdir()
    results = json.loads((out_dir / "results.json").read_text())
    table = (out_dir / "results.md").read_text()
    assert table.startswith("Server on core 0")
    assert "onnxruntime inside mlserve at c=8" in table
    assert (out_dir / "identity.png").stat().st_size > 10_000
    runs = results["runs"]
    assert not [r for r in runs if "error" in r]
    mlserve = [r for r in runs if r["server"] == "mlserve"]
    modes = {(r["mode"], r["batched"], r["concurrency"]) for r in mlserve}
    assert modes == {
        (mode, batched, c)
        for mode in ("grpc", "grpc-stream", "http-binary", "http-json")
        for batched in (False, True)
        for c in (1, 8)
    }
    for run in mlserve:
        assert run["rps"] > 0 and run["cpu_us"] > 0
        # h2load and wrk count the answers they saw; the server counts its
        # successes: every answer was one, and at most the requests still in
        # flight when a window closed went unseen (streams carry 16 each).
        per_request = 16 if run["mode"] == "grpc-stream" else 1
        seen = run["client_requests"] * per_request
        in_flight = len(run["windows"]) * run["concurrency"] * per_request
        assert seen <= run["successes"] <= seen + in_flight, run
        # The server's batch statistics for the same windows: every success
        # ran in one of them (one row a request), besides those still in flight.
        batched_rows = sum(int(size) * count for size, (count, _) in run["batches"].items())
        assert run["successes"] <= batched_rows <= run["successes"] + in_flight, run
    # At the top concurrency every native window has raw onnxruntime's beside it.
    for run in mlserve:
        raw_rates = [w.get("raw_rows_per_s", 0.0) for w in run["windows"]]
        assert all(rate > 0 for rate in raw_rates) == (run["concurrency"] == 8), run
    assert "against raw onnxruntime at batch" in table
    floors = {r["mode"] for r in runs if r["server"] == "floor"}
    assert floors == {"grpc", "grpc-stream", "http-json"}
    # Raw onnxruntime is measured at every batch size the runner names.
    assert set(results["raw_onnxruntime_rows_per_s"]["identity"]) == {str(b) for b in RAW_BATCHES}
