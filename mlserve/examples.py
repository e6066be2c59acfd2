"""Example ONNX models built with onnx.helper, and the example repository.

Used by the README's quick start (`python -m mlserve.examples DIR`), the tests
and the benchmarks, so that nothing is downloaded. Needs the `onnx` package
(installed with the `dev` extra); the server itself does not."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 17
# ONNX element type numbers for each V2 datatype (onnx.TensorProto values).
ONNX_TYPES = {
    "FP32": 1,
    "UINT8": 2,
    "INT8": 3,
    "UINT16": 4,
    "INT16": 5,
    "INT32": 6,
    "INT64": 7,
    "BYTES": 8,
    "BOOL": 9,
    "FP16": 10,
    "FP64": 11,
    "UINT32": 12,
    "UINT64": 13,
    "BF16": 16,
}


def _model(
    nodes: list[Any], inputs: list[Any], outputs: list[Any], initializers: list[Any] | None = None
) -> bytes:
    from onnx import checker, helper

    graph = helper.make_graph(nodes, "mlserve_example", inputs, outputs, initializers or [])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mlserve.examples"
    )
    model.ir_version = 8
    checker.check_model(model)
    return bytes(model.SerializeToString())


def _tensor(name: str, datatype: str, shape: list[Any]) -> Any:
    from onnx import helper

    return helper.make_tensor_value_info(name, ONNX_TYPES[datatype], shape)


def identity_model(
    datatype: str = "FP32", dims: tuple[int, ...] = (16,), *, batch: bool = True
) -> bytes:
    """y = x; `batch` makes the first dimension symbolic."""
    from onnx import helper

    shape: list[Any] = (["batch"] if batch else []) + list(dims)
    return _model(
        [helper.make_node("Identity", ["x"], ["y"])],
        [_tensor("x", datatype, shape)],
        [_tensor("y", datatype, shape)],
    )


def two_output_model() -> bytes:
    """x FP32 [-1, 4] -> plus_one = x + 1, twice = x * 2."""
    from onnx import helper, numpy_helper

    one = numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    return _model(
        [
            helper.make_node("Add", ["x", "one"], ["plus_one"]),
            helper.make_node("Mul", ["x", "two"], ["twice"]),
        ],
        [_tensor("x", "FP32", ["batch", 4])],
        [_tensor("plus_one", "FP32", ["batch", 4]), _tensor("twice", "FP32", ["batch", 4])],
        [one, two],
    )


def scaled_model(factor: float, dims: tuple[int, ...] = (4,)) -> bytes:
    """y = x * factor (FP32): versions of a model that answer distinguishably."""
    from onnx import helper, numpy_helper

    scale = numpy_helper.from_array(np.array(factor, dtype=np.float32), "factor")
    shape: list[Any] = ["batch", *dims]
    return _model(
        [helper.make_node("Mul", ["x", "factor"], ["y"])],
        [_tensor("x", "FP32", shape)],
        [_tensor("y", "FP32", shape)],
        [scale],
    )


def matmul_chain_model(width: int = 512, layers: int = 16, seed: int = 0) -> bytes:
    """FP32 [-1, width] through `layers` square MatMuls: a model that takes a
    predictable while (e.g. to keep a request in flight)."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current = "x"
    for index in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"m{index}"))
        out = "y" if index == layers - 1 else f"h{index}"
        nodes.append(helper.make_node("MatMul", [current, f"m{index}"], [out]))
        current = out
    return _model(
        nodes,
        [_tensor("x", "FP32", ["batch", width])],
        [_tensor("y", "FP32", ["batch", width])],
        inits,
    )


def mlp_model(sizes: tuple[int, ...] = (64, 256, 256, 10), seed: int = 0) -> bytes:
    """FP32 [-1, 64] -> 256 -> 256 -> 10 with ReLU between layers."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current = "x"
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        b = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{index}"), numpy_helper.from_array(b, f"b{index}")]
        out = "y" if index == len(sizes) - 2 else f"h{index}"
        gemm_out = out if out == "y" else f"g{index}"
        nodes.append(helper.make_node("Gemm", [current, f"w{index}", f"b{index}"], [gemm_out]))
        if out != "y":
            nodes.append(helper.make_node("Relu", [gemm_out], [out]))
        current = out
    return _model(
        nodes,
        [_tensor("x", "FP32", ["batch", sizes[0]])],
        [_tensor("y", "FP32", ["batch", sizes[-1]])],
        inits,
    )


def convnet_model(seed: int = 0) -> bytes:
    """FP32 [-1, 3, 32, 32]: conv 3->32, 32->64 (stride 2), 64->64 (stride 2), global
    average pool, 10 classes."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current = "x"
    for index, (cin, cout, stride) in enumerate(((3, 32, 1), (32, 64, 2), (64, 64, 2))):
        w = (rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"cw{index}"),
            numpy_helper.from_array(np.zeros(cout, np.float32), f"cb{index}"),
        ]
        nodes += [
            helper.make_node(
                "Conv",
                [current, f"cw{index}", f"cb{index}"],
                [f"c{index}"],
                pads=[1, 1, 1, 1],
                strides=[stride, stride],
            ),
            helper.make_node("Relu", [f"c{index}"], [f"r{index}"]),
        ]
        current = f"r{index}"
    w = (rng.standard_normal((64, 10)) / 8).astype(np.float32)
    inits += [
        numpy_helper.from_array(w, "fw"),
        numpy_helper.from_array(np.zeros(10, np.float32), "fb"),
    ]
    nodes += [
        helper.make_node("GlobalAveragePool", [current], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fw", "fb"], ["y"]),
    ]
    return _model(
        nodes,
        [_tensor("x", "FP32", ["batch", 3, 32, 32])],
        [_tensor("y", "FP32", ["batch", 10])],
        inits,
    )


def pool_model() -> bytes:
    """FP32 [-1, 3, 224, 224] -> [-1, 3]: global average pooling. An
    ImageNet-sized request (602 KB a row) with next to no compute: what
    moving a large tensor through the server costs."""
    from onnx import helper

    return _model(
        [
            helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["y"], axis=1),
        ],
        [_tensor("x", "FP32", ["batch", 3, 224, 224])],
        [_tensor("y", "FP32", ["batch", 3])],
    )


