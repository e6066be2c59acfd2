"""benchmarks.micro.request_path's floor (the least a served request could
cost) runs the model and answers correctly: its figure is of a path that
works, since it raises if its last answer is not onnxruntime's."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.load import workload
from benchmarks.micro import request_path


@pytest.mark.parametrize(("batch", "concurrency"), [(8, 20), (128, 3)])
def test_the_floor_answers_and_measures(tmp_path: Path, batch: int, concurrency: int) -> None:
    workload.write_repository(tmp_path, ["mlp"], threads=1)
    cpu_us, wall_us = request_path._measure_floor(tmp_path, "mlp", batch, concurrency, 300)
    assert 0 < cpu_us < 10_000
    assert 0 < wall_us < 10_000
