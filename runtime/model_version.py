"""One loaded, servable version of a model: its completed config, its
onnxruntime session, the threads that run it, and its statistics.

The request path calls `prepare_feeds` (validation against the model's
signature) and `execute` (onnxruntime off the event loop)."""

from __future__ import annotations

import asyncio
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlserve.errors import ConfigError, InvalidRequest
from mlserve.runtime import datatypes
from mlserve.runtime.batching.batcher import Batcher, BatcherSettings, BatchResult
from mlserve.runtime.batching.instance_pool import InstancePool
from mlserve.runtime.batching.policy import BatchPolicy
from mlserve.runtime.inference_types import InferInput, RequestedOutput
from mlserve.runtime.model_config import ModelConfig, TensorSpec
from mlserve.runtime.onnx_session import OnnxSession
from mlserve.runtime.statistics import ModelStatistics

if TYPE_CHECKING:
    from mlserve.runtime.metrics import ModelMetrics

_perf_ns = time.perf_counter_ns


DEFAULT_MAX_QUEUE_SIZE = 4096
# `execution: auto`: the longest batch run on the event loop thread. Long
# enough for small models' batches; short enough that health checks and other
# models' requests wait no longer than a scheduler time slice would make them.
AUTO_INLINE_LIMIT_S = 0.005


def inline_limit(config: ModelConfig, cores: int) -> float:
    """How long a batch may run on the event loop thread (0 = never).

    `auto` runs inline where a separate instance thread has no core to run
    on beside the loop: one CPU instance whose intra-op threads already cover
    every core this process may use (one core and one thread; or the default,
    intra_op_threads 0 = one per core). There the handoff to the thread is
    pure cost (two thread switches and a wakeup); likely worse, the loop then
    preempts one of onnxruntime's threads and the others wait for it at the
    end of each parallel operator. Measured on 2 cores with 2 intra-op
    threads, inline against threads: convnet 7.9k against 5.9k requests/s
    unbatched and 8.9k against 8.1k batched at concurrency 32, MLP 26k
    against 23k at 64; at concurrency 1 too. Batches the latency model
    expects to take longer than AUTO_INLINE_LIMIT_S still go to the thread,
    so health checks and other models wait at most that long."""
    if config.execution == "inline":
        return math.inf
    threads = config.session.intra_op_threads or cores
    if (
        config.execution == "auto"
        and config.device == "cpu"
        and config.instance_count == 1
        and threads >= cores
    ):
        return AUTO_INLINE_LIMIT_S
    return 0.0


def pad_sizes(config: ModelConfig) -> tuple[int, ...]:
    """The batch sizes batches are padded up to (empty: no padding).

    onnxruntime's CUDA provider tunes kernels per input shape the first time
    it sees one (cuDNN's exhaustive convolution search: up to a second per
    shape on a ResNet-50). Batching makes every size from 1 to max_batch_size
    appear, so unpadded every new size stalls a live batch: measured on an
    H200, ResNet-50 at concurrency 64 served 72 requests/s batched against
    607 unbatched. Padded to powers of two, a GPU model sees log2(max) + 1
    shapes, all warmed at load. The CPU provider tunes nothing per shape, and
    there padding would only add work."""
    dyn = config.dynamic_batching
    if dyn is None:
        return ()
    if dyn.allowed_batch_sizes is not None:
        return dyn.allowed_batch_sizes
    if config.device == "cpu":
        return ()
    largest = config.max_batch_size or 1
    return (*(1 << i for i in range(largest.bit_length()) if 1 << i < largest), largest)


