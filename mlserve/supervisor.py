"""`mlserve serve --workers N`: N serving processes sharing the gRPC and HTTP
ports (SO_REUSEPORT: the kernel spreads connections), with one metrics view.

The supervisor reserves the ports (binding, not listening, so port 0 works),
starts the workers with the same settings plus their private metrics socket,
announces the ports once every worker is up, serves /metrics by merging the
workers' counters (sums per series, plus `mlserve_worker_request_success_total`
per worker), restarts a worker that dies, and on SIGTERM passes the signal on
and waits for them to drain.

For models whose cost is per-request overhead rather than compute, more
processes buy throughput that one event loop cannot. The worker answering a
statistics request adds up its siblings' shares, and one receiving an
explicit load or unload passes it on (over the same sockets), so every
worker serves the same models and the statistics stay cumulative."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from mlserve.config import ServerConfig
from mlserve.errors import ConfigError, MlserveError
from mlserve.runtime.metrics import serve_registry
from mlserve.runtime.repository_layout import RepositoryLayout

log = logging.getLogger("mlserve.supervisor")
SMALL_MODELS_BYTES = 64 * 1024 * 1024


def auto_workers(config: ServerConfig) -> tuple[int, str]:
    """How many workers `--workers auto` (the default) starts, and why.

    One per usable CPU when every model is small, on the CPU and asks for no
    parallelism of its own: then a request's cost is mostly per-request
    overhead on one event loop, and a worker per core multiplies throughput
    (the MLP on 2 cores: 44k requests/s against 25k). Otherwise one: a GPU
    model, a large one (every worker loads every model), or one that sets
    `instance_count` or `intra_op_threads` above 1 (a worker is pinned to one
    core, where those threads would only take turns)."""
    cpus = len(os.sched_getaffinity(0))
    if cpus == 1:
        return 1, "one CPU"
    layout = RepositoryLayout(config.model_repository)
    for name in layout.model_names():
        try:
            model = layout.read_config(name, layout.model_dir(name))
        except MlserveError:
            continue  # the workers will report it; it does not change the count
        if model.device != "cpu":
            return 1, f"model {name!r} runs on {model.device}"
        if model.instance_count > 1 or model.session.intra_op_threads > 1:
            return 1, f"model {name!r} asks for more than one instance or intra-op thread"
    total = sum(path.stat().st_size for path in config.model_repository.rglob("*.onnx"))
    if total > SMALL_MODELS_BYTES:
        return 1, f"the models take {total >> 20} MiB (over {SMALL_MODELS_BYTES >> 20} MiB)"
    return cpus, "one per CPU: every model is small and on the CPU"


def _reserve(address: str, port: int) -> tuple[socket.socket, int]:
    """Bind (without listening) with SO_REUSEPORT so workers can share the port."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"{exc.strerror} ({address}:{port})") from None
    return sock, int(sock.getsockname()[1])


def _fetch_metrics(path: str) -> str:
    """GET /metrics over a worker's unix socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise OSError(f"worker metrics answered {head[:40]!r}")
    return body.decode()


class MergedMetrics(Collector):
    """Sums every series across the workers' metrics at scrape time."""

    def __init__(self, sockets: list[str]) -> None:
        self.sockets = sockets

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        sums: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
        per_worker = Metric(
            "mlserve_worker_request_success",
            "Successful requests per worker process.",
            "counter",
        )
        for index, path in enumerate(self.sockets):
            try:
                text = _fetch_metrics(path)
            except OSError:
                continue  # a restarting worker: its counters start again from zero
            worker_success = 0.0
            for family in text_string_to_metric_families(text):
                families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                    if family.type == "gauge" and family.name == "mlserve_model_state":
                        sums[key] = max(sums.get(key, 0.0), sample.value)
                    else:
                        sums[key] = sums.get(key, 0.0) + sample.value
                    if sample.name == "mlserve_request_success_total":
                        worker_success += sample.value
            per_worker.add_sample(
                "mlserve_worker_request_success_total", {"worker": str(index)}, worker_success
            )
        for (family_name, sample_name, labels), value in sums.items():
            families[family_name].add_sample(sample_name, dict(labels), value)
        yield from families.values()
        yield per_worker


