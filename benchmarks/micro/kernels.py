"""Micro-benchmarks of the ext kernels, compiled (cy) against their
pure-Python twins (py): BYTES codec, batch selection, gather and split, at
1, 8 and 64 requests per batch.

    .venv/bin/python -m benchmarks.micro.kernels [--repeat 7]

Prints a table of microseconds per call (best of --repeat runs of timeit) and
the cy/py ratio. Single-threaded and short: pin it (taskset -c 1) on a shared
machine, and read ratios rather than absolute numbers."""

from __future__ import annotations

import argparse
import importlib
import timeit
from collections.abc import Callable
from typing import Any

import numpy as np

KERNELS = {
    "py": ("mlserve.ext._batching_py", "mlserve.ext._bytes_codec_py"),
    "cy": ("mlserve.ext._batching", "mlserve.ext._bytes_codec"),
}


def cases(batching: Any, codec: Any, requests: int) -> dict[str, Callable[[], object]]:
    rng = np.random.default_rng(requests)
    rows = [1] * requests
    mlp_inputs = [rng.standard_normal((1, 64)).astype(np.float32) for _ in range(requests)]
    conv_inputs = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(requests)]
    mlp_out = np.empty((requests, 64), np.float32)
    conv_out = np.empty((requests, 3, 32, 32), np.float32)
    batch_out = rng.standard_normal((requests, 10)).astype(np.float32)
    keys = [("x", "<f4", (64,))] * requests
    strings = np.array([b"token-%d" % i for i in range(16 * requests)], dtype=object)
    encoded = codec.encode_bytes_tensor(strings)
    return {
        "select_batch": lambda: batching.select_batch(keys, rows, 64),
        "gather mlp rows": lambda: batching.gather_rows(mlp_inputs, mlp_out),
        "gather convnet rows": lambda: batching.gather_rows(conv_inputs, conv_out),
        "split outputs": lambda: batching.split_rows(batch_out, rows),
        "encode BYTES (16/req)": lambda: codec.encode_bytes_tensor(strings),
        "decode BYTES (16/req)": lambda: codec.decode_bytes_tensor(encoded, len(strings)),
    }


def measure(fn: Callable[[], object], repeat: int) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    modules = {
        name: tuple(importlib.import_module(m) for m in mods) for name, mods in KERNELS.items()
    }
    print(f"{'kernel':24} {'requests':>8} {'py us':>10} {'cy us':>10} {'cy/py':>7}")
    for requests in (1, 8, 64):
        py_cases = cases(modules["py"][0], modules["py"][1], requests)
        cy_cases = cases(modules["cy"][0], modules["cy"][1], requests)
        for name in py_cases:
            py = measure(py_cases[name], args.repeat)
            cy = measure(cy_cases[name], args.repeat)
            print(f"{name:24} {requests:>8} {py:>10.2f} {cy:>10.2f} {cy / py:>7.2f}")


if __name__ == "__main__":
    main()
