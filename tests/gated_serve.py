"""`mlserve` with the tests' gate below onnxruntime (see tests/gate.py):
`python -m tests.gated_serve serve ...` runs the real server, whose model
runs wait while the gate directory (MLSERVE_TEST_GATE_DIR) has a file named
after their model and their batch has at least the rows it names (read again
while waiting: a test may raise it to let the smaller runs go)."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlserve.cli.main import main
from mlserve.runtime.onnx_session import OnnxSession
from tests.gate import HELD, WAIT_S

_original_init = OnnxSession.__init__
_held_ids = itertools.count()
_held_lock = threading.Lock()


def _min_rows(gate_file: Path) -> int | None:
    """The rows from which runs wait, or None when the gate is open."""
    try:
        return int(gate_file.read_text() or "1")
    except FileNotFoundError:
        return None


def _wait_at(gate_file: Path, rows: int) -> None:
    minimum = _min_rows(gate_file)
    if minimum is None or rows < minimum:
        return
    with _held_lock:
        marker = gate_file.with_name(f"{gate_file.name}{HELD}{next(_held_ids)}")
    marker.touch()
    try:
        deadline = time.monotonic() + WAIT_S
        while (minimum := _min_rows(gate_file)) is not None and rows >= minimum:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test never opened the gate {gate_file}")
            time.sleep(0.001)
    finally:
        marker.unlink()


def _gated_init(self: OnnxSession, model: bytes | str, **kw: Any) -> None:
    _original_init(self, model, **kw)
    if not isinstance(model, str):
        return
    # <repository>/<model>/<version>/model.onnx
    gate_file = Path(os.environ["MLSERVE_TEST_GATE_DIR"]) / Path(model).parts[-3]
    run = self._run

    def gated(output_names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        first = next(iter(feeds.values()))
        _wait_at(gate_file, first.shape[0] if first.ndim else 1)
        return run(output_names, feeds)

    self._run = gated


OnnxSession.__init__ = _gated_init  # type: ignore[method-assign]

if __name__ == "__main__":
    raise SystemExit(main())
