"""The model repository and helpers that the batching and queueing tests
share (tests/integration/test_batching.py, test_queueing.py; their server
fixtures are in tests/integration/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from mlserve import examples
from tests.conftest import (
    ServerProcess,
    metric,
)

# The "slow" models are held busy by the tests' gate (tests/gate.py), not by
# their size: a run waits at the gate until the test has set the scene and
# opens it, however slow the machine. Gated models run their batches on
# instance threads (`execution: threads`): a run held on the event loop
# thread would stop the server reading the requests the test then sends.
SLOW_CONFIG = """
max_batch_size: 512
warmup: {kind: none}
execution: threads
dynamic_batching:
  max_queue_size: 1
"""
# Two priority levels, unmarked requests at the lower one (2). A 512-row
# request fills a batch by itself, so each queued request runs alone.
SLOW_PRIORITY_CONFIG = """
max_batch_size: 512
warmup: {kind: none}
execution: threads
dynamic_batching:
  priority_levels: 2
  default_priority_level: 2
"""
# Two instances: a short request sent after a long one runs beside it and is
# done first; with preserve_ordering its answer still waits for the long one.
SLOW_TWO_INSTANCES_CONFIG = """
max_batch_size: 512
warmup: {kind: none}
instance_count: 2
dynamic_batching:
  preserve_ordering: %s
"""
SLOW_ALONE_CONFIG = """
max_batch_size: 512
warmup: {kind: none}
execution: threads
"""
# Concurrent requests to these queue behind runs held at the gate, then share
# batches: on instance threads, one or two of them.
GATED_BATCHING_CONFIGS = {
    "mlp_threads": "max_batch_size: 32\nexecution: threads\ndynamic_batching:\n"
    "  max_queue_delay_us: 2000\n",
    "mlp_padded": "max_batch_size: 32\nexecution: threads\ndynamic_batching:\n"
    "  max_queue_delay_us: 2000\n  allowed_batch_sizes: [4, 16, 32]\n",
}


def _ragged_identity_model() -> bytes:
    """y = x with a symbolic second dimension, so requests of different
    widths are all valid and only those of one width may share a batch."""
    from onnx import TensorProto, helper

    shape = ["batch", "width"]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "ragged",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def write_batching_repository(root: Path) -> Path:
    """The models the batching and queueing tests share, under `root`."""
    examples.write_model(
        root,
        "mlp_batched",
        examples.mlp_model(),
        config="max_batch_size: 32\ndynamic_batching:\n  max_queue_delay_us: 2000\n",
    )
    examples.write_model(
        root,
        "mlp_inline",  # batches run on the event loop thread
        examples.mlp_model(),
        config="max_batch_size: 32\nexecution: inline\ndynamic_batching:\n"
        "  max_queue_delay_us: 2000\n",
    )
    for name, config in GATED_BATCHING_CONFIGS.items():  # mlp_padded: batches padded
        examples.write_model(root, name, examples.mlp_model(), config=config)  # to 4, 16, 32
    examples.write_model(
        root,
        "mlp_triton",  # dynamic_batching and instance_group as a config.pbtxt spells them
        # (a timeout of a minute: tests hold its requests at the gate)
        examples.mlp_model(),
        config="max_batch_size: 32\ninstance_group: [{count: 2, kind: KIND_CPU}]\n"
        "dynamic_batching:\n  max_queue_delay_microseconds: 2000\n"
        "  default_queue_policy: {max_queue_size: 64, default_timeout_microseconds: 60000000,"
        " timeout_action: REJECT, allow_timeout_override: true}\n",
    )
    # Held at the gate, not slow by themselves: two 512 x 512 layers.
    chain = examples.matmul_chain_model(512, 2)
    examples.write_model(root, "slow", chain, config=SLOW_CONFIG)
    examples.write_model(root, "slow_priority", chain, config=SLOW_PRIORITY_CONFIG)
    for ordered in (True, False):
        examples.write_model(
            root,
            "slow_ordered" if ordered else "slow_unordered",
            chain,
            config=SLOW_TWO_INSTANCES_CONFIG % str(ordered).lower(),
        )
    examples.write_model(root, "slow_alone", chain, config=SLOW_ALONE_CONFIG)  # batching off
    examples.write_model(root, "wide", examples.identity_model("FP32", (12_000,)))  # 48 KB rows
    examples.write_model(
        root,
        "ragged",  # y = x, FP32 [batch, width]: requests of different widths
        _ragged_identity_model(),
        config="max_batch_size: 32\nexecution: threads\ndynamic_batching:\n"
        "  max_queue_delay_us: 5000\n",
    )
    return root


def reference(batching_repo: Path, x: np.ndarray, model: str = "mlp_batched") -> np.ndarray:
    session = ort.InferenceSession(str(batching_repo / model / "1" / "model.onnx"))
    return session.run(None, {"x": x})[0]


def inflight(server: ServerProcess, model: str) -> float:
    return metric(server, "mlserve_inflight_requests", model=model)
