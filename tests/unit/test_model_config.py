"""Model config validation (key paths in every error) and completion from the graph."""

from __future__ import annotations

import math

import pytest

from mlserve.errors import ConfigError
from mlserve.runtime import model_config
from mlserve.runtime.model_config import (
    DEFAULT_MAX_BATCH_SIZE,
    DynamicBatching,
    GraphTensor,
    ModelConfig,
    SessionSettings,
    TensorSpec,
    VersionPolicy,
    complete,
    parse_model_config,
)
from mlserve.runtime.model_version import (
    AUTO_INLINE_LIMIT_S,
    batcher_settings,
    inline_limit,
    pad_sizes,
)


def test_empty_config_is_valid() -> None:
    config = parse_model_config(None, name="m")
    assert config == ModelConfig(name="m")


def test_full_config() -> None:
    config = parse_model_config(
        {
            "max_batch_size": 16,
            "inputs": [{"name": "x", "datatype": "fp32", "dims": [3, -1]}],
            "version_policy": {"specific": {"versions": [1, 3]}},
            "instance_count": 2,
            "device": "cuda:1",
            "session": {
                "intra_op_threads": 2,
                "execution_mode": "parallel",
                "allow_spinning": False,
                "graph_optimization_level": "basic",
            },
            "warmup": {"kind": "random", "batch_size": 4},
            "sha256": {"1": "A" * 64},
            "dynamic_batching": {
                "max_queue_delay_us": 100,
                "preferred_batch_size": [4, 8],
                "priority_levels": 2,
                "default_priority_level": 1,
            },
        },
        name="m",
    )
    assert config.inputs == (TensorSpec("x", "FP32", (3, -1)),)
    assert config.version_policy.select([1, 2, 3, 4]) == [1, 3]
    assert config.expected_sha256(1) == "a" * 64 and config.expected_sha256(2) is None
    assert config.session.execution_mode == "parallel"
    assert config.session.allow_spinning is False
    assert ModelConfig(name="m").session.allow_spinning is True  # onnxruntime's default
    assert config.dynamic_batching is not None
    assert config.dynamic_batching.preferred_batch_size == (4, 8)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"max_batch_size": -1}, "max_batch_size: must be >= 0, got -1"),
        ({"max_batch_size": "8"}, "max_batch_size: must be an integer"),
        ({"inputs": [{"datatype": "FP32"}]}, "inputs[0].name: is required"),
        ({"inputs": [{"name": "x", "datatype": "FLOAT"}]}, "inputs[0].datatype: unknown datatype"),
        ({"inputs": [{"name": "x", "dims": [2, -3]}]}, "inputs[0].dims[1]: must be >= -1"),
        (
            {"version_policy": {"latest": {"num_versions": 0}}},
            "version_policy.latest.num_versions: must be >= 1",
        ),
        ({"version_policy": {"newest": {}}}, "version_policy: must have exactly one of"),
        ({"device": "gpu"}, "device: must be 'cpu' or 'cuda:N'"),
        ({"session": {"threads": 2}}, "session.threads: unknown key"),
        ({"warmup": {"kind": "file"}}, "warmup.file: is required when kind is 'file'"),
        ({"sha256": "abc"}, "sha256: must be 64 hexadecimal characters"),
        (
            {"dynamic_batching": {"priority_levels": 2, "default_priority_level": 3}},
            "dynamic_batching.default_priority_level: must be in [1, priority_levels=2]",
        ),
        ({"max_batch_size": 0, "dynamic_batching": {}}, "dynamic_batching: needs max_batch_size"),
        ({"name": "other"}, "name: is 'other' but the model folder is 'm'"),
        ({"max_batch_sise": 4}, "max_batch_sise: unknown key"),
        ({"execution": "loop"}, "execution: must be one of auto, inline, threads"),
        (
            {"execution": "inline", "instance_count": 2},
            "execution: 'inline' runs batches on the event loop thread: it needs device 'cpu' "
            "and instance_count 1",
        ),
        ({"execution": "inline", "device": "cuda:0"}, "execution: 'inline' runs batches"),
        (
            {"dynamic_batching": {"allowed_batch_sizes": [8, 4]}},
            "dynamic_batching.allowed_batch_sizes: must be a list of increasing sizes",
        ),
        (
            {"dynamic_batching": {"allowed_batch_sizes": [0, 4]}},
            "dynamic_batching.allowed_batch_sizes[0]: must be >= 1",
        ),
        (
            {"session": {"cudnn_conv_algo_search": "fast"}},
            "session.cudnn_conv_algo_search: must be one of exhaustive, heuristic, default",
        ),
        ([1, 2], "must be a mapping"),
        (
            {"dynamic_batching": {"max_queue_delay_us": 5, "max_queue_delay_microseconds": 5}},
            "dynamic_batching.max_queue_delay_microseconds: is max_queue_delay_us spelled "
            "Triton's way: set one",
        ),
        (
            {"dynamic_batching": {"default_queue_policy": {"timeout_action": "DELAY"}}},
            "dynamic_batching.default_queue_policy.timeout_action: only REJECT is supported",
        ),
        (
            {"dynamic_batching": {"default_queue_policy": {"allow_timeout_override": False}}},
            "dynamic_batching.default_queue_policy.allow_timeout_override: only true",
        ),
        (
            {"dynamic_batching": {"default_queue_policy": {"max_queue_sise": 4}}},
            "dynamic_batching.default_queue_policy.max_queue_sise: unknown key",
        ),
        (
            {"dynamic_batching": {"default_queue_policy": {}, "max_queue_size": 4}},
            "dynamic_batching.max_queue_size: set the queue policy in default_queue_policy",
        ),
        (
            {"dynamic_batching": {"priority_queue_policy": {1: {"max_queue_size": 4}}}},
            "dynamic_batching.priority_queue_policy: per-level queue policies are not supported",
        ),
    ],
)
def test_invalid_configs_name_the_key_path(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_model_config(data, name="m")
    assert message in info.value.message


def test_tritons_spellings_of_the_batching_settings() -> None:
    """A dynamic_batching section copied from Triton's config.pbtxt (as YAML)
    means what it means there."""
    ours = parse_model_config(
        {
            "dynamic_batching": {
                "max_queue_delay_us": 500,
                "max_queue_size": 32,
                "default_queue_timeout_us": 2000,
            }
        },
        name="m",
    )
    tritons = parse_model_config(
        {
            "dynamic_batching": {
                "max_queue_delay_microseconds": 500,
                "default_queue_policy": {
                    "max_queue_size": 32,
                    "default_timeout_microseconds": 2000,
                    "timeout_action": "REJECT",
                    "allow_timeout_override": True,
                },
            }
        },
        name="m",
    )
    assert tritons == ours
    assert ours.dynamic_batching == DynamicBatching(
        max_queue_delay_us=500, max_queue_size=32, default_queue_timeout_us=2000
    )


@pytest.mark.parametrize(
    ("group", "count", "device"),
    [
        ({"count": 2, "kind": "KIND_CPU"}, 2, "cpu"),
        ({"kind": "KIND_GPU", "gpus": [1]}, 1, "cuda:1"),
        ({"count": 3, "kind": "KIND_GPU"}, 3, "cuda:0"),
        ({"gpus": [2]}, 1, "cuda:2"),  # KIND_AUTO naming a GPU
    ],
)
def test_tritons_instance_group(group: dict[str, object], count: int, device: str) -> None:
    config = parse_model_config({"instance_group": [group]}, name="m")
    assert (config.instance_count, config.device) == (count, device)


@pytest.mark.parametrize(("gpu", "device"), [(False, "cpu"), (True, "cuda:0")])
def test_instance_group_kind_auto_runs_on_a_gpu_where_there_is_one(
    monkeypatch: pytest.MonkeyPatch, gpu: bool, device: str
) -> None:
    monkeypatch.setattr(model_config, "_gpu_available", lambda: gpu)
    config = parse_model_config({"instance_group": [{"count": 2}]}, name="m")
    assert (config.instance_count, config.device) == (2, device)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"instance_group": [{"kind": "KIND_CPU"}, {"kind": "KIND_GPU"}]},
            "instance_group: one group is supported",
        ),
        (
            {"instance_group": [{"kind": "KIND_GPU", "gpus": [0, 1]}]},
            "instance_group[0].gpus: one GPU per model is supported, got [0, 1]",
        ),
        (
            {"instance_group": [{"kind": "KIND_CPU", "gpus": [0]}]},
            "instance_group[0].gpus: names GPUs for kind KIND_CPU",
        ),
        (
            {"instance_group": [{"kind": "KIND_MODEL"}]},
            "instance_group[0].kind: must be one of KIND_AUTO, KIND_CPU, KIND_GPU",
        ),
        (
            {"instance_group": [{"count": 1, "profile": ["a"]}]},
            "instance_group[0].profile: unknown key",
        ),
        (
            {"instance_group": [{"count": 2}], "instance_count": 2},
            "instance_count: set instances in instance_group or here, not both",
        ),
    ],
)
def test_instance_group_refusals_name_the_key(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_model_config(data, name="m")
    assert message in info.value.message


def test_version_policies() -> None:
    assert VersionPolicy().select([3, 1, 2]) == [3]
    assert VersionPolicy("latest", num_versions=2).select([3, 1, 2]) == [2, 3]
    assert VersionPolicy("all").select([2, 1]) == [1, 2]
    assert VersionPolicy("specific", versions=(5,)).select([1, 2]) == []


BATCHED = [GraphTensor("x", "FP32", (None, 64))], [GraphTensor("y", "FP32", (None, 10))]


def test_complete_from_graph_batching() -> None:
    config = complete(ModelConfig(name="m"), *BATCHED)
    assert config.max_batch_size == DEFAULT_MAX_BATCH_SIZE
    assert config.inputs == (TensorSpec("x", "FP32", (64,)),)
    assert config.outputs == (TensorSpec("y", "FP32", (10,)),)


def test_complete_fixed_first_dimension_does_not_batch() -> None:
    config = complete(
        ModelConfig(name="m"),
        [GraphTensor("x", "INT64", (1, None))],
        [GraphTensor("y", "INT64", (1, None))],
    )
    assert config.max_batch_size == 0
    assert config.inputs == (TensorSpec("x", "INT64", (1, -1)),)


def test_complete_checks_declared_tensors() -> None:
    declared = ModelConfig(name="m", inputs=(TensorSpec("x", "FP16", (64,)),))
    with pytest.raises(ConfigError, match=r"inputs\[0\].datatype: is FP16 but the graph says FP32"):
        complete(declared, *BATCHED)
    declared = ModelConfig(name="m", inputs=(TensorSpec("x", "", (32,)),))
    with pytest.raises(ConfigError, match=r"inputs\[0\].dims: are \[32\] but the graph says"):
        complete(declared, *BATCHED)
    declared = ModelConfig(name="m", inputs=(TensorSpec("z", "", (-2,)),))
    with pytest.raises(ConfigError, match="'z' is not in the graph"):
        complete(declared, *BATCHED)
    with pytest.raises(ConfigError, match="cannot batch"):
        complete(
            ModelConfig(name="m", max_batch_size=4),
            [GraphTensor("x", "FP32", (2, 3))],
            [GraphTensor("y", "FP32", (2, 3))],
        )


def test_bf16_io_is_refused_with_a_reason() -> None:
    with pytest.raises(ConfigError, match="BF16"):
        complete(
            ModelConfig(name="m"),
            [GraphTensor("x", "BF16", (None, 4))],
            [GraphTensor("y", "BF16", (None, 4))],
        )


BATCHING: dict[str, object] = {"max_batch_size": 8, "dynamic_batching": {}}


@pytest.mark.parametrize(
    ("data", "cores", "limit"),
    [
        (BATCHING, 1, AUTO_INLINE_LIMIT_S),  # auto, one core: short batches inline
        (BATCHING | {"instance_count": 2}, 1, 0.0),
        (BATCHING | {"device": "cuda:0"}, 1, 0.0),  # a GPU run is waiting, not computing
        (BATCHING | {"execution": "threads"}, 1, 0.0),
        (BATCHING, 2, AUTO_INLINE_LIMIT_S),  # intra-op threads default to one per core
        (BATCHING | {"session": {"intra_op_threads": 2}}, 2, AUTO_INLINE_LIMIT_S),
        (BATCHING | {"session": {"intra_op_threads": 1}}, 2, 0.0),  # a core for the thread
        (BATCHING | {"session": {"intra_op_threads": 1}}, 1, AUTO_INLINE_LIMIT_S),
        ({}, 1, AUTO_INLINE_LIMIT_S),  # batching off too
        ({"execution": "inline"}, 4, math.inf),
    ],
)
def test_where_batches_run(data: dict[str, object], cores: int, limit: float) -> None:
    """Where `auto` puts a model's batches: inline only for one CPU instance
    whose intra-op threads cover every core the process may use."""
    config = parse_model_config(data, name="m")
    assert inline_limit(config, cores) == limit
    assert batcher_settings(config, cores).inline_limit_s == limit


@pytest.mark.parametrize(
    ("data", "sizes"),
    [
        ({"max_batch_size": 48, "dynamic_batching": {}}, ()),  # CPU: no padding
        (
            {"max_batch_size": 48, "device": "cuda:0", "dynamic_batching": {}},
            (1, 2, 4, 8, 16, 32, 48),
        ),
        ({"max_batch_size": 1, "device": "cuda:0", "dynamic_batching": {}}, (1,)),
        ({"max_batch_size": 48, "device": "cuda:0"}, ()),  # batching off: shapes as sent
        (
            {
                "max_batch_size": 16,
                "device": "cuda:0",
                "dynamic_batching": {"allowed_batch_sizes": [4, 16]},
            },
            (4, 16),
        ),
        ({"max_batch_size": 16, "dynamic_batching": {"allowed_batch_sizes": [8, 16]}}, (8, 16)),
        (
            {
                "max_batch_size": 16,
                "device": "cuda:0",
                "dynamic_batching": {"allowed_batch_sizes": []},
            },
            (),  # [] = never pad
        ),
    ],
)
def test_batches_pad_to_allowed_sizes(data: dict[str, object], sizes: tuple[int, ...]) -> None:
    """GPU models pad batches to powers of two by default (each shape is tuned
    once, at load); CPU models only where allowed_batch_sizes asks."""
    config = complete(parse_model_config(data, name="m"), *BATCHED)
    assert pad_sizes(config) == sizes
    assert batcher_settings(config, 2).pad_sizes == sizes


def test_allowed_batch_sizes_must_end_at_max_batch_size() -> None:
    data = {"max_batch_size": 16, "dynamic_batching": {"allowed_batch_sizes": [4, 8]}}
    with pytest.raises(ConfigError, match=r"must end with max_batch_size \(16\)"):
        complete(parse_model_config(data, name="m"), *BATCHED)


def test_cudnn_search_reaches_the_cuda_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA provider's options as built (CUDA itself runs on the GPU
    machine: tests/integration/test_gpu.py); here a CPU build is told it has
    the provider, since the list is built before onnxruntime loads it."""
    from mlserve.runtime import onnx_session

    monkeypatch.setattr(
        onnx_session.ort, "get_available_providers", lambda: ["CUDAExecutionProvider"]
    )
    providers = onnx_session.providers_for(
        "cuda:0", SessionSettings(cudnn_conv_algo_search="heuristic")
    )
    assert providers[0] == (
        "CUDAExecutionProvider",
        {"device_id": "0", "cudnn_conv_algo_search": "HEURISTIC"},
    )
    default = onnx_session.providers_for("cuda:1")
    assert default[0] == (
        "CUDAExecutionProvider",
        {"device_id": "1", "cudnn_conv_algo_search": "EXHAUSTIVE"},
    )


def test_allow_spinning_reaches_onnxruntime() -> None:
    from mlserve.runtime.onnx_session import session_options

    entry = "session.intra_op.allow_spinning"
    off = session_options(SessionSettings(allow_spinning=False))
    assert off.get_session_config_entry(entry) == "0"
    with pytest.raises(RuntimeError, match="does not have configuration"):
        session_options(SessionSettings()).get_session_config_entry(entry)  # default: unset
