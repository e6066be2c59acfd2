"""The canary judge: evidence about two tracks in, a verdict out.

A pure function (`judge`), no clock, no I/O: the rollout controller gathers
each track's requests, errors, latencies and outputs over the same time and
asks. Each check answers pass, hold (not enough evidence either way, or
worse than the tolerance but not yet proven) or fail; any fail is a
rollback, else any hold is a hold, else the step is promoted. "Not enough
evidence" is a hold, never a failure, so a canary with little traffic waits
instead of being rolled back (Flagger counts an empty window as a failed
check: flagger#1090, #1633).

The checks, and why each is valid when the judge looks every interval:

- errors: an always-valid confidence sequence on canary's error rate minus
  stable's over the whole rollout (`sequential.difference_sequence`): a
  rollback once its lower bound is above zero (an A/A canary is rolled back
  on errors with probability at most alpha / 2 over the whole rollout); a
  pass once its upper bound is within the tolerance (error_tolerance x
  stable's rate + error_tolerance_abs: a non-inferiority margin); a hold in
  between. Telling 1% from 0.5% takes about 12,000 requests a track at
  alpha 0.01, by any valid test: a canary is promoted no sooner. Once shown
  within the tolerance, later steps only watch for a rollback (the
  controller passes `errors_cleared`).

alpha bounds the chance that an A/A canary is rolled back by any check over
the whole rollout: a third each to errors, latency (rank and tail) and
outputs (agreement and distribution).
- latency: the whole distribution by rank (Mann-Whitney U, one-sided) plus
  a tolerance on the ratio of medians (as Kayenta pairs a rank test with an
  effect size); and a tail check: the share of canary requests slower than
  stable's high quantile, against a multiple of what that quantile leaves
  above it. The tail check catches a canary that is only worse in spread,
  which a rank test misses (kayenta#780). Both spend alpha across looks
  (`sequential.spent_alpha`).
- outputs: on mirrored requests, the share whose answers agree (argmax, or
  within tolerance), with a Clopper-Pearson bound against a threshold; on
  split traffic, the Jensen-Shannon distance between the two tracks' binned
  outputs, flagged when it passes a practical floor and a G-test says it is
  more than sampling noise (the distance's small-sample bias is about
  (k - 1) / n, so a fixed threshold alone flags small windows).
- quality: measured quality per version, when the feedback loop supplies it."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from scipy.spatial import distance

from mlserve.router.sequential import difference_sequence, spent_alpha

_EMPTY = np.zeros(0, np.float64)


@dataclass(frozen=True, slots=True)
class OutputSample:
    """A sample of one output's per-request values on one track: class
    labels (categorical) or a number per request."""

    values: np.ndarray
    categorical: bool = False


@dataclass(frozen=True, slots=True)
class TrackEvidence:
    """What one track did over a span: requests routed to it, of them the
    ones that failed on the server's side, and samples of the answered ones'
    latencies and outputs."""

    requests: int = 0
    errors: int = 0
    latencies_s: np.ndarray = field(default_factory=lambda: _EMPTY)
    outputs: Mapping[str, OutputSample] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Evidence:
    """The judge's input: this step's windows (both tracks over the same
    time), the rollout's running totals (for the error test), the mirrored
    comparisons of this step, and which look this is (from 1)."""

    stable: TrackEvidence
    canary: TrackEvidence
    stable_total: TrackEvidence
    canary_total: TrackEvidence
    look: int
    errors_cleared: bool = False  # an earlier look of this rollout passed the error check
    mirrored_compared: int = 0
    mirrored_agreed: int = 0
    quality_stable: float | None = None
    quality_canary: float | None = None


@dataclass(frozen=True, slots=True)
class JudgeSettings:
    """Thresholds, with the defaults documented in README (Roll out a new version)."""

    alpha: float = 0.01
    min_requests: int = 200
    error_mixture_sd: float = 0.005
    error_tolerance: float = 0.5
    error_tolerance_abs: float = 0.001
    latency_tolerance: float = 0.10
    latency_tail_quantile: float = 0.99
    latency_tail_factor: float = 3.0
    agreement_min: float = 0.95
    output_distance_max: float = 0.1
    output_bins: int = 10
    quality_max_drop: float = 0.02


class Outcome(enum.Enum):
    PASS = "pass"
    HOLD = "hold"
    FAIL = "fail"
    SKIPPED = "skipped"


class Action(enum.Enum):
    PROMOTE = "promote"
    HOLD = "hold"
    ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class Check:
    """One check's outcome, what it saw, and the figures behind it."""

    name: str
    outcome: Outcome
    detail: str
    figures: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str  # the deciding check's name, "passed" or "not_enough_requests"
    checks: tuple[Check, ...]

    @property
    def detail(self) -> str:
        deciding = [c for c in self.checks if c.name == self.reason]
        return deciding[0].detail if deciding else self.reason


