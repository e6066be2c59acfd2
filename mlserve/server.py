"""The composition root of `mlserve serve`: builds the repository, data plane,
metrics and transports from a ServerConfig, runs them on one event loop, and
drains on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import resource
import signal
import ssl
import sys
from typing import TYPE_CHECKING, Any

from mlserve.allocator import tune_malloc
from mlserve.config import ServerConfig, TlsConfig
from mlserve.errors import ConfigError, MlserveError
from mlserve.runtime import grpc_native
from mlserve.runtime.access import AccessPolicy
from mlserve.runtime.closing import LINGER_S
from mlserve.runtime.dataplane import DataPlane, ModelControlMode
from mlserve.runtime.grpc_server import GrpcioServer, start_grpc_server
from mlserve.runtime.grpc_service import HealthReporter
from mlserve.runtime.http_api import HttpApi
from mlserve.runtime.http_server import (
    Handler,
    HttpProtocol,
    HttpRequest,
    HttpResponse,
    start_http_server,
    start_unix_http_server,
)
from mlserve.runtime.metrics import ServerMetrics
from mlserve.runtime.repository import ModelRepository, VersionChoice
from mlserve.runtime.repository_layout import RepositoryLayout

if TYPE_CHECKING:
    from mlserve.router.controller import RolloutController

log = logging.getLogger("mlserve")


def _ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    if tls.root_cert is not None:
        context.load_verify_locations(tls.root_cert)
    if tls.mutual:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _announce(text: str) -> None:
    """One machine-readable line on stdout (tests and scripts read the ports here)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _raise_open_file_limit() -> None:
    """Each client connection is a descriptor: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            log.warning("cannot raise the open file limit from %d", soft)


# The cyclic collector's thresholds while serving (CPython's default: 700, 10,
# 10). Every request allocates containers (messages, arrays, futures,
# coroutine frames) that count towards a collection: perf put 7% of the
# server's cycles in the collector on the MLP at concurrency 64. Measured there (one
# core, native gRPC, batching), server CPU per request: 23.6 us at the
# default, 22.6 at (700, 20, 100), 21.9 at (10000, 10, 10), 21.6 at
# (10000, 20, 100); 50000 was worse (each young pass longer). Refcounting
# frees the request's garbage anyway: the collector is only for cycles.
GC_THRESHOLDS = (10_000, 20, 100)


def tune_gc() -> None:
    """Set the serving process's collector thresholds (GC_THRESHOLDS)."""
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(config: ServerConfig) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    _raise_open_file_limit()
    tune_gc()
    tune_malloc()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    metrics = ServerMetrics()
    repository = ModelRepository(RepositoryLayout(config.model_repository))
    repository.add_listener(metrics.on_model_state)
    mode = ModelControlMode(config.model_control_mode)
    dataplane = DataPlane(
        repository,
        metrics,
        control_mode=mode,
        strict_readiness=config.strict_readiness,
        # With --workers N, statistics add up the sibling workers' shares.
        peers=[p for p in config.worker_peers if p != config.worker_socket],
    )
    rollouts = _rollouts(config, repository, dataplane)
    health = HealthReporter()
    await health.set_ready(False)

    ports: list[str] = []
    grpc_server: GrpcioServer | grpc_native.NativeGrpcServer | None = None
    http_server = None
    connections: set[HttpProtocol] = set()
    try:
        if config.grpc.enabled:
            grpc_server = await _start_grpc(config, dataplane, health)
            ports.append(f"grpc={config.grpc.address}:{grpc_server.port}")
        if config.http.enabled:
            api = HttpApi(
                dataplane, AccessPolicy(list(config.http.restricted)), config.http.max_input_bytes
            )
            api.rollouts = rollouts
            api.admin_token = config.admin_token
            http_server, port, connections = await start_http_server(
                api.handle,
                host=config.http.address,
                port=config.http.port,
                max_body_bytes=config.http.max_input_bytes,
                ssl_context=_ssl_context(config.http.tls) if config.http.tls else None,
                reuse_port=config.reuse_port,
                start=api.start_infer,
                read_timeout_s=config.http_read_timeout_secs,
            )
            ports.append(f"http={config.http.address}:{port}")
        if config.metrics.enabled:
            port = metrics.serve(config.metrics.address, config.metrics.port)
            ports.append(f"metrics={config.metrics.address}:{port}")
    except (OSError, RuntimeError) as exc:  # grpcio says RuntimeError("Failed to bind ...")
        if grpc_server is not None:
            await grpc_server.stop(0)
        if http_server is not None:
            http_server.close()
        raise ConfigError("ports", f"cannot listen: {exc}") from exc
    worker_socket = None
    if config.worker_socket is not None:
        worker_socket = await start_unix_http_server(
            _worker_handler(metrics, dataplane), config.worker_socket
        )
    if grpc_server is not None:
        ports.append(f"grpc_impl={grpc_server.impl}")
    _announce("mlserve listening: " + " ".join(ports))

    if mode is ModelControlMode.EXPLICIT:
        names = config.load_models
        if "*" in names:
            names = tuple(repository.layout.model_names())
    else:
        names = tuple(repository.layout.model_names())
    await repository.load_many(names)
    if rollouts is not None:
        rollouts.resume_all()  # a restarted server routes the stored step again
        rollouts.start_loop()
    dataplane.started = True
    await health.set_ready(dataplane.ready())
    _announce(f"mlserve ready: {dataplane.ready()}")

    poller = None
    if mode is ModelControlMode.POLL:
        poller = loop.create_task(_poll(repository, dataplane, health, config.repository_poll_secs))
    else:
        poller = loop.create_task(_track_readiness(dataplane, health))

    await stop.wait()
    log.info("shutting down: draining for up to %.1f s", config.exit_timeout_secs)
    poller.cancel()
    if rollouts is not None:
        await rollouts.stop()
    dataplane.draining = True
    await health.set_ready(False)
    if http_server is not None:
        http_server.close()
    grpc_stop = (
        loop.create_task(grpc_server.stop(config.exit_timeout_secs))
        if grpc_server is not None
        else None
    )
    drained = await dataplane.drain(config.exit_timeout_secs)
    if not drained:
        log.warning("grace period over with %d requests in flight", dataplane.inflight)
    for connection in list(connections):
        connection.shut_down()
    # Connections still answering, or half-closed after their last answer:
    # exiting now would reset them and cut that answer short.
    until = loop.time() + LINGER_S
    while connections and loop.time() < until:
        await asyncio.sleep(0.01)
    if grpc_stop is not None:
        await grpc_stop
    metrics.close()
    if worker_socket is not None:
        worker_socket.close()
    await repository.close()
    _announce("mlserve stopped")
    return 0


