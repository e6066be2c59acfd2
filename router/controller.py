"""Every model's rollout in one serving process: the control plane of rollouts.

The controller decides which versions of a model the repository serves
(`choose_versions`, the repository's version chooser: stable and canary side
by side while a rollout routes; the version a finished rollout left serving
afterwards, pinned in the state store so it survives a restart), starts
rollouts (by hand, or when a new version folder appears for a model whose
config has a `rollout:` plan: the canary is the new version, stable the one
serving), ticks them, and publishes the route tables of those that split
traffic as one new dict (`publish_routes`) that the request path only reads.

It never runs on the request path, and nothing here blocks the loop for
long: the judge runs once per interval per rollout, SQLite writes are a few
per transition."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from mlserve.errors import InvalidRequest, ModelNotFound
from mlserve.router.plan import RolloutPlan, parse_rollout_plan
from mlserve.router.rollout import Rollout, RolloutError, RolloutState
from mlserve.router.route_table import RouteTable
from mlserve.router.state_store import StateStore

log = logging.getLogger(__name__)
TICK_S = 0.1


class ServedVersions(Protocol):
    @property
    def versions(self) -> Mapping[int, Any]: ...


class ModelConfigView(Protocol):
    @property
    def rollout(self) -> Mapping[str, Any] | None: ...


class Repository(Protocol):
    """What the controller needs of the model repository."""

    def served(self) -> Mapping[str, ServedVersions]: ...

    async def load(self, name: str) -> None: ...


class RolloutController:
    def __init__(
        self,
        *,
        store: StateStore,
        repository: Repository,
        publish_routes: Callable[[dict[str, RouteTable]], None],
        make_choice: Callable[[tuple[int, ...], int], Any],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._repository = repository
        self._publish_routes = publish_routes
        self._make_choice = make_choice  # the repository's VersionChoice type
        self._clock = clock
        self._rollouts: dict[str, Rollout] = {}
        self._plans: dict[str, RolloutPlan] = {}
        self._routes: dict[str, RouteTable] = {}
        self._routing: dict[str, Rollout] = {}  # the rollouts whose tables are published
        self._pending: dict[str, tuple[int, int]] = {}  # (stable, canary) loading to start
        self._reloads: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        # The request path's side (router/hooks.py): its queued mirrored pairs
        # are compared here, on the tick.
        self.hooks: Any = None

    # -- the repository's version chooser ----------------------------------------

    def choose_versions(
        self, name: str, config: ModelConfigView, on_disk: list[int], serving: tuple[int, ...]
    ) -> Any:
        """Which versions the repository loads for `name` (None: its policy)."""
        if config.rollout is None:
            self._plans.pop(name, None)
            return None
        plan = parse_rollout_plan(config.rollout, "rollout")  # ConfigError: model unavailable
        self._plans[name] = plan
        rollout = self._rollout(name, plan)
        record = rollout.record
        if record is not None and rollout.state.routing:
            return self._make_choice((record.stable, record.canary), record.stable)
        pending = self._pending.get(name)
        if pending is not None:
            return self._make_choice(pending, pending[0])
        pinned = self._store.pinned(name)
        current = pinned if pinned in on_disk else (max(serving) if serving else None)
        newest = max(on_disk) if on_disk else None
        if current is None:  # nothing serves yet: the plan's stable, or the newest
            current = plan.stable if plan.stable in on_disk else newest
            if current is None:
                return None
            if plan.canary not in on_disk:
                return self._make_choice((current,), current)
        canary = plan.canary if plan.canary in on_disk else newest
        done = record is not None and (record.stable, record.canary) == (current, canary)
        if (
            canary is not None
            and canary != current
            and (canary > current or plan.canary)
            and not done
        ):
            self._pending[name] = (current, canary)  # started once both are ready
            return self._make_choice((current, canary), current)
        return self._make_choice((current,), current)

    # -- admin --------------------------------------------------------------------

    async def start(self, name: str, *, canary: int, stable: int | None = None) -> dict[str, Any]:
        """Start a rollout by hand: load the canary beside stable, then route."""
        plan = self._plans.get(name)
        if plan is None:
            plan = RolloutPlan()
            self._plans[name] = plan
        served = self._repository.served().get(name)
        if served is None or not served.versions:
            raise ModelNotFound(f"model '{name}' is not loaded in this server")
        rollout = self._rollout(name, plan)
        if rollout.state.routing or name in self._pending:
            raise InvalidRequest(f"model '{name}' already has a rollout ({rollout.state.value})")
        current = stable if stable is not None else self._serving_default(name)
        if canary == current:
            raise InvalidRequest(f"canary {canary} is the version serving now")
        self._pending[name] = (current, canary)
        await self._repository.load(name)
        self._start_pending(name)
        if name in self._pending:  # the canary did not load
            self._pending.pop(name)
            raise InvalidRequest(f"model '{name}' version {canary} did not load; see the index")
        return self.status(name)

    def act(self, name: str, action: str) -> dict[str, Any]:
        """pause, resume, promote or abort `name`'s rollout."""
        rollout = self._rollouts.get(name)
        if rollout is None:
            raise ModelNotFound(f"model '{name}' has no rollout")
        now = self._clock()
        try:
            {"pause": rollout.pause, "resume": rollout.resume, "promote": rollout.promote,
             "abort": rollout.abort}[action](now)  # fmt: skip
        except RolloutError as exc:
            raise InvalidRequest(str(exc)) from None
        return self.status(name)

    def status(self, name: str) -> dict[str, Any]:
        rollout = self._rollouts.get(name) or self._load_rollout(name)
        if rollout is None:
            raise ModelNotFound(f"model '{name}' has no rollout")
        doc = rollout.status()
        doc["history"] = [
            {"at": e.at, "kind": e.kind, "state": e.state, "step": e.step, "reason": e.reason}
            for e in self._store.events(name, limit=20)
        ]
        return doc

    def statuses(self) -> list[dict[str, Any]]:
        names = sorted(set(self._store.models()) | set(self._rollouts))
        return [self.status(name) for name in names]

    # -- the loop -----------------------------------------------------------------

    def resume_all(self) -> None:
        """Once the repository has loaded (at start-up): every stored rollout
        that was routing routes again, and those the configs asked for start."""
        for name in list(self._pending):
            self._start_pending(name)
        for name in self._store.models():
            rollout = self._load_rollout(name)
            if rollout is not None and rollout.state.routing:
                rollout.resume_from_store(self._clock())

    def start_loop(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.tick()
            except Exception:  # a control loop logs and keeps going
                log.exception("rollout controller tick failed")

    def tick(self) -> None:
        now = self._clock()
        if self.hooks is not None:
            self.hooks.compare_pending()
        for name in list(self._pending):
            self._start_pending(name)
        served = self._repository.served()
        for name, rollout in self._rollouts.items():
            record = rollout.record
            if record is None or not rollout.state.routing:
                continue
            versions = served.get(name)
            if versions is None or record.canary not in versions.versions:
                rollout.hard_failure(f"canary version {record.canary} is not loaded", now)
                continue
            rollout.tick(now)

    # -- internals ----------------------------------------------------------------

    def rollouts(self) -> dict[str, Rollout]:
        """Every model's rollout this process knows (for metrics)."""
        return dict(self._rollouts)

    def observer(self, name: str) -> Rollout | None:
        """The rollout that routes `name` now (the request path reports to
        it): a dict kept by the route swaps, no state to work out per request."""
        return self._routing.get(name)

    def _serving_default(self, name: str) -> int:
        pinned = self._store.pinned(name)
        served = self._repository.served()[name]
        if pinned in served.versions:
            return pinned  # type: ignore[return-value]
        return max(served.versions)

    def _start_pending(self, name: str) -> None:
        stable, canary = self._pending[name]
        served = self._repository.served().get(name)
        if served is None or stable not in served.versions:
            return
        rollout = self._rollout(name, self._plans.get(name) or RolloutPlan())
        if canary not in served.versions:
            return  # loading, or failed: start() reports it, the loop retries
        del self._pending[name]
        try:
            rollout.start(stable=stable, canary=canary, now=self._clock())
        except RolloutError as exc:
            log.error("rollout of %s: %s", name, exc)

    def _rollout(self, name: str, plan: RolloutPlan) -> Rollout:
        rollout = self._rollouts.get(name)
        if rollout is None:
            rollout = Rollout(
                model=name,
                plan=plan,
                store=self._store,
                publish=functools.partial(self._route, name),
                on_finish=functools.partial(self._finished, name),
            )
            self._rollouts[name] = rollout
        else:
            rollout.plan = plan
        return rollout

    def _load_rollout(self, name: str) -> Rollout | None:
        if self._store.load(name) is None:
            return None
        return self._rollout(name, self._plans.get(name) or RolloutPlan())

    def _route(self, name: str, table: RouteTable | None) -> None:
        routes = dict(self._routes)
        routing = dict(self._routing)
        if table is None:
            routes.pop(name, None)
            routing.pop(name, None)
        else:
            routes[name] = table
            routing[name] = self._rollouts[name]
        self._routing = routing
        self._routes = routes
        self._publish_routes(routes)

    def _finished(self, name: str, state: RolloutState, stable: int, canary: int) -> None:
        """Pin what serves from now on, and reload: the other version is
        unloaded once its in-flight requests are done."""
        self._store.pin(name, canary if state is RolloutState.SUCCEEDED else stable)
        task = asyncio.get_running_loop().create_task(self._reload(name))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload(self, name: str) -> None:
        try:
            await self._repository.load(name)
        except Exception:
            log.exception("reloading %s after its rollout failed", name)