def judge(evidence: Evidence, settings: JudgeSettings) -> Verdict:
    """Promote, hold or roll back, from the evidence alone."""
    checks = (
        _volume(evidence, settings),
        _errors(evidence, settings),
        *_latency(evidence, settings),
        _agreement(evidence, settings),
        *_output_distributions(evidence, settings),
        _quality(evidence, settings),
    )
    for outcome, action in ((Outcome.FAIL, Action.ROLLBACK), (Outcome.HOLD, Action.HOLD)):
        for check in checks:
            if check.outcome is outcome:
                return Verdict(action, check.name, checks)
    return Verdict(Action.PROMOTE, "passed", checks)


def _volume(evidence: Evidence, settings: JudgeSettings) -> Check:
    stable, canary = evidence.stable.requests, evidence.canary.requests
    figures = {"stable_requests": stable, "canary_requests": canary}
    if min(stable, canary) < settings.min_requests:
        detail = (
            f"not enough requests this step: stable {stable}, canary {canary} "
            f"(min_requests {settings.min_requests} each)"
        )
        return Check("not_enough_requests", Outcome.HOLD, detail, figures)
    return Check("requests", Outcome.PASS, f"stable {stable}, canary {canary}", figures)


def _errors(evidence: Evidence, settings: JudgeSettings) -> Check:
    s, c = evidence.stable_total, evidence.canary_total
    if s.requests == 0 or c.requests == 0:
        return Check("errors", Outcome.SKIPPED, "no requests on a track yet")
    alpha = settings.alpha / 3  # errors, latency and outputs share alpha
    bound = difference_sequence(
        s.errors, s.requests, c.errors, c.requests, alpha=alpha, tau=settings.error_mixture_sd
    )
    rate_s, rate_c = s.errors / s.requests, c.errors / c.requests
    figures = {
        "stable_error_rate": rate_s,
        "canary_error_rate": rate_c,
        "difference": bound.estimate,
        "difference_low": bound.low,
        "difference_high": bound.high,
    }
    detail = (
        f"error rate canary {rate_c:.4%} against stable {rate_s:.4%} "
        f"(difference {bound.estimate:+.4%}, always-valid {1 - alpha:.2%} "
        f"bounds [{bound.low:+.4%}, {bound.high:+.4%}])"
    )
    if bound.low > 0:
        return Check("errors", Outcome.FAIL, detail, figures)
    allowed = rate_s * settings.error_tolerance + settings.error_tolerance_abs
    figures["allowed_difference"] = allowed
    if bound.high > allowed and not evidence.errors_cleared:  # not yet shown within it
        detail += f"; not yet shown within the tolerance {allowed:+.4%}"
        return Check("errors", Outcome.HOLD, detail, figures)
    return Check("errors", Outcome.PASS, detail, figures)


def _latency(evidence: Evidence, settings: JudgeSettings) -> tuple[Check, ...]:
    s, c = evidence.stable.latencies_s, evidence.canary.latencies_s
    if min(len(s), len(c)) < 2:
        return (Check("latency", Outcome.SKIPPED, "no latencies on a track yet"),)
    level = spent_alpha(settings.alpha / 6, evidence.look)  # a sixth each: rank, tail
    median_s, median_c = float(np.median(s)), float(np.median(c))
    ratio = median_c / median_s if median_s > 0 else 1.0
    p_value = float(stats.mannwhitneyu(c, s, alternative="greater").pvalue)
    figures = {
        "stable_median_s": median_s,
        "canary_median_s": median_c,
        "median_ratio": ratio,
        "p_value": p_value,
        "level": level,
    }
    detail = (
        f"median latency canary {median_c * 1e3:.3f} ms against stable {median_s * 1e3:.3f} ms "
        f"(x{ratio:.3f}; Mann-Whitney p {p_value:.2g}, level {level:.2g})"
    )
    worse = ratio > 1 + settings.latency_tolerance
    outcome = Outcome.PASS
    if worse:
        outcome = Outcome.FAIL if p_value < level else Outcome.HOLD
    return Check("latency", outcome, detail, figures), _tail(s, c, level, settings)