def _rollouts(
    config: ServerConfig, repository: ModelRepository, dataplane: DataPlane
) -> RolloutController | None:
    """The rollout controller, wired: it chooses the versions the repository
    loads, publishes route tables into the data plane, and hears routed
    requests through its hooks. One serving process only for now: with
    --workers N each worker would judge its own share (issue 29 goes on)."""
    if config.worker_socket is not None:
        return None
    from mlserve.router.controller import RolloutController
    from mlserve.router.hooks import RolloutHooks
    from mlserve.router.metrics import RolloutMetrics
    from mlserve.router.state_store import StateStore

    def publish_routes(routes: dict[str, Any]) -> None:
        dataplane.routes = routes

    store = StateStore(config.rollout_state_dir / "rollouts.sqlite")
    controller = RolloutController(
        store=store, repository=repository, publish_routes=publish_routes, make_choice=VersionChoice
    )
    hooks = RolloutHooks(controller.observer)
    controller.hooks = hooks
    repository.choose_versions = controller.choose_versions
    dataplane.rollout_hooks = hooks
    dataplane.metrics.registry.register(RolloutMetrics(controller, hooks))
    return controller


def _worker_handler(metrics: ServerMetrics, dataplane: DataPlane) -> Handler:
    """A worker's private socket: its metrics for the supervisor to merge, its
    share of the statistics for its siblings to add up, and the explicit loads
    and unloads a sibling received."""
    from urllib.parse import parse_qs

    from prometheus_client import generate_latest

    async def handle(request: HttpRequest) -> HttpResponse:
        if request.path == "/metrics":
            return HttpResponse(200, generate_latest(metrics.registry), "text/plain")
        if request.path == "/statistics":
            query = parse_qs(request.query)
            try:
                found = dataplane.local_statistics(
                    query.get("model", [""])[0], query.get("version", [""])[0]
                )
            except MlserveError:
                found = []  # not loaded here (yet): this worker's share is nothing
            body = [{"name": n, "version": v, "stats": s.to_json()} for n, v, s in found]
            return HttpResponse(200, json.dumps(body).encode())
        parts = request.path.split("/")
        if request.method == "POST" and len(parts) == 4 and parts[1] == "control":
            action, name = parts[2], parts[3]
            try:
                if action == "load":
                    await dataplane.load_model(name, from_peer=True)
                elif action == "unload":
                    await dataplane.unload_model(name, from_peer=True)
                else:
                    return HttpResponse(404, b"")
            except MlserveError as exc:
                return HttpResponse(500, json.dumps({"error": exc.message}).encode())
            return HttpResponse(200, b"")
        return HttpResponse(404, b"")

    return handle


async def _start_grpc(
    config: ServerConfig, dataplane: DataPlane, health: HealthReporter
) -> GrpcioServer | grpc_native.NativeGrpcServer:
    """The configured gRPC transport; grpcio when the native one was not built."""
    endpoint = config.grpc
    if endpoint.impl == "native":
        if grpc_native.AVAILABLE:
            return await grpc_native.start_native_grpc_server(
                endpoint,
                dataplane,
                health,
                ssl_context=_ssl_context(endpoint.tls) if endpoint.tls else None,
                reuse_port=config.reuse_port,
            )
        _announce(f"mlserve: {grpc_native.UNAVAILABLE_REASON}; serving gRPC on grpcio")
    return await start_grpc_server(endpoint, dataplane, health, reuse_port=config.reuse_port)


async def _track_readiness(dataplane: DataPlane, health: HealthReporter) -> None:
    """Keep grpc.health in step with readiness after explicit loads/unloads."""
    last = None
    while True:
        ready = dataplane.ready()
        if ready != last:
            await health.set_ready(ready)
            last = ready
        await asyncio.sleep(0.5)


async def _poll(
    repository: ModelRepository, dataplane: DataPlane, health: HealthReporter, interval_s: float
) -> None:
    tracker = asyncio.get_running_loop().create_task(_track_readiness(dataplane, health))
    try:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await repository.poll_once()
            except Exception:  # a control loop survives whatever one poll hits
                log.exception("repository poll failed")
    finally:
        tracker.cancel()
