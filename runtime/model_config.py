"""A model's configuration: the typed form of `<model>/config.yaml`.

Loaded and validated once when the model loads; every error names the key path.
Anything the file leaves out (inputs, outputs, max_batch_size) is completed
from the ONNX graph by `complete()`, as Triton's auto-complete does for
onnxruntime models."""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mlserve.config_section import Section, check_int
from mlserve.errors import ConfigError
from mlserve.runtime import datatypes

PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"
DEFAULT_MAX_BATCH_SIZE = 64
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DEVICE = re.compile(r"^(cpu|cuda:\d+)$")


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """An input or output: dims exclude the batch dimension when batching."""

    name: str
    datatype: str
    dims: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    """Which numeric version folders are served (Triton's semantics)."""

    kind: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of those on disk, ascending."""
        ordered = sorted(available)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[-self.num_versions :]


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """onnxruntime SessionOptions we expose; 0 threads = onnxruntime's default."""

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    # onnxruntime's intra-op threads spin between runs (its default); off, they
    # sleep, and leave the cores to the event loop and to other processes.
    allow_spinning: bool = True
    # CUDA only: how cuDNN picks a convolution algorithm for each new input
    # shape. "exhaustive" (onnxruntime's default) times every candidate, which
    # can take a second per shape on a deep network; "heuristic" asks cuDNN.
    cudnn_conv_algo_search: Literal["exhaustive", "heuristic", "default"] = "exhaustive"


@dataclass(frozen=True, slots=True)
class Warmup:
    """How a freshly loaded model is smoke-tested before it turns ready."""

    kind: Literal["zeros", "random", "file", "none"] = "zeros"
    batch_size: int = 1
    count: int = 1
    file: str | None = None  # .npz with one array per input name


