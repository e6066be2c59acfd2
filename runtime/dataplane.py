"""The transport-neutral data plane: everything a V2 endpoint does, once.

gRPC and HTTP adapters decode their wire format, call one method here, and
encode the result; the semantics (readiness, version resolution, validation,
statistics, metrics) live only here."""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlserve._version import __version__
from mlserve.errors import (
    DeadlineExceeded,
    InternalError,
    InvalidRequest,
    LatencyBudgetExceeded,
    MlserveError,
    ModelNotFound,
    ModelUnavailable,
    Overloaded,
    Unsupported,
)
from mlserve.runtime import datatypes
from mlserve.runtime.batching.batcher import BatchResult
from mlserve.runtime.inference_types import InferOutput, InferRequest, InferResponse
from mlserve.runtime.metrics import ModelMetrics, ServerMetrics
from mlserve.runtime.mirroring import MirrorPair, ShadowCall
from mlserve.runtime.model_config import PLATFORM
from mlserve.runtime.model_version import ModelVersion
from mlserve.runtime.repository import IndexEntry, ModelRepository, ModelState
from mlserve.runtime.routing import SERVER_FAILURES, route_hints
from mlserve.runtime.worker_peers import (
    VersionStatistics,
    merge,
    peer_control,
    peer_statistics,
)

if TYPE_CHECKING:
    from mlserve import cython_shim as cython
else:
    try:
        import cython
    except ImportError:  # from source, without Cython installed
        from mlserve import cython_shim as cython

log = logging.getLogger(__name__)
_perf_ns = time.perf_counter_ns
_random = random.random

EXTENSIONS = (
    "binary_tensor_data",
    "model_repository",
    "model_configuration",
    "statistics",
)


class ModelControlMode(enum.Enum):
    NONE = "none"
    POLL = "poll"
    EXPLICIT = "explicit"


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]
    sha256: str


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


