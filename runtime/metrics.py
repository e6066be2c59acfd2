"""Prometheus metrics, served as text on the metrics port.

Per model and version: request counts by outcome, real histograms (not
summaries) of end-to-end, queue and compute time, in-flight requests, and the
load state of each version. The request path uses pre-bound children
(`ModelMetrics`), so a request costs a few attribute calls, no label lookup."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from mlserve.runtime.repository import IndexEntry, ModelState

LATENCY_BUCKETS_S = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


@dataclass(slots=True)
class ModelMetrics:
    """The metric children of one model version, bound once."""

    success: Counter
    rows: Counter
    request_duration: Histogram
    queue_duration: Histogram
    compute_duration: Histogram
    inflight: Gauge
    batch_rows: Histogram
    batch_requests: Histogram
    failure_family: Counter
    shed_family: Counter
    expired_family: Counter
    model: str
    version: str

    def failure(self, reason: str) -> None:
        self.failure_family.labels(self.model, self.version, reason).inc()

    def shed(self, priority: int) -> None:
        self.shed_family.labels(self.model, self.version, str(priority)).inc()

    def expired(self, priority: int) -> None:
        self.expired_family.labels(self.model, self.version, str(priority)).inc()


class ServerMetrics:
    """All of mlserve's metrics in one registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("model", "version")
        r = self.registry
        self.success = Counter(
            "mlserve_request_success",
            "Inference requests answered successfully.",
            labels,
            registry=r,
        )
        self.failure = Counter(
            "mlserve_request_failure",
            "Inference requests that failed, by reason (the error kind).",
            (*labels, "reason"),
            registry=r,
        )
        self.unrouted = Counter(
            "mlserve_request_unrouted",
            "Inference requests for a model or version that is not loaded, by reason.",
            ("reason",),
            registry=r,
        )
        self.rows = Counter(
            "mlserve_inference_rows", "Rows (batch items) inferred.", labels, registry=r
        )
        self.request_duration = Histogram(
            "mlserve_request_duration_seconds",
            "End-to-end time of an inference request in the "
            "server, from decoded request to encoded response.",
            labels,
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.queue_duration = Histogram(
            "mlserve_queue_duration_seconds",
            "Time a request waited for a model instance.",
            labels,
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.compute_duration = Histogram(
            "mlserve_compute_duration_seconds",
            "Time onnxruntime spent running a request.",
            labels,
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        batch_buckets = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
        self.batch_rows = Histogram(
            "mlserve_batch_rows",
            "Rows per executed batch.",
            labels,
            buckets=batch_buckets,
            registry=r,
        )
        self.batch_requests = Histogram(
            "mlserve_batch_requests",
            "Requests per executed batch.",
            labels,
            buckets=batch_buckets,
            registry=r,
        )
        self.shed = Counter(
            "mlserve_request_shed",
            "Requests refused up front: queue full or predicted to "
            "miss the latency budget, by priority level.",
            (*labels, "priority"),
            registry=r,
        )
        self.expired = Counter(
            "mlserve_request_expired",
            "Requests whose timeout expired before compute, by priority level.",
            (*labels, "priority"),
            registry=r,
        )
        self.inflight = Gauge(
            "mlserve_inflight_requests", "Inference requests being served now.", labels, registry=r
        )
        self.model_state = Gauge(
            "mlserve_model_state",
            "1 for the current load state of a model "
            "version (READY, LOADING, UNLOADING, UNAVAILABLE), else 0; "
            'version "" is the model as a whole.',
            (*labels, "state"),
            registry=r,
        )
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def for_model(self, model: str, version: str) -> ModelMetrics:
        return ModelMetrics(
            success=self.success.labels(model, version),
            rows=self.rows.labels(model, version),
            request_duration=self.request_duration.labels(model, version),
            queue_duration=self.queue_duration.labels(model, version),
            compute_duration=self.compute_duration.labels(model, version),
            inflight=self.inflight.labels(model, version),
            batch_rows=self.batch_rows.labels(model, version),
            batch_requests=self.batch_requests.labels(model, version),
            failure_family=self.failure,
            shed_family=self.shed,
            expired_family=self.expired,
            model=model,
            version=version,
        )

    def on_model_state(self, entry: IndexEntry) -> None:
        """Repository listener: keep `mlserve_model_state` in step with the index."""
        for state in ModelState:
            self.model_state.labels(entry.name, entry.version, state.value).set(
                1.0 if state is entry.state else 0.0
            )

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics endpoint in its own thread; returns the bound port."""
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