@dataclass(frozen=True, slots=True)
class DynamicBatching:
    """Triton's dynamic_batching section (the batcher's settings)."""

    max_queue_delay_us: int = 0
    preferred_batch_size: tuple[int, ...] = ()
    max_queue_size: int = 0
    default_queue_timeout_us: int = 0
    priority_levels: int = 0
    default_priority_level: int = 0
    preserve_ordering: bool = False
    max_latency_ms: float = 0.0
    # TF Serving's allowed_batch_sizes: batches are padded up to the next of
    # these sizes (the last must be max_batch_size; [] = never pad). None = the
    # device's default: none on the CPU; on a GPU powers of two up to
    # max_batch_size, so that kernels tuned per input shape are tuned at load.
    allowed_batch_sizes: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Everything the server knows about how to serve one model."""

    name: str
    max_batch_size: int | None = None  # None = not set: complete() decides
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    instance_count: int = 1
    device: str = "cpu"
    session: SessionSettings = field(default_factory=SessionSettings)
    warmup: Warmup = field(default_factory=Warmup)
    sha256: dict[int, str] | str | None = None
    dynamic_batching: DynamicBatching | None = None
    default_model_filename: str = "model.onnx"
    # Where batches run: on the instance threads, on the event loop thread
    # ("inline"), or "auto" (inline for short batches of a single-instance CPU
    # model in a process that may use one core; see batching/batcher.py).
    execution: Literal["auto", "inline", "threads"] = "auto"
    # The `rollout:` section as written: the router owns and validates it
    # (mlserve.router.plan); the runtime only carries it.
    rollout: Mapping[str, Any] | None = None

    @property
    def batching(self) -> bool:
        return bool(self.max_batch_size)

    def expected_sha256(self, version: int) -> str | None:
        if isinstance(self.sha256, dict):
            return self.sha256.get(version)
        return self.sha256


def _tensor(item: object, path: str) -> TensorSpec:
    section = Section(item, path)
    name = section.string("name")
    datatype = section.string("datatype", "").upper() or None
    if datatype is not None and datatype not in datatypes.BY_NAME:
        raise ConfigError(
            section.child_path("datatype"),
            f"unknown datatype {datatype!r}; expected one of {', '.join(datatypes.NAMES)}",
        )
    dims_raw = section.raw("dims", None)
    dims: tuple[int, ...] = ()
    if dims_raw is not None:
        if not isinstance(dims_raw, list):
            raise ConfigError(section.child_path("dims"), "must be a list of integers")
        dims = tuple(
            check_int(d, f"{section.child_path('dims')}[{i}]", minimum=-1)
            for i, d in enumerate(dims_raw)
        )
    section.reject_unknown()
    return TensorSpec(
        name=name, datatype=datatype or "", dims=dims if dims_raw is not None else (-2,)
    )


def _version_policy(section: Section | None) -> VersionPolicy:
    if section is None:
        return VersionPolicy()
    kinds = section.keys()
    if len(kinds) != 1 or kinds[0] not in ("latest", "all", "specific"):
        raise ConfigError(section.path, "must have exactly one of: latest, all, specific")
    kind = kinds[0]
    inner = section.section(kind)
    policy: VersionPolicy
    if kind == "latest":
        policy = VersionPolicy("latest", num_versions=inner.integer("num_versions", 1, minimum=1))
    elif kind == "all":
        policy = VersionPolicy("all")
    else:
        versions = inner.items("versions", lambda v, p: check_int(v, p, minimum=1))
        if not versions:
            raise ConfigError(inner.child_path("versions"), "must list at least one version")
        policy = VersionPolicy("specific", versions=tuple(versions))
    inner.reject_unknown()
    return policy


def _session(section: Section | None) -> SessionSettings:
    if section is None:
        return SessionSettings()
    settings = SessionSettings(
        intra_op_threads=section.integer("intra_op_threads", 0, minimum=0),
        inter_op_threads=section.integer("inter_op_threads", 0, minimum=0),
        graph_optimization_level=section.choice(  # type: ignore[arg-type]
            "graph_optimization_level", ("disable", "basic", "extended", "all"), "all"
        ),
        execution_mode=section.choice(  # type: ignore[arg-type]
            "execution_mode", ("sequential", "parallel"), "sequential"
        ),
        allow_spinning=section.boolean("allow_spinning", True),
        cudnn_conv_algo_search=section.choice(  # type: ignore[arg-type]
            "cudnn_conv_algo_search", ("exhaustive", "heuristic", "default"), "exhaustive"
        ),
    )
    section.reject_unknown()
    return settings


def _warmup(section: Section | None) -> Warmup:
    if section is None:
        return Warmup()
    kind = section.choice("kind", ("zeros", "random", "file", "none"), "zeros")
    warmup = Warmup(
        kind=kind,  # type: ignore[arg-type]
        batch_size=section.integer("batch_size", 1, minimum=1),
        count=section.integer("count", 1, minimum=1),
        file=section.optional_string("file"),
    )
    if kind == "file" and not warmup.file:
        raise ConfigError(section.child_path("file"), "is required when kind is 'file'")
    section.reject_unknown()
    return warmup


def _dynamic_batching(section: Section | None) -> DynamicBatching | None:
    if section is None:
        return None
    preferred = section.items("preferred_batch_size", lambda v, p: check_int(v, p, minimum=1))
    levels = section.integer("priority_levels", 0, minimum=0)
    default_level = section.integer("default_priority_level", 0, minimum=0)
    if levels and not 1 <= default_level <= levels:
        raise ConfigError(
            section.child_path("default_priority_level"),
            f"must be in [1, priority_levels={levels}], got {default_level}",
        )
    allowed: tuple[int, ...] | None = None
    if section.raw("allowed_batch_sizes", None) is not None:
        allowed = tuple(
            section.items("allowed_batch_sizes", lambda v, p: check_int(v, p, minimum=1))
        )
        if any(a >= b for a, b in itertools.pairwise(allowed)):
            raise ConfigError(
                section.child_path("allowed_batch_sizes"),
                f"must be a list of increasing sizes, got {list(allowed)}",
            )
    max_queue_size, queue_timeout_us = _queue_policy(section)
    batching = DynamicBatching(
        max_queue_delay_us=_spelled_either_way(
            section, "max_queue_delay_us", "max_queue_delay_microseconds"
        ),
        preferred_batch_size=tuple(preferred),
        max_queue_size=max_queue_size,
        default_queue_timeout_us=queue_timeout_us,
        priority_levels=levels,
        default_priority_level=default_level,
        preserve_ordering=section.boolean("preserve_ordering", False),
        max_latency_ms=section.number("max_latency_ms", 0.0),
        allowed_batch_sizes=allowed,
    )
    section.reject_unknown()
    return batching


MAX_INSTANCES = 64


def _instances(section: Section) -> tuple[int, str]:
    """(instance_count, device): ours, or Triton's `instance_group` with one
    group (`count`, `kind`, `gpus` with at most one GPU)."""
    if not section.has("instance_group"):
        device = section.string("device", "cpu")
        if not _DEVICE.match(device):
            raise ConfigError(
                section.child_path("device"), f"must be 'cpu' or 'cuda:N', got {device!r}"
            )
        return section.integer("instance_count", 1, minimum=1, maximum=MAX_INSTANCES), device
    path = section.child_path("instance_group")
    for ours in ("instance_count", "device"):
        if section.has(ours):
            raise ConfigError(
                section.child_path(ours), "set instances in instance_group or here, not both"
            )
    groups = section.raw("instance_group")
    if not isinstance(groups, list) or len(groups) != 1:
        raise ConfigError(
            path, f"one group is supported (every instance on one device), got {groups!r}"
        )
    group = Section(groups[0], f"{path}[0]")
    count = group.integer("count", 1, minimum=1, maximum=MAX_INSTANCES)
    kind = group.choice("kind", ("KIND_AUTO", "KIND_CPU", "KIND_GPU"), "KIND_AUTO")
    gpus = group.items("gpus", lambda v, p: check_int(v, p, minimum=0))
    group.reject_unknown()
    if len(gpus) > 1:
        raise ConfigError(group.child_path("gpus"), f"one GPU per model is supported, got {gpus}")
    if kind == "KIND_CPU" and gpus:
        raise ConfigError(group.child_path("gpus"), "names GPUs for kind KIND_CPU")
    if kind == "KIND_AUTO" and not gpus:
        kind = "KIND_GPU" if _gpu_available() else "KIND_CPU"
    return count, "cpu" if kind == "KIND_CPU" else f"cuda:{gpus[0] if gpus else 0}"


def _gpu_available() -> bool:
    """What Triton's KIND_AUTO asks (onnx_session answers: it alone imports
    onnxruntime, and imports this module, hence the late import)."""
    from mlserve.runtime.onnx_session import cuda_available

    return cuda_available()


def _spelled_either_way(section: Section, ours: str, tritons: str) -> int:
    """A setting that a config copied from Triton's config.pbtxt spells its way."""
    if section.has(ours) and section.has(tritons):
        raise ConfigError(section.child_path(tritons), f"is {ours} spelled Triton's way: set one")
    return section.integer(tritons if section.has(tritons) else ours, 0, minimum=0)


