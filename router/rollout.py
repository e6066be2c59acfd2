"""One model's rollout: the state machine that gathers evidence, asks the
judge, and moves the route table step by step.

    pending -> shadowing | progressing (step k) -> succeeded
               paused (by hand: the split stays, nothing advances) -> resumed
               rolled_back (reason) | aborted (by hand)

It is driven from outside: the request path reports each routed request
(`observe`, `observe_mirror`), and the control loop calls `tick(now)` often
(every 100 ms or so); `tick` asks the judge once per `interval_s`. Time is
always passed in, so tests run it on a fake clock. Each change of route is a
new `RouteTable` handed to `publish` (None: no split, stable answers all);
each transition and verdict is written to the `StateStore` before it takes
effect, so a restarted server resumes the same step.

Fast rollback: besides the interval judgement, a canary that fails hard is
cut off at once: after `fast_rollback_failures` consecutive failed requests,
or `fast_rollback_window_s` after its first failure with no success since
(whichever comes first; at least two failures, so one error followed by
silence is not a burst). The same for a canary version that is unloaded or
fails to load (`hard_failure`)."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from mlserve.router.judge import Action, Evidence, Outcome, TrackEvidence, Verdict, judge
from mlserve.router.outputs import summaries
from mlserve.router.plan import RolloutPlan, Step
from mlserve.router.route_table import RouteTable, Track
from mlserve.router.state_store import Event, RolloutRecord, StateStore
from mlserve.router.windows import TrackCounters, TrackWindow


class RolloutState(enum.Enum):
    PENDING = "pending"
    SHADOWING = "shadowing"
    PROGRESSING = "progressing"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"

    @property
    def active(self) -> bool:
        return self in (RolloutState.SHADOWING, RolloutState.PROGRESSING)

    @property
    def routing(self) -> bool:
        """Is traffic split by this rollout (running or paused)?"""
        return self.active or self is RolloutState.PAUSED

    @property
    def finished(self) -> bool:
        return self in (RolloutState.SUCCEEDED, RolloutState.ROLLED_BACK, RolloutState.ABORTED)


class RolloutError(Exception):
    """An admin action that the rollout's state does not allow."""


@dataclass
class _Windows:
    stable_step: TrackWindow = field(default_factory=TrackWindow)
    canary_step: TrackWindow = field(default_factory=TrackWindow)
    # The counters when this rollout started: the running totals of the error
    # test are the counters since (TrackCounters never reset).
    base: tuple[int, int, int, int] = (0, 0, 0, 0)
    previous_stable: TrackWindow | None = None
    mirrored_compared: int = 0
    mirrored_agreed: int = 0

    def next_step(self) -> None:
        if self.stable_step.requests:
            self.previous_stable = self.stable_step
        self.stable_step, self.canary_step = TrackWindow(), TrackWindow()
        self.mirrored_compared = self.mirrored_agreed = 0


