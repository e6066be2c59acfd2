"""A gate the tests open: onnxruntime runs of a chosen model wait in the real
server until the test lets them go.

Why: a test about what happens while a model is busy (requests queue and then
share a batch, a deadline passes in the queue, a higher priority overtakes)
must know the instance is busy for as long as it takes the test to set the
scene, on a cold, slow, busy machine too. A model that is merely slow (a long
chain of matmuls) is busy for a time that depends on the machine; a gate is
busy until the test has seen the condition it waits for and opens it.

The server is the real `mlserve serve` (`tests/gated_serve.py` runs it) with
one change below the onnxruntime boundary: `OnnxSession.run` of a model whose
name has a file in the gate's directory waits, before running, while that
file exists and the batch has at least the rows the file names. A run that
waits marks itself (`<model>.held.<n>` files) so the test can wait for
"N runs are held" instead of guessing when they started. Everything else,
transports, batching and onnxruntime itself, is what a user runs.

Gated runs must not run on the event loop thread (`execution: inline`): the
loop would stop reading, and the test would wait for requests that the
server can no longer admit. Gated models use `execution: threads` or leave
batches to their instance threads."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

ENV = "MLSERVE_TEST_GATE_DIR"
HELD = ".held."
# Only a real hang reaches these: every wait is for a condition.
WAIT_S = 60.0


class Gate:
    """The test's side of the gate: close it for a model, wait for held runs, open it."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory

    def close(self, model: str, min_rows: int = 1) -> None:
        """Runs of `model` with at least `min_rows` rows wait from now on."""
        path = self.directory / model
        path.with_suffix(".tmp").write_text(str(min_rows))
        path.with_suffix(".tmp").rename(path)

    def open(self, model: str) -> None:
        """Let every waiting run of `model` go, and later ones run at once."""
        (self.directory / model).unlink(missing_ok=True)

    def held(self, model: str) -> int:
        """How many runs of `model` wait at the gate now."""
        return sum(1 for _ in self.directory.glob(f"{model}{HELD}*"))

    def wait_held(self, model: str, count: int = 1) -> None:
        """Return once `count` runs of `model` wait at the gate."""
        deadline = time.monotonic() + WAIT_S
        while self.held(model) < count:
            assert time.monotonic() < deadline, f"{count} run(s) of {model} never reached the gate"
            time.sleep(0.005)

    @contextlib.contextmanager
    def closed(self, model: str, min_rows: int = 1) -> Iterator[None]:
        """The gate closed for the block, opened after it (also on failure)."""
        self.close(model, min_rows)
        try:
            yield
        finally:
            self.open(model)
