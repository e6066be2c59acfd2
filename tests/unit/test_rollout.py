"""The rollout machinery without a server: the plan's validation, the route
table's pick, the evidence windows, and the state machine on a fake clock
with its state in a real SQLite file."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import numpy as np
import pytest

from mlserve.errors import ConfigError, InvalidRequest
from mlserve.router.plan import DEFAULT_STEPS, Step, parse_rollout_plan
from mlserve.router.rollout import Rollout, RolloutError, RolloutState
from mlserve.router.route_table import RouteTable, Track, key_position
from mlserve.router.state_store import StateStore
from mlserve.router.windows import SAMPLE_SIZE, TrackWindow

# -- the plan ------------------------------------------------------------------


def test_the_plan_s_defaults_and_a_full_section() -> None:
    assert parse_rollout_plan({}).steps == DEFAULT_STEPS
    plan = parse_rollout_plan(
        {
            "stable": 1,
            "canary": 2,
            "steps": [{"shadow": 50}, {"weight": 10}, {"weight": 100}],
            "interval_s": 5,
            "min_requests": 50,
            "max_step_s": 60,
            "judge": {"alpha": 0.05, "latency_tolerance": 0.2},
            "compare": {"label": {"kind": "equal"}, "y": {"kind": "close", "rtol": 0.01}},
            "fast_rollback": {"window_s": 0.5, "max_failures": 5},
            "shadow": {"max_inflight": 8},
        }
    )
    assert plan.steps == (Step("shadow", 50), Step("weight", 10), Step("weight", 100))
    assert (plan.stable, plan.canary, plan.interval_s, plan.min_requests) == (1, 2, 5, 50)
    assert plan.judge.alpha == 0.05 and plan.judge.latency_tolerance == 0.2
    assert plan.compare["label"].kind == "equal" and plan.compare["y"].rtol == 0.01
    assert (plan.fast_rollback_window_s, plan.fast_rollback_failures) == (0.5, 5)
    assert plan.shadow_max_inflight == 8


@pytest.mark.parametrize(
    ("section", "path", "message"),
    [
        ({"steps": [{"weight": 0}]}, "rollout.steps[0].weight", "(0, 100]"),
        ({"steps": [{"shadow": 10, "weight": 5}]}, "rollout.steps[0]", "{shadow: PERCENT}"),
        ({"steps": []}, "rollout.steps", "at least one"),
        ({"canary": "two"}, "rollout.canary", "version number"),
        ({"stable": 2, "canary": 2}, "rollout.canary", "differ"),
        ({"judge": {"alpha": 2}}, "rollout.judge.alpha", "(0, 1)"),
        ({"judge": {"alfa": 0.1}}, "rollout.judge.alfa", "unknown key"),
        ({"compare": {"y": {"kind": "fuzzy"}}}, "rollout.compare.y.kind", "argmax"),
        ({"interval_s": 60, "max_step_s": 30}, "rollout.max_step_s", "interval_s"),
        ({"speed": "fast"}, "rollout.speed", "unknown key"),
    ],
)
def test_a_bad_plan_names_its_key_path(section: dict[str, object], path: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_rollout_plan(section)
    assert str(error.value).startswith(path), error.value
    assert message in str(error.value)


# -- the route table -------------------------------------------------------------


def test_weights_split_by_draw_and_sticky_keys_never_move_back() -> None:
    tables = [RouteTable("m", 1, 2, weight=w) for w in (0.05, 0.25, 0.5, 1.0)]
    keys = [f"user-{i}" for i in range(2000)]
    on_canary = [{k for k in keys if t.pick(k, None, 0.0).track is Track.CANARY} for t in tables]
    for smaller, larger in itertools.pairwise(on_canary):
        assert smaller <= larger  # raising the weight keeps every canary user there
    assert abs(len(on_canary[1]) / len(keys) - 0.25) < 0.04
    assert on_canary[-1] == set(keys)
    # The same key, the same track, every time and in every process (no salted hash).
    assert key_position("user-7") == key_position("user-7")
    rng = random.Random(1)
    draws = [tables[1].pick(None, None, rng.random()).track for _ in range(4000)]
    assert abs(draws.count(Track.CANARY) / 4000 - 0.25) < 0.03


def test_an_override_wins_and_a_bad_one_is_named() -> None:
    table = RouteTable("m", 1, 2, weight=0.0)
    assert table.pick("k", "canary", 0.9).version == 2
    assert table.pick("k", "stable", 0.0).version == 1
    with pytest.raises(InvalidRequest, match="mlserve-route must be 'stable' or 'canary'"):
        table.pick(None, "green", 0.0)


def test_shadow_mirrors_its_share_and_answers_from_stable() -> None:
    table = RouteTable("m", 1, 2, mirror=0.5)
    routes = [table.pick(None, None, d / 100) for d in range(100)]
    assert {r.version for r in routes} == {1}
    assert sum(r.mirror for r in routes) == 50


# -- the windows -------------------------------------------------------------------


def test_a_window_counts_everything_and_samples_a_bounded_uniform_reservoir() -> None:
    window = TrackWindow()
    summarized = []

    def summarize(value: float) -> tuple[dict[str, float], frozenset[str]]:
        summarized.append(value)
        return {"y": value}, frozenset()

    for i in range(10 * SAMPLE_SIZE):
        window.add(failed=i % 100 == 0, latency_s=float(i), outputs=float(i), summarize=summarize)
    evidence = window.snapshot()
    assert (evidence.requests, evidence.errors) == (10 * SAMPLE_SIZE, SAMPLE_SIZE // 10)
    assert len(evidence.latencies_s) == SAMPLE_SIZE
    assert len(evidence.outputs["y"].values) == SAMPLE_SIZE
    # Uniform over the span: the sample's mean is near the whole's.
    assert abs(np.mean(evidence.latencies_s) / (5 * SAMPLE_SIZE) - 1) < 0.05
    # Only answers that entered the sample were summarized (about n ln(N/n) of them).
    assert SAMPLE_SIZE < len(summarized) < 3 * SAMPLE_SIZE * math.log(10) + SAMPLE_SIZE


# -- the state machine -----------------------------------------------------------------


class Harness:
    """A rollout on a fake clock, with its published route tables recorded."""

    def __init__(self, tmp_path: Path, **plan: object) -> None:
        self.store = StateStore(tmp_path / "state.sqlite")
        self.plan = parse_rollout_plan(
            {"steps": [{"shadow": 100}, {"weight": 50}, {"weight": 100}], "interval_s": 10,
             "min_requests": 100, "max_step_s": 100, **plan}
        )  # fmt: skip
        self.tables: list[RouteTable | None] = []
        self.finished: list[tuple[RolloutState, int, int]] = []
        self.now = 1000.0
        self.rollout = self.make()
        self.rng = np.random.default_rng(0)

    def make(self) -> Rollout:
        return Rollout(
            model="m",
            plan=self.plan,
            store=self.store,
            publish=self.tables.append,
            on_finish=lambda *args: self.finished.append(args),
        )

    def traffic(
        self, n: int, *, canary_error_rate: float = 0.0, canary_slowdown: float = 1.0
    ) -> None:
        table = self.tables[-1]
        assert table is not None
        for i in range(n):
            self.now += 0.001
            route = table.pick(None, None, (i * 0.618) % 1.0)
            latency = 0.01 * float(np.exp(self.rng.standard_normal() * 0.2))
            self.rollout.observe(Track.STABLE if route.track is Track.STABLE else Track.CANARY,
                                 failed=False, latency_s=latency, now=self.now)  # fmt: skip
            if route.mirror:  # the shadow run of the same request
                self.rollout.observe(Track.CANARY, failed=self.rng.random() < canary_error_rate,
                                     latency_s=latency * canary_slowdown, now=self.now)  # fmt: skip
                self.rollout.observe_mirror(agreed=True)

    def tick(self, seconds: float = 10.0) -> None:
        self.now += seconds
        self.rollout.tick(self.now)


def test_a_good_canary_goes_through_every_step_and_succeeds(tmp_path: Path) -> None:
    h = Harness(tmp_path, judge={"error_tolerance_abs": 0.02})
    h.rollout.start(stable=1, canary=2, now=h.now)
    assert h.rollout.state is RolloutState.SHADOWING and h.tables[-1].mirror == 1.0  # type: ignore[union-attr]
    for expected_weight in (0.5, 1.0):
        h.traffic(3000)
        h.tick()
        assert h.rollout.state is RolloutState.PROGRESSING, h.rollout.last_verdict
        assert h.tables[-1].weight == expected_weight  # type: ignore[union-attr]
    h.traffic(3000)
    h.tick()
    assert h.rollout.state is RolloutState.SUCCEEDED
    assert h.tables[-1] is None and h.finished == [(RolloutState.SUCCEEDED, 1, 2)]
    kinds = [e.kind for e in h.store.events("m")]
    assert kinds.count("verdict") == 3 and kinds[0] == "transition"


def test_too_little_traffic_holds_then_stalls(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.rollout.start(stable=1, canary=2, now=h.now)
    h.traffic(20)
    for _ in range(9):
        h.tick()
        assert h.rollout.state is RolloutState.SHADOWING
        assert (
            h.rollout.last_verdict is not None
            and h.rollout.last_verdict.reason == "not_enough_requests"
        )
    h.tick()  # 100 s into the step: max_step_s
    assert h.rollout.state is RolloutState.ROLLED_BACK
    assert h.rollout.record is not None and h.rollout.record.reason.startswith("stalled")


def test_a_canary_failing_every_request_is_cut_off_at_the_twentieth(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.rollout.start(stable=1, canary=2, now=h.now)
    for i in range(19):
        h.rollout.observe(Track.CANARY, failed=True, latency_s=0.001, now=h.now + i * 1e-3)
    assert h.rollout.state is RolloutState.SHADOWING
    h.rollout.observe(Track.CANARY, failed=True, latency_s=0.001, now=h.now + 0.02)
    assert h.rollout.state is RolloutState.ROLLED_BACK
    assert h.rollout.record is not None and "canary_failing: 20" in h.rollout.record.reason
    assert h.tables[-1] is None


def test_a_slow_trickle_of_failures_is_cut_off_after_the_window(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.rollout.start(stable=1, canary=2, now=h.now)
    h.rollout.observe(Track.CANARY, failed=True, latency_s=0.001, now=h.now)
    h.rollout.tick(h.now + 2)  # one failure and silence: not a burst
    assert h.rollout.state is RolloutState.SHADOWING
    h.rollout.observe(Track.CANARY, failed=True, latency_s=0.001, now=h.now + 2.1)
    h.rollout.tick(h.now + 2.5)
    assert h.rollout.state is RolloutState.ROLLED_BACK


def test_a_success_between_failures_resets_the_burst(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.rollout.start(stable=1, canary=2, now=h.now)
    for i in range(100):
        h.rollout.observe(Track.CANARY, failed=i % 10 != 0, latency_s=0.001, now=h.now + i * 1e-4)
    assert h.rollout.state is RolloutState.SHADOWING  # left to the judge


def test_the_judge_rolls_back_a_slow_canary(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.rollout.start(stable=1, canary=2, now=h.now)
    h.traffic(2000, canary_slowdown=2.0)
    h.tick()
    assert h.rollout.state is RolloutState.ROLLED_BACK
    assert h.rollout.record is not None and h.rollout.record.reason == "latency"
    verdicts = [e for e in h.store.events("m") if e.kind == "verdict"]
    assert verdicts[-1].detail["action"] == "rollback"


def test_a_restarted_rollout_resumes_its_step(tmp_path: Path) -> None:
    h = Harness(tmp_path, judge={"error_tolerance_abs": 0.02})
    h.rollout.start(stable=1, canary=2, now=h.now)
    h.traffic(3000)
    h.tick()
    assert h.rollout.record is not None and h.rollout.record.step == 1
    h.store.close()
    h.store = StateStore(tmp_path / "state.sqlite")  # a new process
    again = h.make()
    assert again.state is RolloutState.PROGRESSING and again.record is not None
    assert again.record.step == 1 and again.record.errors_cleared
    again.resume_from_store(h.now)
    assert h.tables[-1] is not None and h.tables[-1].weight == 0.5


def test_pause_keeps_the_split_and_stops_the_judge(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.rollout.start(stable=1, canary=2, now=h.now)
    published = len(h.tables)
    h.rollout.pause(h.now)
    assert h.rollout.state is RolloutState.PAUSED and len(h.tables) == published
    h.traffic(3000)
    for _ in range(20):
        h.tick()
    assert h.rollout.state is RolloutState.PAUSED  # no verdict, no stall
    with pytest.raises(RolloutError):
        h.rollout.pause(h.now)
    h.rollout.resume(h.now)
    assert h.rollout.state is RolloutState.SHADOWING
    h.rollout.promote(h.now)
    assert h.rollout.state is RolloutState.PROGRESSING
    h.rollout.abort(h.now)
    assert h.rollout.state is RolloutState.ABORTED and h.tables[-1] is None
    with pytest.raises(RolloutError):
        h.rollout.abort(h.now)


# -- the request path's hooks -------------------------------------------------------------


def test_mirrored_answers_agree_by_the_plan_s_comparison() -> None:
    from mlserve.router.outputs import agree as _agree
    from mlserve.router.plan import OutputComparison

    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]], np.float32)
    nudged = probs + np.float32(1e-7)
    other_class = probs[:, ::-1].copy()
    assert _agree(probs, nudged, OutputComparison("close"))
    assert not _agree(probs, probs * 2, OutputComparison("close"))
    assert _agree(probs, probs * 2, OutputComparison("argmax"))  # same class per row
    assert not _agree(probs, other_class, OutputComparison("argmax"))
    assert not _agree(probs, nudged, OutputComparison("equal"))
    assert not _agree(probs, probs[:1], OutputComparison("close"))  # another shape
    labels = np.array([1, 2], np.int64)
    assert _agree(labels, labels.copy(), OutputComparison("close"))  # integers: exact


def test_shadow_work_is_bounded_and_drops_are_counted(tmp_path: Path) -> None:
    from mlserve.router.hooks import RolloutHooks

    h = Harness(tmp_path, shadow={"max_inflight": 2})
    h.rollout.start(stable=1, canary=2, now=h.now)
    hooks = RolloutHooks(lambda name: h.rollout, clock=lambda: h.now)
    assert [hooks.mirror_admitted("m") for _ in range(3)] == [True, True, False]
    assert hooks.mirror_dropped == {"m": 1}
    one = [np.ones((1, 4), np.float32)]
    hooks.mirrored("m", ["y"], one, one, 0.001)  # one done: room for one more
    assert hooks.mirror_admitted("m")
    hooks.mirrored("m", ["y"], one, [np.zeros((1, 4), np.float32)], 0.001)
    assert hooks.compare_pending() == 2
    status = h.rollout.status()["requests"]
    assert (status["mirrored_compared"], status["mirrored_agreed"]) == (2, 1)
    assert status["canary"] == 2  # the canary's runs count as its requests