def resnet50_model(seed: int = 0) -> bytes:
    """ResNet-50 v1.5 shaped, FP32 [-1, 3, 224, 224] -> [-1, 1000]: the GPU
    benchmark's model (25.5M random weights, batch norms folded into the
    convolutions as a deployed graph has them). Residual branches are scaled
    down so that random weights keep the activations finite through 16 blocks."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes: list[Any] = []
    inits: list[Any] = []

    def conv(
        source: str, cin: int, cout: int, kernel: int, stride: int, *, relu: bool, gain: float = 1.0
    ) -> str:
        index = len(inits) // 2
        w = rng.standard_normal((cout, cin, kernel, kernel)) * gain * np.sqrt(2 / (cin * kernel**2))
        inits.extend(
            (
                numpy_helper.from_array(w.astype(np.float32), f"w{index}"),
                numpy_helper.from_array(np.zeros(cout, np.float32), f"b{index}"),
            )
        )
        pad = kernel // 2
        out = f"conv{index}"
        nodes.append(
            helper.make_node(
                "Conv",
                [source, f"w{index}", f"b{index}"],
                [out],
                kernel_shape=[kernel, kernel],
                pads=[pad] * 4,
                strides=[stride, stride],
            )
        )
        if not relu:
            return out
        nodes.append(helper.make_node("Relu", [out], [f"{out}_relu"]))
        return f"{out}_relu"

    current = conv("x", 3, 64, 7, 2, relu=True)
    nodes.append(
        helper.make_node(
            "MaxPool", [current], ["stem"], kernel_shape=[3, 3], pads=[1] * 4, strides=[2, 2]
        )
    )
    current, channels = "stem", 64
    for width, blocks, first_stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for block in range(blocks):
            stride = first_stride if block == 0 else 1
            branch = conv(current, channels, width, 1, 1, relu=True)
            branch = conv(branch, width, width, 3, stride, relu=True)
            branch = conv(branch, width, width * 4, 1, 1, relu=False, gain=0.2)
            shortcut = current
            if block == 0:
                shortcut = conv(current, channels, width * 4, 1, stride, relu=False)
            summed = f"{branch}_sum"
            nodes += [
                helper.make_node("Add", [branch, shortcut], [summed]),
                helper.make_node("Relu", [summed], [f"{summed}_relu"]),
            ]
            current, channels = f"{summed}_relu", width * 4
    fc = (rng.standard_normal((channels, 1000)) / np.sqrt(channels)).astype(np.float32)
    inits += [
        numpy_helper.from_array(fc, "fc_w"),
        numpy_helper.from_array(np.zeros(1000, np.float32), "fc_b"),
    ]
    nodes += [
        helper.make_node("GlobalAveragePool", [current], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"]),
    ]
    return _model(
        nodes,
        [_tensor("x", "FP32", ["batch", 3, 224, 224])],
        [_tensor("y", "FP32", ["batch", 1000])],
        inits,
    )


def write_model(
    repository: Path, name: str, model: bytes, *, version: int = 1, config: str | None = None
) -> Path:
    """Write `<repository>/<name>/<version>/model.onnx` (and config.yaml if given)."""
    folder = repository / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(model)
    if config is not None:
        (repository / name / "config.yaml").write_text(config, encoding="utf-8")
    return path


def write_example_repository(repository: Path) -> None:
    """The quick-start repository: identity, mlp (with a config), convnet, text."""
    write_model(repository, "identity", identity_model())
    write_model(
        repository,
        "mlp",
        mlp_model(),
        config=(
            "# Everything here is optional: without it mlserve reads the graph.\n"
            "max_batch_size: 64\n"
            "instance_count: 1\n"
            "session:\n"
            "  intra_op_threads: 1\n"
            "warmup:\n"
            "  kind: random\n"
            "  batch_size: 8\n"
        ),
    )
    write_model(repository, "convnet", convnet_model())
    write_model(repository, "text", identity_model("BYTES", (1,)))


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/models")
    write_example_repository(target)
    print(f"example model repository written to {target}")
