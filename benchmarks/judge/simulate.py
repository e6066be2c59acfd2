"""The canary judge's accuracy by simulation: no server, only the judge.

Simulated rollouts run the default plan ([shadow 100, weight 5, 25, 50, 100],
judged every interval, min_requests per track and step, a step that never
gathers enough evidence ends as stalled after max_step_intervals) against
canaries that are identical to stable (A/A), fail twice as often, are slower
at the median, or have twice the latency spread at the same median. Each
rollout is judged two ways on the same simulated traffic:

- mlserve's judge (`mlserve.router.judge`): an always-valid sequence on
  errors, rank and tail tests that spend alpha across looks, holds while
  the evidence is short;
- a Kayenta-style fixed-horizon judge: each interval's window alone, a
  one-sided two-proportion z-test on errors and a Mann-Whitney U on latency
  at level alpha, a rollback on the first failed interval (Kayenta scores an
  interval; Argo Rollouts' failureLimit 0 fails the run at the first failed
  measurement), promotion once a step has min_requests.

    .venv/bin/python -m benchmarks.judge.simulate --rollouts 1000 --out benchmarks/results/judge.md

It prints (and writes) a Markdown table: per scenario and judge, the share of
rollouts rolled back, and the median requests (both tracks) and intervals to
the verdict."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from mlserve.router.judge import Action, Evidence, JudgeSettings, TrackEvidence, judge
from mlserve.router.judge import Outcome as CheckOutcome

STEPS: tuple[tuple[str, float], ...] = (
    ("shadow", 1.0),
    ("weight", 0.05),
    ("weight", 0.25),
    ("weight", 0.50),
    ("weight", 1.0),
)
LATENCY_SAMPLE = 2000  # per track and step, as the controller keeps


@dataclass(frozen=True)
class Scenario:
    name: str
    canary_error_rate: float
    canary_median_factor: float = 1.0
    canary_sigma_factor: float = 1.0


@dataclass
class Track:
    requests: int = 0
    errors: int = 0
    latencies: list[np.ndarray] = field(default_factory=list)

    def add(self, requests: int, errors: int, latencies: np.ndarray) -> None:
        self.requests += requests
        self.errors += errors
        self.latencies.append(latencies)

    def evidence(self) -> TrackEvidence:
        latencies = np.concatenate(self.latencies) if self.latencies else np.zeros(0)
        return TrackEvidence(self.requests, self.errors, latencies[-LATENCY_SAMPLE:])


@dataclass
class Outcome:
    rolled_back: bool
    reason: str
    requests: int
    intervals: int
    step: int  # the step it ended in (len(STEPS) once promoted through all)


class Traffic:
    """One interval's requests on a track: errors and lognormal latencies."""

    def __init__(self, rng: np.random.Generator, *, median_s: float, sigma: float) -> None:
        self.rng, self.median_s, self.sigma = rng, median_s, sigma

    def draw(
        self, n: int, error_rate: float, median_factor: float, sigma_factor: float
    ) -> tuple[int, np.ndarray]:
        errors = int(self.rng.binomial(n, error_rate))
        latencies = (
            self.median_s
            * median_factor
            * np.exp(self.rng.standard_normal(n - errors) * self.sigma * sigma_factor)
        )
        return errors, latencies


def run_rollout(
    scenario: Scenario,
    decide: Callable[[Track, Track, Track, Track, int, Track, Track], Action],
    *,
    rng: np.random.Generator,
    per_interval: int,
    stable_error_rate: float,
    max_step_intervals: int,
) -> Outcome:
    traffic = Traffic(rng, median_s=0.010, sigma=0.3)
    total_s, total_c = Track(), Track()
    intervals = look = 0
    previous_stable = Track()
    for step, (kind, weight) in enumerate(STEPS):
        step_s, step_c = Track(), Track()
        for _ in range(max_step_intervals):
            intervals += 1
            look += 1
            n_c = per_interval if kind == "shadow" else round(per_interval * weight)
            n_s = per_interval if kind == "shadow" else per_interval - n_c
            interval_s, interval_c = Track(), Track()
            if n_s:
                e, lat = traffic.draw(n_s, stable_error_rate, 1.0, 1.0)
                for track in (step_s, total_s, interval_s):
                    track.add(n_s, e, lat)
            e, lat = traffic.draw(
                n_c,
                scenario.canary_error_rate,
                scenario.canary_median_factor,
                scenario.canary_sigma_factor,
            )
            for track in (step_c, total_c, interval_c):
                track.add(n_c, e, lat)
            # Weight 100: stable has no traffic this step; its last window stands in.
            baseline = step_s if step_s.requests else previous_stable
            interval_baseline = interval_s if interval_s.requests else previous_stable
            action = decide(baseline, step_c, total_s, total_c, look, interval_baseline, interval_c)
            if action is Action.ROLLBACK:
                return Outcome(True, "judged", total_s.requests + total_c.requests, intervals, step)
            if action is Action.PROMOTE:
                break
        else:
            return Outcome(True, "stalled", total_s.requests + total_c.requests, intervals, step)
        if step_s.requests:
            previous_stable = step_s
    return Outcome(False, "succeeded", total_s.requests + total_c.requests, intervals, len(STEPS))


