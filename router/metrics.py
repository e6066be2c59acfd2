"""Rollout metrics, built from the controller's and the hooks' plain counters
when Prometheus scrapes (on the metrics thread; the request path only bumps
integers, as the runtime's metrics do).

    mlserve_rollout_weight{model,track}            share of requests each track answers
    mlserve_rollout_state{model,state}             1 for the rollout's state, 0 for the others
    mlserve_rollout_verdicts_total{model,verdict,reason}
    mlserve_routed_requests_total{model,track,outcome}   outcome: ok | error
    mlserve_routed_request_duration_seconds{model,track} histogram
    mlserve_shadow_dropped_total{model}            mirrored copies not made (bound reached)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from mlserve.router.rollout import RolloutState
from mlserve.router.windows import BUCKETS

if TYPE_CHECKING:
    from mlserve.router.controller import RolloutController
    from mlserve.router.hooks import RolloutHooks


class RolloutMetrics(Collector):
    def __init__(self, controller: RolloutController, hooks: RolloutHooks) -> None:
        self._controller = controller
        self._hooks = hooks

    def collect(self) -> Iterator[Metric]:
        weight = GaugeMetricFamily(
            "mlserve_rollout_weight",
            "Share of a model's version-less requests each track answers.",
            labels=["model", "track"],
        )
        state = GaugeMetricFamily(
            "mlserve_rollout_state",
            "1 for the state each model's rollout is in, 0 for the others.",
            labels=["model", "state"],
        )
        verdicts = CounterMetricFamily(
            "mlserve_rollout_verdicts",
            "The judge's verdicts, by action and deciding reason.",
            labels=["model", "verdict", "reason"],
        )
        for name, rollout in list(self._controller.rollouts().items()):
            step = rollout.step
            canary = step.weight if step is not None and rollout.state.routing else 0.0
            weight.add_metric([name, "canary"], canary)
            weight.add_metric([name, "stable"], 1.0 - canary)
            for each in RolloutState:
                state.add_metric([name, each.value], float(each is rollout.state))
            for (action, reason), count in list(rollout.verdicts.items()):
                verdicts.add_metric([name, action, reason], count)
        yield weight
        yield state
        yield verdicts
        routed = CounterMetricFamily(
            "mlserve_routed_requests",
            "Requests a rollout routed, by track and outcome.",
            labels=["model", "track", "outcome"],
        )
        durations = HistogramMetricFamily(
            "mlserve_routed_request_duration_seconds",
            "Latency of routed requests, per track (from arrival to the answer).",
            labels=["model", "track"],
        )
        for name, rollout in list(self._controller.rollouts().items()):
            counters = rollout.counters
            for index, track in enumerate(("stable", "canary")):
                routed.add_metric([name, track, "ok"], counters.ok[index])
                routed.add_metric([name, track, "error"], counters.failed[index])
                histogram = list(counters.histograms[index])
                cumulative = 0.0
                buckets: list[tuple[str, float]] = []
                for bound, in_bucket in zip(BUCKETS, histogram, strict=False):
                    cumulative += in_bucket
                    buckets.append((str(bound), cumulative))
                buckets.append(("+Inf", cumulative + histogram[-2]))  # past every bound
                durations.add_metric([name, track], buckets, histogram[-1])
        yield routed
        yield durations
        hooks = self._hooks
        dropped = CounterMetricFamily(
            "mlserve_shadow_dropped",
            "Mirrored copies not made because the bound on mirrored work was reached.",
            labels=["model"],
        )
        for name, count in list(hooks.mirror_dropped.items()):
            dropped.add_metric([name], count)
        yield dropped