def _tail(s: np.ndarray, c: np.ndarray, level: float, settings: JudgeSettings) -> Check:
    """The share of canary latencies above stable's high quantile. That
    quantile needs ten stable samples above it to be estimated at all, so a
    small stable sample moves it down (0.99 needs 1,000)."""
    quantile = min(settings.latency_tail_quantile, 1 - 10 / len(s))
    if quantile <= 0.5:
        return Check("latency_tail", Outcome.SKIPPED, "too few stable latencies for a tail")
    threshold = float(np.quantile(s, quantile))
    above = int(np.count_nonzero(c > threshold))
    share = above / len(c)
    allowed = settings.latency_tail_factor * (1 - quantile)
    low = float(stats.beta.ppf(level, above, len(c) - above + 1)) if above else 0.0
    figures = {
        "quantile": quantile,
        "stable_quantile_s": threshold,
        "canary_share_above": share,
        "canary_share_above_low": low,
        "allowed_share": allowed,
    }
    detail = (
        f"{share:.2%} of canary requests slower than stable's p{quantile * 100:g} "
        f"({threshold * 1e3:.3f} ms; lower bound {low:.2%}, allowed {allowed:.2%})"
    )
    if low > allowed:
        return Check("latency_tail", Outcome.FAIL, detail, figures)
    if share > allowed:
        return Check("latency_tail", Outcome.HOLD, detail, figures)
    return Check("latency_tail", Outcome.PASS, detail, figures)


def _agreement(evidence: Evidence, settings: JudgeSettings) -> Check:
    n, agreed = evidence.mirrored_compared, evidence.mirrored_agreed
    if n == 0:
        return Check("output_agreement", Outcome.SKIPPED, "no mirrored answers compared")
    level = spent_alpha(settings.alpha / 6, evidence.look)  # a sixth: agreement
    low = float(stats.beta.ppf(level, agreed, n - agreed + 1)) if agreed else 0.0
    high = float(stats.beta.ppf(1 - level, agreed + 1, n - agreed)) if agreed < n else 1.0
    figures = {"compared": n, "agreed": agreed, "agreement_low": low, "agreement_high": high}
    detail = (
        f"{agreed} of {n} mirrored answers agree ({agreed / n:.2%}; bounds "
        f"[{low:.2%}, {high:.2%}], required {settings.agreement_min:.0%})"
    )
    if high < settings.agreement_min:
        return Check("output_agreement", Outcome.FAIL, detail, figures)
    if low < settings.agreement_min:
        return Check("output_agreement", Outcome.HOLD, detail, figures)
    return Check("output_agreement", Outcome.PASS, detail, figures)


def _output_distributions(evidence: Evidence, settings: JudgeSettings) -> tuple[Check, ...]:
    checks = []
    level = spent_alpha(settings.alpha / 6, evidence.look)  # a sixth: distributions
    for name, stable in evidence.stable.outputs.items():
        canary = evidence.canary.outputs.get(name)
        if canary is None or min(len(stable.values), len(canary.values)) < settings.min_requests:
            continue
        table = _binned(stable, canary, settings.output_bins)
        if table.shape[1] < 2:
            continue
        shares = table / table.sum(axis=1, keepdims=True)
        js = float(distance.jensenshannon(shares[0], shares[1], base=2))
        g_test = stats.chi2_contingency(table + 0.5, lambda_="log-likelihood")
        p_value = float(g_test.pvalue)
        figures = {"js_distance": js, "p_value": p_value, "level": level, "bins": table.shape[1]}
        detail = (
            f"output {name!r}: Jensen-Shannon distance {js:.3f} between the tracks "
            f"(max {settings.output_distance_max}; G-test p {p_value:.2g}, level {level:.2g})"
        )
        outcome = Outcome.PASS
        if js > settings.output_distance_max:
            outcome = Outcome.FAIL if p_value < level else Outcome.HOLD
        checks.append(Check("output_distribution", outcome, detail, figures))
    return tuple(checks)


def _binned(stable: OutputSample, canary: OutputSample, bins: int) -> np.ndarray:
    """A 2 x k table of counts: categories, or bins at stable's quantiles."""
    if stable.categorical:
        labels = np.union1d(stable.values, canary.values)
        return np.array(
            [
                [np.count_nonzero(sample.values == label) for label in labels]
                for sample in (stable, canary)
            ],
            np.float64,
        )
    edges = np.unique(np.quantile(stable.values, np.linspace(0, 1, bins + 1)[1:-1]))
    return np.array(
        [
            np.bincount(
                np.searchsorted(edges, sample.values, side="right"), minlength=len(edges) + 1
            )
            for sample in (stable, canary)
        ],
        np.float64,
    )


def _quality(evidence: Evidence, settings: JudgeSettings) -> Check:
    s, c = evidence.quality_stable, evidence.quality_canary
    if s is None or c is None:
        return Check("quality", Outcome.SKIPPED, "quality per version not measured")
    figures = {"stable_quality": s, "canary_quality": c}
    detail = f"quality canary {c:.4f} against stable {s:.4f} (max drop {settings.quality_max_drop})"
    if s - c > settings.quality_max_drop:
        return Check("quality", Outcome.FAIL, detail, figures)
    return Check("quality", Outcome.PASS, detail, figures)
