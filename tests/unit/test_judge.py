"""The canary judge as a pure function: synthetic windows in, verdicts out."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mlserve.router.judge import (
    Action,
    Evidence,
    JudgeSettings,
    Outcome,
    OutputSample,
    TrackEvidence,
    judge,
)
from mlserve.router.sequential import difference_sequence, spent_alpha

SETTINGS = JudgeSettings()


def latencies(
    rng: np.random.Generator, n: int, *, median_s: float = 0.01, sigma: float = 0.3
) -> np.ndarray:
    return median_s * np.exp(rng.standard_normal(n) * sigma)


def track(
    rng: np.random.Generator,
    requests: int,
    errors: int,
    *,
    median_s: float = 0.01,
    sigma: float = 0.3,
    outputs: dict[str, OutputSample] | None = None,
) -> TrackEvidence:
    return TrackEvidence(
        requests,
        errors,
        latencies(rng, min(requests - errors, 2000), median_s=median_s, sigma=sigma),
        outputs or {},
    )


def evidence(stable: TrackEvidence, canary: TrackEvidence, **kw: object) -> Evidence:
    return Evidence(stable, canary, stable, canary, look=int(kw.pop("look", 1)), **kw)  # type: ignore[arg-type]


def check(verdict_checks: tuple[object, ...], name: str) -> object:
    return next(c for c in verdict_checks if c.name == name)  # type: ignore[attr-defined]


def test_a_canary_like_stable_with_enough_traffic_is_promoted() -> None:
    rng = np.random.default_rng(1)
    labels = OutputSample(rng.integers(0, 3, 2000), categorical=True)
    scores = OutputSample(rng.standard_normal(2000))
    stable = track(rng, 20_000, 100, outputs={"label": labels, "score": scores})
    canary = track(
        rng,
        20_000,
        100,
        outputs={
            "label": OutputSample(rng.integers(0, 3, 2000), categorical=True),
            "score": OutputSample(rng.standard_normal(2000)),
        },
    )
    verdict = judge(evidence(stable, canary, mirrored_compared=500, mirrored_agreed=500), SETTINGS)
    assert verdict.action is Action.PROMOTE, verdict
    outcomes = {c.name: c.outcome for c in verdict.checks}
    assert outcomes["errors"] is Outcome.PASS
    assert outcomes["latency"] is Outcome.PASS and outcomes["latency_tail"] is Outcome.PASS
    assert outcomes["output_agreement"] is Outcome.PASS
    assert outcomes["output_distribution"] is Outcome.PASS
    assert outcomes["quality"] is Outcome.SKIPPED  # the feedback loop fills it


def test_a_canary_that_fails_more_is_rolled_back_on_errors() -> None:
    rng = np.random.default_rng(2)
    verdict = judge(evidence(track(rng, 5000, 25), track(rng, 5000, 250)), SETTINGS)
    assert verdict.action is Action.ROLLBACK and verdict.reason == "errors"
    figures = check(verdict.checks, "errors").figures  # type: ignore[attr-defined]
    assert figures["canary_error_rate"] == 0.05 and figures["difference_low"] > 0


def test_a_slower_canary_is_rolled_back_on_latency() -> None:
    rng = np.random.default_rng(3)
    verdict = judge(evidence(track(rng, 2000, 0), track(rng, 2000, 0, median_s=0.015)), SETTINGS)
    assert verdict.action is Action.ROLLBACK and verdict.reason == "latency"
    assert check(verdict.checks, "latency").figures["median_ratio"] > 1.4  # type: ignore[attr-defined]


def test_a_canary_worse_only_in_spread_is_caught_by_the_tail_check() -> None:
    """Same median, twice the spread: the rank test sees nothing (kayenta#780),
    the share of canary requests past stable's p99 does."""
    rng = np.random.default_rng(4)
    verdict = judge(evidence(track(rng, 2000, 0), track(rng, 2000, 0, sigma=0.6)), SETTINGS)
    assert verdict.action is Action.ROLLBACK and verdict.reason == "latency_tail", verdict
    assert check(verdict.checks, "latency").outcome is not Outcome.FAIL  # type: ignore[attr-defined]


def test_mirrored_answers_that_disagree_roll_back() -> None:
    rng = np.random.default_rng(5)
    stable, canary = track(rng, 1000, 0), track(rng, 1000, 0)
    verdict = judge(evidence(stable, canary, mirrored_compared=300, mirrored_agreed=30), SETTINGS)
    assert verdict.action is Action.ROLLBACK and verdict.reason == "output_agreement"


def test_split_traffic_outputs_from_another_distribution_roll_back() -> None:
    rng = np.random.default_rng(6)
    stable = track(rng, 2000, 0, outputs={"label": OutputSample(rng.integers(0, 2, 2000), True)})
    canary = track(rng, 2000, 0, outputs={"label": OutputSample(rng.integers(1, 3, 2000), True)})
    verdict = judge(evidence(stable, canary), SETTINGS)
    assert verdict.action is Action.ROLLBACK and verdict.reason == "output_distribution"


@pytest.mark.parametrize(("canary_requests", "canary_errors"), [(0, 0), (30, 1), (150, 3)])
def test_low_traffic_holds_and_never_fails(canary_requests: int, canary_errors: int) -> None:
    """An empty or thin canary window is not a failure (Flagger counts "no
    values found" as one: flagger#1090): the judge waits for evidence."""
    rng = np.random.default_rng(7)
    canary = TrackEvidence(canary_requests, canary_errors, latencies(rng, canary_requests))
    verdict = judge(evidence(track(rng, 5000, 25), canary), SETTINGS)
    assert verdict.action is Action.HOLD
    assert verdict.reason == "not_enough_requests"
    assert str(canary_requests) in verdict.detail


def test_errors_not_yet_shown_within_tolerance_hold_until_cleared() -> None:
    """Equal error rates on 1,000 requests a track cannot yet show the canary
    within the tolerance: a hold. Once an earlier look cleared it, only a
    rollback can follow."""
    rng = np.random.default_rng(8)
    stable, canary = track(rng, 1000, 5), track(rng, 1000, 5)
    assert judge(evidence(stable, canary), SETTINGS).reason == "errors"
    cleared = judge(evidence(stable, canary, errors_cleared=True), SETTINGS)
    assert check(cleared.checks, "errors").outcome is Outcome.PASS  # type: ignore[attr-defined]


def test_a_quality_drop_rolls_back() -> None:
    rng = np.random.default_rng(9)
    stable, canary = track(rng, 20_000, 0), track(rng, 20_000, 0)
    verdict = judge(evidence(stable, canary, quality_stable=0.91, quality_canary=0.85), SETTINGS)
    assert verdict.action is Action.ROLLBACK and verdict.reason == "quality"


def test_the_confidence_sequence_is_wider_than_a_fixed_horizon_interval_and_shrinks() -> None:
    """Always valid costs width: at every n it is wider than the one-look
    normal interval at the same level (scipy), and it narrows as n grows."""
    widths = []
    for n in (1_000, 10_000, 100_000):
        bound = difference_sequence(5 * n // 1000, n, 5 * n // 1000, n, alpha=0.01, tau=0.005)
        rate = (5 * n // 1000 + 1) / (n + 2)
        fixed = stats.norm.isf(0.005) * math.sqrt(2 * rate * (1 - rate) / n)
        assert bound.low < 0 < bound.high
        assert bound.high - bound.estimate > fixed
        widths.append(bound.high - bound.low)
    assert widths == sorted(widths, reverse=True)


def test_the_confidence_sequence_holds_at_every_look_in_aa_simulation() -> None:
    """Simulated A/A streams, looked at 50 times each: the share whose
    sequence ever excludes zero stays within alpha (the always-valid
    promise), where a z-test at every look exceeds it several times over."""
    rng = np.random.default_rng(10)
    streams, looks, batch, rate, alpha = 400, 50, 200, 0.02, 0.05
    ever_sequence = ever_fixed = 0
    for _ in range(streams):
        a = np.cumsum(rng.binomial(batch, rate, looks))
        b = np.cumsum(rng.binomial(batch, rate, looks))
        n = batch * np.arange(1, looks + 1)
        bounds = [
            difference_sequence(int(x), int(k), int(y), int(k), alpha=alpha, tau=0.01)
            for x, y, k in zip(a, b, n, strict=True)
        ]
        ever_sequence += any(bd.low > 0 or bd.high < 0 for bd in bounds)
        pooled = (a + b) / (2 * n)
        z = (b - a) / n / np.sqrt(np.maximum(2 * pooled * (1 - pooled) / n, 1e-12))
        ever_fixed += bool(np.any(np.abs(z) > stats.norm.isf(alpha / 2)))
    assert ever_sequence / streams <= alpha
    assert ever_fixed / streams > 3 * alpha


def test_spent_alpha_sums_to_alpha() -> None:
    assert math.isclose(sum(spent_alpha(0.01, k) for k in range(1, 200_000)), 0.01, rel_tol=1e-4)