def worker_cpus(index: int, count: int, cpus: list[int]) -> set[int]:
    """The cores worker `index` of `count` runs on: an equal share of the
    supervisor's, so each worker's onnxruntime threads and event loop stay on
    cores no sibling uses (and `execution: auto` sees the one core it has).
    More workers than cores take the cores in turn."""
    if count >= len(cpus):
        return {cpus[index % len(cpus)]}
    start, stop = index * len(cpus) // count, (index + 1) * len(cpus) // count
    return set(cpus[start:stop])


class Supervisor:
    """Starts, watches and stops the worker processes."""

    def __init__(self, config: ServerConfig, settings: dict[str, Any], count: int) -> None:
        self.config = config
        self.settings = settings
        self.count = count
        self.stopping = False
        self.workdir = Path(tempfile.mkdtemp(prefix="mlserve-workers-"))
        self.sockets = [str(self.workdir / f"worker-{i}.sock") for i in range(count)]
        self.processes: list[subprocess.Popen[str] | None] = [None] * count
        self.ready = [threading.Event() for _ in range(count)]
        self.cpus = sorted(os.sched_getaffinity(0))

    def _worker_settings(self, index: int, ports: dict[str, int]) -> Path:
        settings = dict(self.settings)
        settings.update(
            workers=1,
            allow_metrics=False,
            worker_socket=self.sockets[index],
            worker_peers=list(self.sockets),
            reuse_port=True,
            http_port=ports.get("http", self.config.http.port),
            grpc_port=ports.get("grpc", self.config.grpc.port),
        )
        settings.pop("config", None)
        settings["model_repository"] = str(self.config.model_repository)
        path = self.workdir / f"worker-{index}.yaml"
        path.write_text(yaml.safe_dump(settings), encoding="utf-8")
        return path

    def _start(self, index: int, ports: dict[str, int]) -> None:
        settings_file = self._worker_settings(index, ports)
        process = subprocess.Popen(
            [sys.executable, "-m", "mlserve.cli.main", "serve", "--config", str(settings_file)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.processes[index] = process
        # Before the worker starts a thread (it is still starting Python), so
        # every thread it makes inherits the mask.
        os.sched_setaffinity(process.pid, worker_cpus(index, self.count, self.cpus))
        self.ready[index].clear()

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                if line.startswith("mlserve ready:"):
                    self.ready[index].set()

        threading.Thread(target=pump, daemon=True).start()

    def run(self) -> int:
        ports: dict[str, int] = {}
        reservations = []
        metrics_server = None
        try:  # every port before any worker starts: a taken one is a clean error
            for name in ("http", "grpc"):
                endpoint = getattr(self.config, name)
                if endpoint.enabled:
                    sock, port = _reserve(endpoint.address, endpoint.port)
                    reservations.append(sock)
                    ports[name] = port
            if self.config.metrics.enabled:
                registry = CollectorRegistry(auto_describe=False)
                registry.register(MergedMetrics(self.sockets))
                metrics_server, _ = serve_registry(
                    self.config.metrics.address, self.config.metrics.port, registry
                )
        except OSError as exc:
            for sock in reservations:
                sock.close()
            raise ConfigError("ports", f"cannot listen: {exc}") from exc
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        for index in range(self.count):
            self._start(index, ports)
        announce = [
            f"{name}={getattr(self.config, name).address}:{port}" for name, port in ports.items()
        ]
        if metrics_server is not None:
            announce.append(f"metrics={self.config.metrics.address}:{metrics_server.server_port}")
        if self.config.grpc.enabled:
            from mlserve.runtime import grpc_native

            impl = self.config.grpc.impl if grpc_native.AVAILABLE else "grpcio"
            announce.append(f"grpc_impl={impl}")
        print("mlserve listening: " + " ".join(announce), flush=True)
        for event in self.ready:
            while not event.wait(0.1):
                if stop.is_set():
                    break
        print(f"mlserve ready: True ({self.count} workers)", flush=True)
        while not stop.wait(0.5):
            for index, process in enumerate(self.processes):
                if process is not None and process.poll() is not None:
                    log.error("worker %d exited with %s; restarting it", index, process.returncode)
                    self._start(index, ports)
        for process in self.processes:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.exit_timeout_secs + 10
        code = 0
        for process in self.processes:
            if process is None:
                continue
            try:
                code |= process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                code = 1
        if metrics_server is not None:
            metrics_server.shutdown()
        for sock in reservations:
            sock.close()
        print("mlserve stopped", flush=True)
        return code


def run_supervisor(config: ServerConfig, settings: dict[str, Any], count: int) -> int:
    return Supervisor(config, settings, count).run()