def _queue_policy(section: Section) -> tuple[int, int]:
    """(max_queue_size, default_queue_timeout_us): beside the other settings,
    or in Triton's `default_queue_policy`, which holds the parts we support
    (one policy for every priority level; an expired request is refused)."""
    if section.has("priority_queue_policy"):
        raise ConfigError(
            section.child_path("priority_queue_policy"),
            "per-level queue policies are not supported: one queue policy applies "
            "to every priority level",
        )
    policy = section.optional_section("default_queue_policy")
    if policy is None:
        return (
            section.integer("max_queue_size", 0, minimum=0),
            section.integer("default_queue_timeout_us", 0, minimum=0),
        )
    for flat in ("max_queue_size", "default_queue_timeout_us"):
        if section.has(flat):
            raise ConfigError(
                section.child_path(flat),
                "set the queue policy in default_queue_policy or here, not both",
            )
    if policy.string("timeout_action", "REJECT") != "REJECT":
        raise ConfigError(
            policy.child_path("timeout_action"),
            "only REJECT is supported: a request past its timeout is answered "
            "DEADLINE_EXCEEDED / 504, never served late (DELAY)",
        )
    if not policy.boolean("allow_timeout_override", True):
        raise ConfigError(
            policy.child_path("allow_timeout_override"),
            "only true is supported: a request's own timeout always applies",
        )
    limits = (
        policy.integer("max_queue_size", 0, minimum=0),
        policy.integer("default_timeout_microseconds", 0, minimum=0),
    )
    policy.reject_unknown()
    return limits


