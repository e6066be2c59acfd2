"""check_mlserve's verdict on a perf_analyzer sweep point killed at its timeout:
perf_analyzer's own stall (a warning) only while the server kept answering."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "perf_analyzer"))
from pa_runs import PaRun, _judge_kill


def _killed(mode: str, passes: list[float], successes: int, wall_s: float = 90.0) -> PaRun:
    run = PaRun("sweep_http_c32", "http", 32, 1, mode, wall_s=wall_s)
    run.passes = [(rate, 2000) for rate in passes]
    run.counts = {"metrics_success": successes}
    _judge_kill(run, 90.0)
    return run


def test_a_stall_while_the_server_kept_answering_is_a_warning() -> None:
    run = _killed("windows", [14234.0, 11899.0, 12286.0], successes=1_069_058)
    assert run.ok and run.stalled
    assert run.throughput == 12286.0
    assert "answered 1069058 requests" in run.warnings[0]


@pytest.mark.parametrize(
    ("mode", "passes", "successes"),
    [
        ("windows", [14234.0, 11899.0, 12286.0], 90_000),  # the server slowed to 1k/s
        ("windows", [], 1_069_058),  # not one window measured
        ("request_count", [14234.0], 1_069_058),  # exact counts must finish
    ],
)
def test_any_other_kill_fails_the_point(mode: str, passes: list[float], successes: int) -> None:
    run = _killed(mode, passes, successes)
    assert not run.ok and not run.stalled
    assert "did not finish in 90s" in run.errors[0]
