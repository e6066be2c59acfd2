# cython: annotation_typing=True
"""Prometheus metrics, served as text on the metrics port.

Per model and version: request counts by outcome, real histograms (not
summaries) of end-to-end, queue and compute time, batch sizes, shed and
expired requests, in-flight requests, and the load state of each version.

The request path only bumps plain integers in `ModelMetrics` (event loop
thread, no locks: prometheus-client's own metric objects cost about 30 us a
request here, a lock and a label lookup per update). A custom collector turns
them into metric families when Prometheus scrapes, on the metrics thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from mlserve.runtime.repository import IndexEntry, ModelState

if TYPE_CHECKING:
    from mlserve import cython_shim as cython
else:
    try:
        import cython
    except ImportError:  # from source, without Cython installed
        from mlserve import cython_shim as cython

LATENCY_BUCKETS_S = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@cython.cclass
class Histogram:
    """Bucket counts and a sum; `observe` finds the bucket by a scan in C
    when compiled (a request observes three)."""

    bounds: tuple[float, ...]
    counts: list[int]
    total: cython.double

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    @cython.ccall
    def observe(self, value: cython.double) -> None:
        index: cython.Py_ssize_t = 0
        count: cython.Py_ssize_t = len(self.bounds)
        while index < count and self.bounds[index] < value:  # bisect_left: le buckets
            index += 1
        self.counts[index] += 1
        self.total += value

    def cumulative(self) -> tuple[list[tuple[str, float]], float]:
        buckets = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            buckets.append((_bound(bound), float(running)))
        running += self.counts[-1]
        buckets.append(("+Inf", float(running)))
        return buckets, self.total


def _bound(value: float) -> str:
    return str(float(value))


@cython.dataclasses.dataclass(init=False)
@cython.cclass
class ModelMetrics:
    """The counters of one model version. Written on the event loop only."""

    success: cython.longlong
    rows: cython.longlong
    inflight: cython.longlong
    failures: dict[str, int]
    shed_by_priority: dict[int, int]
    expired_by_priority: dict[int, int]
    request_duration: Histogram
    queue_duration: Histogram
    compute_duration: Histogram
    batch_rows: Histogram
    batch_requests: Histogram

    def __init__(self) -> None:
        self.success = 0
        self.rows = 0
        self.inflight = 0
        self.failures = {}
        self.shed_by_priority = {}
        self.expired_by_priority = {}
        self.request_duration = Histogram(LATENCY_BUCKETS_S)
        self.queue_duration = Histogram(LATENCY_BUCKETS_S)
        self.compute_duration = Histogram(LATENCY_BUCKETS_S)
        self.batch_rows = Histogram(BATCH_BUCKETS)
        self.batch_requests = Histogram(BATCH_BUCKETS)

    def record_success(
        self, rows: cython.longlong, total_s: float, queue_s: float, compute_s: float
    ) -> None:
        """One answered request: its rows and its three durations (seconds)."""
        self.success += 1
        self.rows += rows
        self.request_duration.observe(total_s)
        self.queue_duration.observe(queue_s)
        self.compute_duration.observe(compute_s)

    def failure(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def shed(self, priority: int) -> None:
        self.shed_by_priority[priority] = self.shed_by_priority.get(priority, 0) + 1

    def expired(self, priority: int) -> None:
        self.expired_by_priority[priority] = self.expired_by_priority.get(priority, 0) + 1


class ServerMetrics(Collector):
    """All of mlserve's metrics, exported through one registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._models: dict[tuple[str, str], ModelMetrics] = {}
        self._unrouted: dict[str, int] = {}
        self._states: dict[tuple[str, str], ModelState] = {}
        self.registry.register(self)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # -- writers (event loop) -------------------------------------------------

    def for_model(self, model: str, version: str) -> ModelMetrics:
        """The counters of a version; kept across reloads of the same version."""
        key = (model, version)
        metrics = self._models.get(key)
        if metrics is None:
            metrics = self._models[key] = ModelMetrics()
        return metrics

    def unrouted(self, reason: str) -> None:
        self._unrouted[reason] = self._unrouted.get(reason, 0) + 1

    def on_model_state(self, entry: IndexEntry) -> None:
        """Repository listener: keep `mlserve_model_state` in step with the index."""
        self._states[(entry.name, entry.version)] = entry.state

    # -- reader (scrape thread) -----------------------------------------------

    def collect(self) -> Iterator[Metric]:
        labels = ["model", "version"]
        models = list(self._models.items())  # a snapshot; writers only add keys
        success = CounterMetricFamily(
            "mlserve_request_success", "Inference requests answered successfully.", labels=labels
        )
        failure = CounterMetricFamily(
            "mlserve_request_failure",
            "Inference requests that failed, by reason (the error kind).",
            labels=[*labels, "reason"],
        )
        rows = CounterMetricFamily(
            "mlserve_inference_rows", "Rows (batch items) inferred.", labels=labels
        )
        shed = CounterMetricFamily(
            "mlserve_request_shed",
            "Requests refused up front: queue full or predicted to miss "
            "the latency budget, by priority level.",
            labels=[*labels, "priority"],
        )
        expired = CounterMetricFamily(
            "mlserve_request_expired",
            "Requests whose timeout expired before compute, by priority level.",
            labels=[*labels, "priority"],
        )
        inflight = GaugeMetricFamily(
            "mlserve_inflight_requests", "Inference requests being served now.", labels=labels
        )
        histograms = {
            "request_duration": HistogramMetricFamily(
                "mlserve_request_duration_seconds",
                "End-to-end time of an inference request in "
                "the server, from decoded request to encoded response.",
                labels=labels,
            ),
            "queue_duration": HistogramMetricFamily(
                "mlserve_queue_duration_seconds",
                "Time a request waited for a model instance.",
                labels=labels,
            ),
            "compute_duration": HistogramMetricFamily(
                "mlserve_compute_duration_seconds",
                "Time onnxruntime spent running the batch that held the request.",
                labels=labels,
            ),
            "batch_rows": HistogramMetricFamily(
                "mlserve_batch_rows", "Rows per executed batch.", labels=labels
            ),
            "batch_requests": HistogramMetricFamily(
                "mlserve_batch_requests", "Requests per executed batch.", labels=labels
            ),
        }
        for (model, version), m in models:
            key = [model, version]
            success.add_metric(key, m.success)
            rows.add_metric(key, m.rows)
            inflight.add_metric(key, m.inflight)
            for reason, count in list(m.failures.items()):
                failure.add_metric([*key, reason], count)
            for priority, count in list(m.shed_by_priority.items()):
                shed.add_metric([*key, str(priority)], count)
            for priority, count in list(m.expired_by_priority.items()):
                expired.add_metric([*key, str(priority)], count)
            for name, family in histograms.items():
                buckets, total = getattr(m, name).cumulative()
                family.add_metric(key, buckets, total)
        unrouted = CounterMetricFamily(
            "mlserve_request_unrouted",
            "Inference requests for a model or version that is not loaded, by reason.",
            labels=["reason"],
        )
        for reason, count in list(self._unrouted.items()):
            unrouted.add_metric([reason], count)
        state = GaugeMetricFamily(
            "mlserve_model_state",
            "1 for the current load state of a model version (READY, "
            'LOADING, UNLOADING, UNAVAILABLE), else 0; version "" is the model as a whole.',
            labels=[*labels, "state"],
        )
        for (model, version), current in list(self._states.items()):
            for candidate in ModelState:
                state.add_metric(
                    [model, version, candidate.value], 1.0 if candidate is current else 0.0
                )
        yield from (
            success,
            failure,
            unrouted,
            rows,
            shed,
            expired,
            inflight,
            *histograms.values(),
            state,
        )

    # -- endpoint -------------------------------------------------------------

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics endpoint in its own thread; returns the bound port."""
        self._server, self._thread = serve_registry(host, port, self.registry)
        return int(self._server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def serve_registry(
    host: str, port: int, registry: CollectorRegistry
) -> tuple[WSGIServer, threading.Thread]:
    """prometheus-client's /metrics server; a port it cannot bind is an
    OSError that names the address (prometheus-client's does not)."""
    try:
        return start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise OSError(exc.errno, f"{exc.strerror} ({host}:{port})") from None