def _sha256(value: object, path: str) -> dict[int, str] | str | None:
    if value is None:
        return None
    if isinstance(value, str):
        if not _SHA256.match(value.lower()):
            raise ConfigError(path, "must be 64 hexadecimal characters")
        return value.lower()
    if isinstance(value, dict):
        out: dict[int, str] = {}
        for key, digest in value.items():
            version = int(key) if isinstance(key, (int, str)) and str(key).isdigit() else None
            if version is None:
                raise ConfigError(f"{path}.{key}", "keys must be version numbers")
            out[version] = str(_sha256(digest, f"{path}.{key}"))
        return out
    raise ConfigError(path, "must be a hex digest or a mapping of version to digest")


def _rollout(value: object, path: str) -> Mapping[str, Any] | None:
    if value is not None and not isinstance(value, Mapping):
        raise ConfigError(path, f"must be a mapping, got {type(value).__name__}")
    return value


def parse_model_config(data: object, *, name: str, path: str = "") -> ModelConfig:
    """Validate a config.yaml mapping; `path` prefixes every error's key path."""
    section = Section(data, path)
    declared_name = section.string("name", name)
    if declared_name != name:
        raise ConfigError(
            section.child_path("name"),
            f"is {declared_name!r} but the model folder is {name!r}; they must match",
        )
    platform = section.string("platform", PLATFORM)
    if platform not in (PLATFORM, "onnx_onnxv1"):
        raise ConfigError(section.child_path("platform"), f"only {PLATFORM} is served")
    section.string("backend", BACKEND)
    max_batch_size = section.raw("max_batch_size", None)
    if max_batch_size is not None:
        max_batch_size = check_int(max_batch_size, section.child_path("max_batch_size"), minimum=0)
    instance_count, device = _instances(section)
    execution = section.choice("execution", ("auto", "inline", "threads"), "auto")
    filename = section.string("default_model_filename", "model.onnx")
    if "/" in filename or filename in ("", ".", ".."):
        raise ConfigError(section.child_path("default_model_filename"), "must be a plain file name")
    config = ModelConfig(
        name=name,
        max_batch_size=max_batch_size,
        inputs=tuple(section.items("inputs", _tensor)),
        outputs=tuple(section.items("outputs", _tensor)),
        version_policy=_version_policy(section.optional_section("version_policy")),
        instance_count=instance_count,
        device=device,
        session=_session(section.optional_section("session")),
        warmup=_warmup(section.optional_section("warmup")),
        sha256=_sha256(section.raw("sha256", None), section.child_path("sha256")),
        dynamic_batching=_dynamic_batching(section.optional_section("dynamic_batching")),
        default_model_filename=filename,
        execution=execution,  # type: ignore[arg-type]
        rollout=_rollout(section.raw("rollout", None), section.child_path("rollout")),
    )
    section.reject_unknown()
    if execution == "inline" and (device != "cpu" or config.instance_count != 1):
        raise ConfigError(
            section.child_path("execution"),
            "'inline' runs batches on the event loop thread: it needs device 'cpu' and "
            f"instance_count 1 (got device {device!r}, instance_count {config.instance_count})",
        )
    if config.dynamic_batching and config.max_batch_size == 0:
        raise ConfigError(
            section.child_path("dynamic_batching"), "needs max_batch_size > 0 to batch"
        )
    return config