def mlserve_judge(settings: JudgeSettings) -> Callable[..., Action]:
    cleared = {"errors": False}

    def decide(s: Track, c: Track, ts: Track, tc: Track, look: int, *_: Track) -> Action:
        if look == 1:  # a new rollout
            cleared["errors"] = False
        evidence = Evidence(
            s.evidence(), c.evidence(), ts.evidence(), tc.evidence(), look, cleared["errors"]
        )
        verdict = judge(evidence, settings)
        cleared["errors"] |= any(
            c.name == "errors" and c.outcome is CheckOutcome.PASS for c in verdict.checks
        )
        return verdict.action

    return decide


def kayenta_style(settings: JudgeSettings) -> Callable[..., Action]:
    """Each interval on its own, fixed-horizon tests at level alpha."""

    def decide(
        s: Track, c: Track, _ts: Track, _tc: Track, _look: int, i_s: Track, i_c: Track
    ) -> Action:
        if i_s.requests and i_c.requests:
            p_s, p_c = i_s.errors / i_s.requests, i_c.errors / i_c.requests
            pooled = (i_s.errors + i_c.errors) / (i_s.requests + i_c.requests)
            se = math.sqrt(
                max(pooled * (1 - pooled), 1e-12) * (1 / i_s.requests + 1 / i_c.requests)
            )
            if (p_c - p_s) / se > stats.norm.isf(settings.alpha):
                return Action.ROLLBACK
            lat_s, lat_c = i_s.evidence().latencies_s, i_c.evidence().latencies_s
            if len(lat_s) > 1 and len(lat_c) > 1:
                ratio = float(np.median(lat_c) / np.median(lat_s))
                p = stats.mannwhitneyu(lat_c, lat_s, alternative="greater").pvalue
                if p < settings.alpha and ratio > 1 + settings.latency_tolerance:
                    return Action.ROLLBACK
        if min(s.requests, c.requests) >= settings.min_requests:
            return Action.PROMOTE
        return Action.HOLD

    return decide


SCENARIOS = (
    Scenario("A/A (canary = stable, 0.5% errors)", 0.005),
    Scenario("errors x2 (1% against 0.5%)", 0.010),
    Scenario("median latency +20%", 0.005, canary_median_factor=1.2),
    Scenario("latency spread x2, same median", 0.005, canary_sigma_factor=2.0),
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rollouts", type=int, default=1000)
    parser.add_argument(
        "--per-interval", type=int, default=600, help="requests per interval (20/s x 30 s)"
    )
    parser.add_argument(
        "--max-step-intervals", type=int, default=20, help="max_step_s / interval_s"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args()
    settings = JudgeSettings()
    judges = {"mlserve": mlserve_judge(settings), "Kayenta-style": kayenta_style(settings)}
    lines = [
        f"Simulated rollouts: {args.rollouts} per scenario, "
        f"{args.per_interval} requests an interval, "
        f"steps {[f'{k} {w:g}' for k, w in STEPS]}, min_requests {settings.min_requests}, "
        f"stalled after {args.max_step_intervals} intervals, alpha {settings.alpha}.",
        "",
        "| scenario | judge | rolled back | of which stalled | median requests to verdict "
        "| median intervals |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for scenario in SCENARIOS:
        for name, decide in judges.items():
            rng = np.random.default_rng(args.seed)  # the same traffic for both judges
            outcomes = [
                run_rollout(
                    scenario,
                    decide,
                    rng=rng,
                    per_interval=args.per_interval,
                    stable_error_rate=0.005,
                    max_step_intervals=args.max_step_intervals,
                )
                for _ in range(args.rollouts)
            ]
            back = [o for o in outcomes if o.rolled_back]
            stalled = sum(o.reason == "stalled" for o in back)
            requests = np.median([o.requests for o in outcomes])
            intervals = np.median([o.intervals for o in outcomes])
            lines.append(
                f"| {scenario.name} | {name} | {len(back) / len(outcomes):.1%} | {stalled} | "
                f"{requests:,.0f} | {intervals:.0f} |"
            )
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as out:
            out.write(text)


if __name__ == "__main__":
    main()
