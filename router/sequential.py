"""Statistics that stay valid when a rollout looks at its data again and again.

A rollout judges its canary every interval. A fixed-horizon test (a z-test,
a Mann-Whitney U) run at every look rejects a true null far more often than
its level says: ten looks at 5% each reject an A/A canary about a fifth of the
time. Two remedies, both here:

- `difference_sequence`: an always-valid confidence sequence for the
  difference of two rates (the mixture sequential probability ratio test of
  Johari, Pekelis and Walsh, "Always valid inference", 2017, with a normal
  mixture of variance tau^2 over the effect). Its bounds hold at every look at
  once with probability 1 - alpha, however often and whenever one looks.
- `spent_alpha`: for the tests that have no sequential form here (rank tests,
  binomial bounds), the k-th look spends alpha * 6 / (pi^2 k^2), which sums to
  alpha over all looks (a Bonferroni bound across looks)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Interval:
    """A two-sided bound on a quantity: `low` <= it <= `high`."""

    estimate: float
    low: float
    high: float


def _smoothed_rate(events: int, trials: int) -> float:
    """The rate for the variance only: (e + 1) / (n + 2), so that a track
    with no events yet still has a variance and the sequence a width."""
    return (events + 1) / (trials + 2)


def difference_sequence(
    events_a: int, trials_a: int, events_b: int, trials_b: int, *, alpha: float, tau: float
) -> Interval:
    """Always-valid (1 - alpha) bounds on rate_b - rate_a.

    The normal-mixture mSPRT rejects theta0 once
    sqrt(V / (V + tau^2)) * exp(tau^2 (theta_hat - theta0)^2 / (2 V (V + tau^2)))
    reaches 1 / alpha, where V is the variance of theta_hat; the values it has
    not rejected form the interval returned here."""
    if trials_a <= 0 or trials_b <= 0:
        return Interval(0.0, -1.0, 1.0)
    rate_a, rate_b = events_a / trials_a, events_b / trials_b
    smooth_a, smooth_b = _smoothed_rate(events_a, trials_a), _smoothed_rate(events_b, trials_b)
    variance = smooth_a * (1 - smooth_a) / trials_a + smooth_b * (1 - smooth_b) / trials_b
    tau2 = tau * tau
    radius = math.sqrt(
        2
        * variance
        * (variance + tau2)
        / tau2
        * (math.log(1 / alpha) + 0.5 * math.log((variance + tau2) / variance))
    )
    estimate = rate_b - rate_a
    return Interval(estimate, max(-1.0, estimate - radius), min(1.0, estimate + radius))


def spent_alpha(alpha: float, look: int) -> float:
    """The level of the `look`-th look (from 1) of a test repeated without end,
    so that all looks together stay within `alpha`."""
    return alpha * 6 / (math.pi**2 * max(1, look) ** 2)