@dataclass(frozen=True, slots=True)
class GraphTensor:
    """An input or output as the ONNX graph declares it (None = symbolic dim)."""

    name: str
    datatype: str
    shape: tuple[int | None, ...]


def complete(
    config: ModelConfig, graph_inputs: list[GraphTensor], graph_outputs: list[GraphTensor]
) -> ModelConfig:
    """Fill what config.yaml left out from the graph, and check what it declared.

    A model batches when every input's and output's first dimension is
    symbolic; its max_batch_size then defaults to DEFAULT_MAX_BATCH_SIZE."""
    batchable = all(t.shape and t.shape[0] is None for t in graph_inputs + graph_outputs)
    max_batch_size = config.max_batch_size
    if max_batch_size is None:
        max_batch_size = DEFAULT_MAX_BATCH_SIZE if batchable else 0
    elif max_batch_size > 0 and not batchable:
        raise ConfigError(
            "max_batch_size",
            f"is {max_batch_size} but the model's first dimension is not variable in every "
            "input and output, so it cannot batch; set max_batch_size: 0",
        )
    allowed = config.dynamic_batching and config.dynamic_batching.allowed_batch_sizes
    if allowed and allowed[-1] != max_batch_size:
        raise ConfigError(
            "dynamic_batching.allowed_batch_sizes",
            f"must end with max_batch_size ({max_batch_size}), so that every batch has a "
            f"size to pad up to; got {list(allowed)}",
        )
    for graph in graph_inputs + graph_outputs:
        if graph.datatype == "BF16":
            raise ConfigError(
                "inputs" if graph in graph_inputs else "outputs",
                f"tensor {graph.name!r} is BF16, which onnxruntime's Python API cannot "
                "feed or fetch; export the model with FP16 or FP32 I/O",
            )
    inputs = _complete_tensors("inputs", config.inputs, graph_inputs, max_batch_size)
    outputs = _complete_tensors("outputs", config.outputs, graph_outputs, max_batch_size)
    return dataclasses.replace(
        config, max_batch_size=max_batch_size, inputs=inputs, outputs=outputs
    )


def _complete_tensors(
    key: str, declared: tuple[TensorSpec, ...], graph: list[GraphTensor], max_batch_size: int
) -> tuple[TensorSpec, ...]:
    by_name = {t.name: t for t in graph}
    skip = 1 if max_batch_size > 0 else 0
    if not declared:
        return tuple(
            TensorSpec(t.name, t.datatype, tuple(-1 if d is None else d for d in t.shape[skip:]))
            for t in graph
        )
    if key == "inputs" and len(declared) != len(graph):
        missing = sorted(set(by_name) - {t.name for t in declared})
        raise ConfigError(key, f"must declare every graph input; missing {missing}")
    out = []
    for index, spec in enumerate(declared):
        path = f"{key}[{index}]"
        if spec.name not in by_name:
            raise ConfigError(
                f"{path}.name", f"{spec.name!r} is not in the graph; it has {sorted(by_name)}"
            )
        g = by_name[spec.name]
        if spec.datatype and spec.datatype != g.datatype:
            raise ConfigError(
                f"{path}.datatype", f"is {spec.datatype} but the graph says {g.datatype}"
            )
        graph_dims = tuple(-1 if d is None else d for d in g.shape[skip:])
        dims = graph_dims if spec.dims == (-2,) else spec.dims
        if len(dims) != len(graph_dims) or any(
            gd not in (-1, d) for d, gd in zip(dims, graph_dims, strict=True)
        ):
            raise ConfigError(
                f"{path}.dims",
                f"are {list(dims)} but the graph says {list(graph_dims)}"
                + (" (batch dimension excluded)" if skip else ""),
            )
        out.append(TensorSpec(spec.name, g.datatype, dims))
    return tuple(out)