def batcher_settings(config: ModelConfig, cores: int | None = None) -> BatcherSettings:
    """The batcher's settings from a completed model config; `cores` is how
    many cores this process may use (its CPU affinity when not given)."""
    dyn = config.dynamic_batching
    max_batch = config.max_batch_size or 1
    inline_limit_s = inline_limit(config, len(os.sched_getaffinity(0)) if cores is None else cores)
    fixed_shapes = all(d >= 0 for spec in config.inputs for d in spec.dims)
    if dyn is None:
        return BatcherSettings(
            policy=BatchPolicy(max_batch_size=max_batch),
            batching=False,
            instances=config.instance_count,
            max_queue_size=DEFAULT_MAX_QUEUE_SIZE,
            inline_limit_s=inline_limit_s,
        )
    return BatcherSettings(
        policy=BatchPolicy(
            max_batch_size=max_batch,
            preferred_batch_sizes=tuple(p for p in dyn.preferred_batch_size if p <= max_batch),
            max_queue_delay_s=dyn.max_queue_delay_us / 1e6,
            max_latency_s=dyn.max_latency_ms / 1e3,
        ),
        batching=True,
        instances=config.instance_count,
        max_queue_size=dyn.max_queue_size or DEFAULT_MAX_QUEUE_SIZE,
        default_timeout_s=dyn.default_queue_timeout_us / 1e6,
        priority_levels=dyn.priority_levels,
        default_priority=dyn.default_priority_level,
        preserve_ordering=dyn.preserve_ordering,
        inline_limit_s=inline_limit_s,
        fixed_shapes=fixed_shapes,
        pad_sizes=pad_sizes(config),
    )


def _format_shape(dims: tuple[int, ...], batching: bool, max_batch_size: int) -> str:
    body = ", ".join("-1" if d < 0 else str(d) for d in dims)
    if batching:
        return f"[batch 1..{max_batch_size}" + (f", {body}]" if body else "]")
    return f"[{body}]"