class Rollout:
    def __init__(
        self,
        *,
        model: str,
        plan: RolloutPlan,
        store: StateStore,
        publish: Callable[[RouteTable | None], None],
        on_finish: Callable[[RolloutState, int, int], None] = lambda *_: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.model = model
        self.plan = plan
        self._clock = clock
        self._store = store
        self._publish = publish
        self._on_finish = on_finish
        self.state = RolloutState.PENDING
        self._record: RolloutRecord | None = None
        self.record = store.load(model)
        self._windows = _Windows()
        self._last_look_s = 0.0
        self._failures_in_row = 0
        self._first_failure_s = 0.0
        self._generation = 0
        self.last_verdict: Verdict | None = None
        self.verdicts: dict[tuple[str, str], int] = {}  # (action, reason) -> count, for metrics
        self.counters = TrackCounters()  # routed requests, for metrics, over every rollout

    def summarize(self, outputs: Any) -> tuple[dict[str, float], frozenset[str]]:
        """One sampled answer's outputs, as the distribution check reads them."""
        return summaries(outputs, self.plan.compare)

    # -- reading -----------------------------------------------------------

    @property
    def record(self) -> RolloutRecord | None:
        return self._record

    @record.setter
    def record(self, record: RolloutRecord | None) -> None:
        # The state as an enum, kept beside the record: the request path asks
        # for it (routing or not) and building an enum per request costs.
        self._record = record
        self.state = RolloutState(record.state) if record else RolloutState.PENDING

    @property
    def step(self) -> Step | None:
        if self.record is None or self.record.step >= len(self.plan.steps):
            return None
        return self.plan.steps[self.record.step]

    def status(self) -> dict[str, Any]:
        """The rollout as the admin API reports it."""
        record = self.record
        step = self.step
        windows = self._windows
        return {
            "model": self.model,
            "state": self.state.value,
            "step": record.step if record else None,
            "steps": [s.describe() for s in self.plan.steps],
            "stable": record.stable if record else None,
            "canary": record.canary if record else None,
            "reason": record.reason if record else "",
            "weights": {
                "canary": step.weight if step and self.state.routing else 0.0,
                "mirror": step.mirror if step and self.state.routing else 0.0,
            },
            "requests": {
                "stable": windows.stable_step.requests,
                "canary": windows.canary_step.requests,
                "stable_errors": windows.stable_step.errors,
                "canary_errors": windows.canary_step.errors,
                "mirrored_compared": windows.mirrored_compared,
                "mirrored_agreed": windows.mirrored_agreed,
            },
            "last_verdict": _verdict_doc(self.last_verdict) if self.last_verdict else None,
        }

    # -- the request path's reports ------------------------------------------

    def observe(self, track: Track, *, failed: bool, latency_s: float,
                now: float | None = None, outputs: Any = None) -> None:  # fmt: skip
        """One request answered (or failed) by `track` while routed by this
        rollout; `outputs` (its answer's) are summarized only if sampled.
        `now` (the clock's, when not given) matters only for failures."""
        if track is Track.CANARY:
            self._record_canary(failed, latency_s, outputs, now)
        else:
            self.record_stable(failed, latency_s, outputs)

    def record_stable(self, failed: bool, latency_s: float, outputs: Any) -> None:
        """The request path's report for a request stable answered (bound
        into the route table: no lookups per request)."""
        self._windows.stable_step.add(failed, latency_s, outputs, self.summarize)
        self.counters.add(0, failed, latency_s)

    def record_canary(self, failed: bool, latency_s: float, outputs: Any) -> None:
        """The same for a request the canary answered."""
        self._record_canary(failed, latency_s, outputs, None)

    def _record_canary(
        self, failed: bool, latency_s: float, outputs: Any, now: float | None
    ) -> None:
        self._windows.canary_step.add(failed, latency_s, outputs, self.summarize)
        self.counters.add(1, failed, latency_s)
        if failed or self._failures_in_row:
            self._count_canary(failed, self._clock() if now is None else now)

    def observe_mirror(self, *, agreed: bool) -> None:
        """One mirrored request whose two answers were compared."""
        self._windows.mirrored_compared += 1
        self._windows.mirrored_agreed += agreed

    def _count_canary(self, failed: bool, now: float) -> None:
        if not failed:
            self._failures_in_row = 0
            return
        if self._failures_in_row == 0:
            self._first_failure_s = now
        self._failures_in_row += 1
        if self._failures_in_row >= self.plan.fast_rollback_failures:
            self._fast_rollback(now)

    # -- control -------------------------------------------------------------

    def start(self, *, stable: int, canary: int, now: float) -> None:
        if self.record is not None and not self.state.finished:
            raise RolloutError(f"{self.model} already has a rollout ({self.state.value})")
        self.record = RolloutRecord(
            self.model, RolloutState.PENDING.value, 0, stable, canary, "", now, now, now
        )
        counters = self.counters
        self._windows = _Windows(
            base=(
                counters.ok[0] + counters.failed[0],
                counters.failed[0],
                counters.ok[1] + counters.failed[1],
                counters.failed[1],
            )
        )
        self._enter_step(0, now, "started")

    def resume_from_store(self, now: float) -> None:
        """After a restart: the stored step again, with fresh windows."""
        if self.record is None or self.state.finished:
            return
        self._last_look_s = now
        self.record = replace(self.record, step_started_at=now)
        self._publish(self._table(self.record.step))

    def tick(self, now: float) -> None:
        """The control loop's beat: fast rollback's timer, the step's
        deadline, and the judge once per interval."""
        record = self.record
        if record is None or not self.state.routing:
            return
        if (
            self._failures_in_row >= 2
            and now - self._first_failure_s >= self.plan.fast_rollback_window_s
        ):
            self._fast_rollback(now)
            return
        if not self.state.active or now - self._last_look_s < self.plan.interval_s:
            return
        self._last_look_s = now
        look = record.look + 1
        windows = self._windows
        baseline = windows.stable_step
        if not baseline.requests and windows.previous_stable is not None:
            baseline = windows.previous_stable  # weight 100: stable has no traffic this step
        evidence = Evidence(
            stable=baseline.snapshot(),
            canary=windows.canary_step.snapshot(),
            stable_total=TrackEvidence(*self._totals(0)),
            canary_total=TrackEvidence(*self._totals(1)),
            look=look,
            errors_cleared=record.errors_cleared,
            mirrored_compared=windows.mirrored_compared,
            mirrored_agreed=windows.mirrored_agreed,
        )
        verdict = judge(evidence, self.plan.judge)
        self.last_verdict = verdict
        key = (verdict.action.value, verdict.reason)
        self.verdicts[key] = self.verdicts.get(key, 0) + 1
        cleared = record.errors_cleared or any(
            c.name == "errors" and c.outcome is Outcome.PASS for c in verdict.checks
        )
        self.record = replace(record, look=look, errors_cleared=cleared, updated_at=now)
        self._store.save(self.record)
        self._event(now, "verdict", verdict.reason, _verdict_doc(verdict))
        if verdict.action is Action.ROLLBACK:
            self._finish(RolloutState.ROLLED_BACK, verdict.reason, now)
        elif verdict.action is Action.PROMOTE:
            self._advance(now, "judged")
        elif now - record.step_started_at >= self.plan.max_step_s:
            self._finish(RolloutState.ROLLED_BACK, f"stalled: {verdict.detail}", now)

    def _totals(self, track: int) -> tuple[int, int]:
        """(requests, errors) of a track since this rollout started."""
        counters, base = self.counters, self._windows.base
        requests = counters.ok[track] + counters.failed[track] - base[2 * track]
        return requests, counters.failed[track] - base[2 * track + 1]

    def pause(self, now: float) -> None:
        """Stop judging and advancing; the split stays as it is (as Argo
        Rollouts' pause), and so does the fast rollback."""
        if not self.state.active:
            raise RolloutError(f"only a running rollout pauses; {self.model} is {self.state.value}")
        assert self.record is not None
        self._save(replace(self.record, state=RolloutState.PAUSED.value), now, "paused")

    def resume(self, now: float) -> None:
        if self.state is not RolloutState.PAUSED:
            raise RolloutError(f"{self.model} is {self.state.value}, not paused")
        assert self.record is not None
        self._enter_step(self.record.step, now, "resumed", fresh=False)

    def promote(self, now: float) -> None:
        """By hand: the next step now, without the judge."""
        if self.record is None or self.state.finished:
            raise RolloutError(f"{self.model} has no rollout to promote")
        self._advance(now, "promoted by hand")

    def abort(self, now: float) -> None:
        if self.record is None or self.state.finished:
            raise RolloutError(f"{self.model} has no rollout to abort")
        self._finish(RolloutState.ABORTED, "aborted by hand", now)

    def hard_failure(self, reason: str, now: float) -> None:
        """The canary cannot serve (unloaded, failed to load): cut it off now."""
        if self.state.routing:
            self._finish(RolloutState.ROLLED_BACK, reason, now)

    # -- transitions -----------------------------------------------------------

    def _fast_rollback(self, now: float) -> None:
        if self.state.routing:
            failures = self._failures_in_row
            self._finish(
                RolloutState.ROLLED_BACK,
                f"canary_failing: {failures} failed requests in a row "
                f"over {now - self._first_failure_s:.3f} s",
                now,
            )

    def _advance(self, now: float, why: str) -> None:
        assert self.record is not None
        following = self.record.step + 1
        if following >= len(self.plan.steps):
            self._finish(RolloutState.SUCCEEDED, why, now)
        else:
            self._enter_step(following, now, why)

    def _enter_step(self, index: int, now: float, why: str, *, fresh: bool = True) -> None:
        assert self.record is not None
        step = self.plan.steps[index]
        state = RolloutState.SHADOWING if step.kind == "shadow" else RolloutState.PROGRESSING
        if fresh:
            self._windows.next_step()
        self._last_look_s = now
        self._failures_in_row = 0
        record = replace(self.record, state=state.value, step=index, step_started_at=now)
        self._save(record, now, f"{why}: step {index} ({step.describe()})")
        self._publish(self._table(index))

    def _finish(self, state: RolloutState, reason: str, now: float) -> None:
        assert self.record is not None
        self._save(replace(self.record, state=state.value, reason=reason), now, reason)
        self._publish(None)
        self._on_finish(state, self.record.stable, self.record.canary)

    def _save(self, record: RolloutRecord, now: float, reason: str) -> None:
        self.record = replace(record, updated_at=now)
        self._store.save(self.record)
        self._event(now, "transition", reason, {})

    def _event(self, now: float, kind: str, reason: str, detail: dict[str, Any]) -> None:
        assert self.record is not None
        self._store.append(
            Event(self.model, now, kind, self.record.state, self.record.step, reason, detail)
        )

    def _table(self, index: int) -> RouteTable:
        assert self.record is not None
        step = self.plan.steps[index]
        self._generation += 1
        return RouteTable(
            self.model,
            self.record.stable,
            self.record.canary,
            weight=step.weight,
            mirror=step.mirror,
            generation=self._generation,
            record_stable=self.record_stable,
            record_canary=self.record_canary,
        )


def _verdict_doc(verdict: Verdict) -> dict[str, Any]:
    return {
        "action": verdict.action.value,
        "reason": verdict.reason,
        "detail": verdict.detail,
        "checks": [
            {
                "name": c.name,
                "outcome": c.outcome.value,
                "detail": c.detail,
                "figures": dict(c.figures),
            }
            for c in verdict.checks
        ],
    }