class DataPlane:
    """What every V2 endpoint means, independent of the transport."""

    def __init__(
        self,
        repository: ModelRepository,
        metrics: ServerMetrics,
        *,
        control_mode: ModelControlMode = ModelControlMode.NONE,
        strict_readiness: bool = True,
        peers: list[str] | None = None,
    ) -> None:
        self.repository = repository
        self.metrics = metrics
        self.control_mode = control_mode
        self.strict_readiness = strict_readiness
        # Unix sockets of the sibling workers (with --workers N), for statistics.
        self.peers = peers or []
        self.started = False
        self.draining = False
        self.inflight = 0
        # Rollouts (mlserve.router, wired by the composition root): the route
        # table of each model being rolled out, replaced whole, and the hooks
        # that hear how routed requests end (runtime/routing.py).
        self.routes: dict[str, Any] = {}
        self.rollout_hooks: Any = None
        self._idle = asyncio.Event()
        self._idle.set()

    # -- health and metadata ------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        if not self.started or self.draining:
            return False
        return self.repository.all_ready() if self.strict_readiness else True

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata("mlserve", __version__, EXTENSIONS)

    def model_ready(self, name: str, version: str = "") -> bool:
        try:
            self.repository.resolve(name, version)
        except MlserveError:
            return False
        return not self.draining

    def model(self, name: str, version: str = "") -> ModelVersion:
        return self.repository.resolve(name, version)

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        model = self.repository.resolve(name, version)
        config = model.config
        batch = (-1,) if model.batching else ()
        if version:
            versions: tuple[str, ...] = (model.version_str,)
        else:
            versions = tuple(str(v) for v in sorted(self.repository.served()[name].versions))
        return ModelMetadata(
            name=name,
            versions=versions,
            platform=PLATFORM,
            inputs=tuple(TensorMetadata(t.name, t.datatype, batch + t.dims) for t in config.inputs),
            outputs=tuple(
                TensorMetadata(t.name, t.datatype, batch + t.dims) for t in config.outputs
            ),
            sha256=model.sha256,
        )

    def local_statistics(self, name: str = "", version: str = "") -> list[VersionStatistics]:
        """This process's statistics ("" = all models / versions)."""
        if not name:
            models = [
                m
                for served in self.repository.served().values()
                for _, m in sorted(served.versions.items())
            ]
        elif version:
            models = [self.repository.resolve(name, version)]
        else:
            served = self.repository.served().get(name)
            if served is None:
                self.repository.resolve(name)  # raises the right error
                raise ModelNotFound(f"model '{name}' is not loaded")
            models = [m for _, m in sorted(served.versions.items())]
        return [(m.name, m.version_str, m.stats) for m in models]

    async def model_statistics(self, name: str = "", version: str = "") -> list[VersionStatistics]:
        """Cumulative statistics: this process's, plus its sibling workers' if any."""
        local = self.local_statistics(name, version)
        if not self.peers:
            return local
        return merge(local + await peer_statistics(self.peers, name, version))

    # -- repository -----------------------------------------------------------

    def repository_index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        entries = self.repository.index(ready_only=ready_only)
        # A model-level row ("" version) only when it says more than its version rows.
        versioned = {e.name for e in entries if e.version}
        entries = [
            e
            for e in entries
            if e.version or e.name not in versioned or e.state is not ModelState.READY or e.reason
        ]
        # Models on disk that were never asked for are listed too, as Triton does.
        known = {e.name for e in entries}
        if not ready_only:
            for name in self.repository.layout.model_names():
                if name not in known:
                    entries.append(IndexEntry(name, "", ModelState.UNAVAILABLE, "not loaded"))
        return sorted(entries, key=lambda e: (e.name, e.version))

    async def load_model(self, name: str, *, from_peer: bool = False) -> None:
        self._check_control("load")
        await self.repository.load(name)
        if self.peers and not from_peer:
            await peer_control(self.peers, "load", name)

    async def unload_model(self, name: str, *, from_peer: bool = False) -> None:
        self._check_control("unload")
        await self.repository.unload(name)
        if self.peers and not from_peer:
            await peer_control(self.peers, "unload", name)

    def _check_control(self, action: str) -> None:
        if self.control_mode is not ModelControlMode.EXPLICIT:
            raise Unsupported(
                f"explicit model {action} is not allowed in model control mode "
                f"'{self.control_mode.value}'; start the server with "
                "--model-control-mode explicit"
            )

    # -- inference ------------------------------------------------------------

    def start(
        self,
        request: InferRequest,
        reply: AnswerCallback,
        fail: FailureCallback,
        context: object,
    ) -> InferCall:
        """Validate and queue one request; its outcome, counted, is delivered
        later as `reply(context, response)` or `fail(context, error, request)`, on the
        event loop thread, by the batch that ran it (or the timer that expired
        it). A request refused before it queues raises here instead, counted.

        The transports' fast path: no coroutine or future per request. `infer`
        is the same on top of a future."""
        arrival = request.arrival_ns or _perf_ns()
        route: Any = None
        try:
            if self.draining:
                raise ModelUnavailable("the server is shutting down; retry on another replica")
            if self.routes and not request.model_version:
                table = self.routes.get(request.model_name)
                if table is not None:
                    key, override = route_hints(request)
                    route = table.pick(key, override, _random())
                    request.route = route.track_name
                    model = self.repository.resolve(request.model_name, route.version_str)
                else:
                    model = self.repository.resolve(request.model_name, "")
            else:
                model = self.repository.resolve(request.model_name, request.model_version)
        except MlserveError as exc:
            self.metrics.unrouted(exc.kind.value)
            raise
        metrics = model.metrics or self._bind_metrics(model)
        model.inflight += 1
        if not self.inflight:
            self._idle.clear()
        self.inflight += 1
        metrics.inflight += 1
        priority = 0
        try:
            feeds, rows = model.prepare_feeds(request.inputs)
            names = model.select_outputs(request.outputs)
            timeout_s = 0.0
            if request.parameters or request.timeout_s:
                priority, timeout_s = _schedule_parameters(request)
            call = InferCall(
                self, model, metrics, request, names, rows, arrival, _perf_ns(), priority,
                reply, fail, context, False, route, None,
            )  # fmt: skip
            model.batcher.submit(feeds, rows, names, priority, timeout_s, call)
            if route is not None and route.mirror:
                self._mirror(call)
            return call
        except BaseException as exc:
            self._leave(model, metrics)
            error = self._counted_failure(model, metrics, arrival, priority, exc)
            if error is exc:
                raise
            raise error from exc

    def _mirror(self, call: InferCall) -> None:
        """Run a copy of `call`'s request on the canary too, unseen by the
        client, if the rollout's bound on mirrored work allows (a copy that
        cannot be made is a drop, never an error for the client)."""
        hooks = self.rollout_hooks
        request = call.request
        name = request.model_name
        if hooks is None or not hooks.mirror_admitted(name):
            return
        try:
            canary = self.repository.resolve(name, str(self.routes[name].canary))
            feeds, rows = canary.prepare_feeds(request.inputs)
            names = canary.select_outputs(request.outputs)
            pair = MirrorPair(hooks, name, names)
            canary.batcher.submit(feeds, rows, names, 0, 0.0, ShadowCall(pair))
        except Exception:  # the canary cannot take it: a failed mirrored run, counted
            pair = MirrorPair(hooks, name, call.names)
            pair.canary_answered(None, 0.0)
        call.pair = pair

    def _observe(self, call: InferCall, failed: bool, response: InferResponse | None) -> None:
        """Tell the rollout how a routed request ended (its route carries
        the rollout's recorder)."""
        outputs = response.outputs if response is not None else None
        call.route.record(failed, (_perf_ns() - call.arrival) / 1e9, outputs)

    async def infer(self, request: InferRequest) -> InferResponse:
        """`start`, awaited: for the transports that serve each request in a coroutine."""
        future: asyncio.Future[InferResponse] = asyncio.get_running_loop().create_future()
        call = self.start(request, _future_result, _future_exception, future)
        try:
            return await future
        except asyncio.CancelledError:  # the client went away: free its queue slot
            call.model.batcher.withdraw(call)
            raise

    def _leave(self, model: ModelVersion, metrics: ModelMetrics) -> None:
        metrics.inflight -= 1
        model.inflight -= 1
        self.inflight -= 1
        if not self.inflight:
            self._idle.set()

    def _counted_failure(
        self,
        model: ModelVersion,
        metrics: ModelMetrics,
        arrival: int,
        priority: int,
        exc: BaseException,
    ) -> BaseException:
        """Count a request's failure; the error to give its client."""
        if isinstance(exc, Overloaded | LatencyBudgetExceeded):
            metrics.shed(priority)
            self._fail(model, metrics, arrival, exc.kind.value)
        elif isinstance(exc, DeadlineExceeded):
            metrics.expired(priority)
            self._fail(model, metrics, arrival, exc.kind.value)
        elif isinstance(exc, MlserveError):
            self._fail(model, metrics, arrival, exc.kind.value)
        elif isinstance(exc, Exception):
            self._fail(model, metrics, arrival, "internal")
            error = InternalError(f"unexpected error serving '{model.name}': {exc!r}")
            error.__cause__ = exc  # for the log of whoever answers with it
            return error
        return exc

    def _fail(self, model: ModelVersion, metrics: ModelMetrics, arrival: int, reason: str) -> None:
        model.stats.record_failure(total_ns=_perf_ns() - arrival)
        metrics.failure(reason)

    def _bind_metrics(self, model: ModelVersion) -> ModelMetrics:
        """A version's counters, looked up once and kept on the version."""
        model.metrics = self.metrics.for_model(model.name, model.version_str)
        return model.metrics

    def count_rejected(self, model_name: str, model_version: str, error: MlserveError) -> None:
        """Count a request the transport could not even decode."""
        try:
            model = self.repository.resolve(model_name, model_version)
        except MlserveError:
            self.metrics.unrouted(error.kind.value)
            return
        metrics = model.metrics or self._bind_metrics(model)
        model.stats.record_failure(total_ns=0)
        metrics.failure(error.kind.value)

    # -- shutdown -------------------------------------------------------------

    async def drain(self, grace_s: float) -> bool:
        """Stop being ready; wait up to `grace_s` for in-flight requests. True if idle."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=grace_s)
        except TimeoutError:
            return False
        return True


AnswerCallback = Callable[[Any, InferResponse], None]
# The request too: an answer carrying the error can name it (ModelStreamInfer's do).
FailureCallback = Callable[[Any, BaseException, InferRequest], None]


@cython.dataclasses.dataclass
@cython.cclass
class InferCall:
    """One request between `DataPlane.start` and its answer. The batcher holds
    it where it would hold a future (`done`, `set_result`, `set_exception`,
    `cancel`), so a batch's end answers each request in the same pass: the
    response is built, counted and handed to the transport there, where a
    future would schedule a callback and resume two coroutines a loop turn
    later (1.2-1.7 us a request, timeit under uvloop)."""

    dataplane: DataPlane
    model: ModelVersion
    metrics: ModelMetrics
    request: InferRequest
    names: list[str]
    rows: int
    arrival: int
    prepared: int
    priority: int
    reply: AnswerCallback
    fail: FailureCallback
    context: object
    finished: bool
    route: Any  # the rollout's route for it, or None (no rollout)
    pair: Any  # its MirrorPair when the canary also runs it, or None

    def done(self) -> bool:
        return self.finished

    def set_result(self, result: BatchResult) -> None:
        """The batch ran: build the response, count it, answer."""
        if self.finished:
            return
        self.finished = True
        model = self.model
        dataplane = self.dataplane
        try:
            fetched = _perf_ns()
            specs = model.output_specs
            outputs = []
            for name, array in zip(self.names, result.outputs, strict=True):
                datatype = specs[name].datatype or datatypes.from_numpy(array.dtype).name
                outputs.append(InferOutput(name, datatype, array.shape, array))
            request = self.request
            response = InferResponse(
                model.name,
                model.version_str,
                request.id,
                outputs,
                {o.name: o.parameters for o in request.outputs if o.parameters},
                {},
            )
            done = _perf_ns()
            arrival = self.arrival
            total_ns = done - arrival
            model.stats.record_success(
                total_ns,
                result.queue_ns,
                self.prepared - arrival + result.input_ns,
                result.infer_ns,
                done - fetched + result.output_ns,
            )
            self.metrics.record_success(
                self.rows, total_ns / 1e9, result.queue_ns / 1e9, result.infer_ns / 1e9
            )
        except BaseException as exc:
            dataplane._leave(model, self.metrics)
            error = dataplane._counted_failure(
                model, self.metrics, self.arrival, self.priority, exc
            )
            _fail_quietly(self, error)
            return
        dataplane._leave(model, self.metrics)
        if self.route is not None:
            response.parameters = self.route.parameters
            _report_route(self, False, response, result.outputs)
        try:
            self.reply(self.context, response)
        except Exception as exc:  # a transport's bug: this request still gets an answer
            _fail_quietly(self, InternalError(f"could not send the answer: {exc!r}"))

    def set_exception(self, exc: BaseException) -> None:
        """The request failed in the queue or in its batch: count it, answer."""
        if self.finished:
            return
        self.finished = True
        dataplane = self.dataplane
        dataplane._leave(self.model, self.metrics)
        error = dataplane._counted_failure(
            self.model, self.metrics, self.arrival, self.priority, exc
        )
        if self.route is not None:
            failed = isinstance(error, MlserveError) and error.kind in SERVER_FAILURES
            _report_route(self, failed, None, None)
        _fail_quietly(self, error)

    def withdraw(self) -> None:
        """Its client went away: out of the queue and counted cancelled if it
        has not begun to run; one that has (in a batch, or alone on an
        instance thread) runs, its answer dropped."""
        if not self.finished:
            self.model.batcher.withdraw(self)

    def cancel(self) -> bool:
        """Withdrawn before it ran (its client went away): nothing is answered,
        and it counts as a failure, reason "cancelled", so that successes and
        failures add up to the requests received."""
        if self.finished:
            return False
        self.finished = True
        dataplane = self.dataplane
        dataplane._leave(self.model, self.metrics)
        dataplane._fail(self.model, self.metrics, self.arrival, "cancelled")
        return True


def _report_route(
    call: InferCall, failed: bool, response: InferResponse | None, outputs: Any
) -> None:
    """Tell the rollout how a routed request ended, and hand stable's answer
    to a mirrored copy; a fault there must not cost the client its answer."""
    try:
        call.dataplane._observe(call, failed, response)
        if call.pair is not None:
            call.pair.stable_answered(outputs)
    except Exception:
        log.exception("reporting a routed request of '%s' failed", call.model.name)


def _fail_quietly(call: InferCall, error: BaseException) -> None:
    """Hand `error` to the transport; the batch that answers the other
    requests must go on even if the transport cannot."""
    try:
        call.fail(call.context, error, call.request)
    except Exception:
        log.exception("could not answer a request of '%s' with its error", call.model.name)


def _future_result(future: asyncio.Future[InferResponse], response: InferResponse) -> None:
    if not future.done():
        future.set_result(response)


def _future_exception(
    future: asyncio.Future[InferResponse], exc: BaseException, _: InferRequest
) -> None:
    if not future.done():
        future.set_exception(exc)


def _schedule_parameters(request: InferRequest) -> tuple[int, float]:
    """The schedule-policy parameters: `priority` (1 = highest) and `timeout`
    (microseconds), combined with the transport's own deadline."""
    params = request.parameters
    priority = params.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or priority < 0:
        raise InvalidRequest(
            f"parameter 'priority' must be a non-negative integer, got {priority!r}"
        )
    timeout_us = params.get("timeout", 0)
    if isinstance(timeout_us, bool) or not isinstance(timeout_us, int) or timeout_us < 0:
        raise InvalidRequest(
            f"parameter 'timeout' must be a non-negative integer of microseconds, got "
            f"{timeout_us!r}"
        )
    timeout_s = timeout_us / 1e6
    if request.timeout_s > 0:
        timeout_s = min(timeout_s, request.timeout_s) if timeout_s else request.timeout_s
    return priority, timeout_s
