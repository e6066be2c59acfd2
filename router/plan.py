"""A model's rollout plan: the `rollout:` section of its config.yaml, typed
and validated once (errors name the key path, as the rest of the config's do).

    rollout:
      stable: 1            # optional: the version serving now, by default
      canary: 2            # optional: the newest version on disk, by default
      steps: [{shadow: 100}, {weight: 5}, {weight: 25}, {weight: 50}, {weight: 100}]
      interval_s: 30       # how often the judge looks
      min_requests: 200    # per track and step before promotion is possible
      max_step_s: 600      # a step that never gathers enough evidence ends "stalled"
      judge: {alpha: 0.01, ...}           # JudgeSettings' fields
      compare: {y: {kind: close, rtol: 0.001, atol: 0.00001}, label: {kind: equal}}
      fast_rollback: {window_s: 1, max_failures: 20}
      shadow: {max_inflight: 64}          # mirrored work in flight; the rest is dropped

The router owns this section; the runtime only carries it (`ModelConfig.rollout`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from mlserve.config_section import Section
from mlserve.errors import ConfigError
from mlserve.router.judge import JudgeSettings


@dataclass(frozen=True, slots=True)
class Step:
    """One step: mirror `percent` of requests to the canary (shadow: the
    client always gets stable's answer), or route `percent` to it (weight)."""

    kind: Literal["shadow", "weight"]
    percent: float

    @property
    def weight(self) -> float:
        """The canary's share of answered requests, 0-1."""
        return self.percent / 100 if self.kind == "weight" else 0.0

    @property
    def mirror(self) -> float:
        """The share of requests mirrored to the canary, 0-1."""
        return self.percent / 100 if self.kind == "shadow" else 0.0

    def describe(self) -> str:
        return f"{self.kind} {self.percent:g}%"


@dataclass(frozen=True, slots=True)
class OutputComparison:
    """How a mirrored answer's output is compared with stable's: `argmax`
    (the same class per row), `equal` (every element), or `close`
    (|canary - stable| <= atol + rtol * |stable|, numpy's isclose)."""

    kind: Literal["argmax", "equal", "close"] = "close"
    rtol: float = 1e-3
    atol: float = 1e-5


DEFAULT_STEPS = (
    Step("shadow", 100),
    Step("weight", 5),
    Step("weight", 25),
    Step("weight", 50),
    Step("weight", 100),
)


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    stable: int | None = None
    canary: int | None = None
    steps: tuple[Step, ...] = DEFAULT_STEPS
    interval_s: float = 30.0
    max_step_s: float = 600.0
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    compare: Mapping[str, OutputComparison] = field(default_factory=dict)
    fast_rollback_window_s: float = 1.0
    fast_rollback_failures: int = 20
    shadow_max_inflight: int = 64

    @property
    def min_requests(self) -> int:
        return self.judge.min_requests


def _step(item: object, path: str) -> Step:
    section = Section(item, path)
    kinds = [k for k in ("shadow", "weight") if section.has(k)]
    if len(kinds) != 1:
        raise ConfigError(path, "must be {shadow: PERCENT} or {weight: PERCENT}")
    percent = section.number(kinds[0])
    if not 0 < percent <= 100:
        raise ConfigError(section.child_path(kinds[0]), f"must be in (0, 100], got {percent:g}")
    section.reject_unknown()
    return Step(kinds[0], percent)  # type: ignore[arg-type]


def _judge(section: Section | None, min_requests: int) -> JudgeSettings:
    settings = JudgeSettings(min_requests=min_requests)
    if section is None:
        return settings
    values: dict[str, float] = {}
    for name in (f.name for f in dataclasses.fields(JudgeSettings)):
        if name == "min_requests" or not section.has(name):
            continue
        default = getattr(settings, name)
        if isinstance(default, int):
            values[name] = section.integer(name, minimum=1)
        else:
            values[name] = section.number(name)
    section.reject_unknown()
    for name in ("alpha", "agreement_min", "latency_tail_quantile"):
        if name in values and not 0 < values[name] < 1:
            raise ConfigError(section.child_path(name), f"must be in (0, 1), got {values[name]:g}")
    return dataclasses.replace(settings, **values)  # type: ignore[arg-type]


def _compare(section: Section | None) -> dict[str, OutputComparison]:
    if section is None:
        return {}
    found = {}
    names = section.keys()  # a Section, not a dict
    for name in names:
        item = section.section(name)
        found[name] = OutputComparison(
            kind=item.choice("kind", ("argmax", "equal", "close"), "close"),  # type: ignore[arg-type]
            rtol=item.number("rtol", 1e-3),
            atol=item.number("atol", 1e-5),
        )
        item.reject_unknown()
    return found


def parse_rollout_plan(data: object, path: str = "rollout") -> RolloutPlan:
    """Validate a `rollout:` mapping; every error names its key path."""
    section = Section(data, path)
    stable = section.raw("stable", None)
    canary = section.raw("canary", None)
    for key, value in (("stable", stable), ("canary", canary)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ConfigError(
                section.child_path(key), f"must be a version number >= 1, got {value!r}"
            )
    if stable is not None and stable == canary:
        raise ConfigError(section.child_path("canary"), f"must differ from stable ({stable})")
    steps = tuple(section.items("steps", _step)) if section.has("steps") else DEFAULT_STEPS
    if not steps:
        raise ConfigError(section.child_path("steps"), "must list at least one step")
    interval_s = section.number("interval_s", 30.0)
    max_step_s = section.number("max_step_s", 600.0)
    if interval_s <= 0 or max_step_s < interval_s:
        raise ConfigError(
            section.child_path("max_step_s"),
            f"must be at least interval_s ({interval_s:g}) and interval_s > 0",
        )
    min_requests = section.integer("min_requests", 200, minimum=1)
    fast = section.section("fast_rollback")
    shadow = section.section("shadow")
    plan = RolloutPlan(
        stable=stable,
        canary=canary,
        steps=steps,
        interval_s=interval_s,
        max_step_s=max_step_s,
        judge=_judge(section.optional_section("judge"), min_requests),
        compare=_compare(section.optional_section("compare")),
        fast_rollback_window_s=fast.number("window_s", 1.0),
        fast_rollback_failures=fast.integer("max_failures", 20, minimum=1),
        shadow_max_inflight=shadow.integer("max_inflight", 64, minimum=1),
    )
    fast.reject_unknown()
    shadow.reject_unknown()
    section.reject_unknown()
    return plan