class ModelVersion:
    """A ready model version. Created (and warmed up) by the repository."""

    def __init__(
        self, *, config: ModelConfig, version: int, session: OnnxSession, sha256: str, path: Path
    ) -> None:
        self.name = config.name
        self.version = version
        self.version_str = str(version)
        self.config = config
        self.session = session
        self.sha256 = sha256
        self.path = path
        self.stats = ModelStatistics()
        self.inflight = 0
        self.metrics: ModelMetrics | None = None  # bound by the data plane on first request
        self.max_batch_size = config.max_batch_size or 0
        self.batching = self.max_batch_size > 0
        self.input_specs: dict[str, TensorSpec] = {t.name: t for t in config.inputs}
        self.output_specs: dict[str, TensorSpec] = {t.name: t for t in config.outputs}
        self.output_names: list[str] = [t.name for t in config.outputs]
        self._executor = InstancePool(config.instance_count, f"ort-{self.name}-{version}")
        self.batcher = Batcher(
            batcher_settings(config), session.run, self._executor, on_batch=self._on_batch
        )

    def __repr__(self) -> str:
        return f"ModelVersion({self.name!r}, {self.version})"

    # -- request path ---------------------------------------------------------

    def prepare_feeds(self, inputs: list[InferInput]) -> tuple[dict[str, np.ndarray], int]:
        """Check inputs against the signature; returns onnxruntime feeds and the row count."""
        feeds: dict[str, np.ndarray] = {}
        rows = 1
        batch_from = ""
        for tensor in inputs:
            spec = self.input_specs.get(tensor.name)
            if spec is None:
                raise InvalidRequest(
                    f"unexpected input '{tensor.name}' for model '{self.name}' version "
                    f"{self.version}; its inputs are {sorted(self.input_specs)}"
                )
            if tensor.name in feeds:
                raise InvalidRequest(f"input '{tensor.name}' is given more than once")
            if tensor.datatype != spec.datatype:
                raise InvalidRequest(
                    f"input '{tensor.name}': datatype {tensor.datatype} does not match the "
                    f"model's {spec.datatype}"
                )
            shape = tensor.shape
            dims = spec.dims
            tail = shape[1:] if self.batching else shape
            # Fixed dims (the usual case) compare as tuples; -1 dims take the loop.
            ok = tail == dims or (
                len(shape) == len(dims) + self.batching
                and -1 in dims
                and all(d < 0 or s == d for s, d in zip(tail, dims, strict=True))
            )
            ok = ok and len(shape) == len(dims) + self.batching
            if ok and self.batching:
                batch = shape[0]
                ok = 1 <= batch <= self.max_batch_size
                if ok and batch_from and batch != rows:
                    raise InvalidRequest(
                        f"input '{tensor.name}': batch dimension {batch} differs from input "
                        f"'{batch_from}' ({rows}); all inputs must carry the same rows"
                    )
                rows, batch_from = batch, tensor.name
            if not ok:
                raise InvalidRequest(
                    f"input '{tensor.name}': shape {list(shape)} does not match the model's "
                    f"{_format_shape(dims, self.batching, self.max_batch_size)}"
                )
            feeds[tensor.name] = tensor.data
        if len(feeds) != len(self.input_specs):
            missing = sorted(set(self.input_specs) - set(feeds))
            raise InvalidRequest(
                f"model '{self.name}' needs input(s) {missing}, which the request does not carry"
            )
        return feeds, rows

    def select_outputs(self, requested: list[RequestedOutput]) -> list[str]:
        """The output names to fetch: all, or the requested subset in request order."""
        if not requested:
            return self.output_names
        names = []
        for output in requested:
            if output.name not in self.output_specs:
                raise InvalidRequest(
                    f"requested output '{output.name}' is not an output of model '{self.name}'; "
                    f"its outputs are {self.output_names}"
                )
            if "classification" in output.parameters:
                raise InvalidRequest(
                    f"requested output '{output.name}': the classification extension is not "
                    "supported by this server"
                )
            names.append(output.name)
        return names

    def _on_batch(self, result: BatchResult) -> None:
        self.stats.record_execution(
            rows=result.batch_rows,
            input_ns=result.input_ns,
            infer_ns=result.infer_ns,
            output_ns=result.output_ns,
        )
        if self.metrics is not None:
            self.metrics.batch_rows.observe(result.batch_rows)
            self.metrics.batch_requests.observe(result.batch_requests)

    # -- control plane --------------------------------------------------------

    def warm_up(self, model_dir: Path) -> None:
        """Run the configured warmup inferences; raises if the model cannot run."""
        warmup = self.config.warmup
        if warmup.kind == "none":
            return
        feeds = self._warmup_feeds(model_dir)
        for _ in range(warmup.count):
            self.session.run(self.output_names, feeds)
        # Every size a batch is padded to, so none is first seen (and tuned) live.
        for rows in self.batcher.settings.pad_sizes:
            self.session.run(self.output_names, self._warmup_feeds(model_dir, rows))

    def _warmup_feeds(self, model_dir: Path, rows: int = 0) -> dict[str, np.ndarray]:
        """The configured warmup request; with `rows`, generated data of that
        many rows (a file's sample has its own)."""
        warmup = self.config.warmup
        if warmup.kind == "file" and not rows:
            assert warmup.file is not None
            sample = (model_dir / warmup.file).resolve()
            if not sample.is_relative_to(model_dir.resolve()):
                raise ConfigError("warmup.file", "must stay inside the model folder")
            with np.load(sample, allow_pickle=False) as data:
                missing = sorted(set(self.input_specs) - set(data.files))
                if missing:
                    raise ConfigError("warmup.file", f"{sample.name} lacks inputs {missing}")
                return {name: data[name] for name in self.input_specs}
        rng = np.random.default_rng(0)
        feeds = {}
        for spec in self.config.inputs:
            shape = tuple(1 if d < 0 else d for d in spec.dims)
            if self.batching:
                shape = (rows or min(warmup.batch_size, self.max_batch_size), *shape)
            dt = datatypes.BY_NAME[spec.datatype]
            if dt.name == "BYTES":
                feeds[spec.name] = np.full(shape, "", dtype=object)
            elif warmup.kind == "random" and dt.name not in ("BOOL",):
                assert dt.numpy is not None
                feeds[spec.name] = (rng.random(shape) * 4).astype(dt.numpy)
            else:
                assert dt.numpy is not None
                feeds[spec.name] = np.zeros(shape, dtype=dt.numpy)
        return feeds

    async def retire(self, *, poll_s: float = 0.01) -> None:
        """Wait until no request runs on this version, then release its threads."""
        while self.inflight:
            await asyncio.sleep(poll_s)
        self.close()

    def close(self) -> None:
        self.batcher.close()
        self._executor.shutdown()
