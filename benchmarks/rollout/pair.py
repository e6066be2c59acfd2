"""The setup the rollout benchmarks share: one repository with the benchmark
MLP twice, `mlp` with no rollout and a copy whose versions 1 and 2 (the same
graph) are in a rollout held at one step (a plan that never gathers enough
evidence to move), and a ModelInfer body for h2load per model."""

from __future__ import annotations

from pathlib import Path

from benchmarks.load import workload
from mlserve import examples
from mlserve.proto import grpc_service_pb2 as pb

CONFIG = "max_batch_size: 32\ndynamic_batching: {max_queue_delay_us: 1000}\n"
HELD_PLAN = """rollout:
  stable: 1
  canary: 2
  steps: [%s]
  interval_s: 30
  min_requests: 1000000000
  max_step_s: 1000000
"""


def write_pair(root: Path, rolled: str, step: str) -> tuple[Path, dict[str, Path]]:
    """The repository under `root` (`mlp`, and `rolled` held at `step`, e.g.
    "{weight: 50}"), and each model's h2load body."""
    repo = root / "models"
    examples.write_model(repo, "mlp", examples.mlp_model(), config=CONFIG)
    examples.write_model(repo, rolled, examples.mlp_model(), config=CONFIG + HELD_PLAN % step)
    examples.write_model(repo, rolled, examples.mlp_model(), version=2)
    bodies = {}
    for model in ("mlp", rolled):
        bodies[model] = root / f"{model}.bin"
        bodies[model].write_bytes(_framed(workload.infer_message("mlp"), model))
    return repo, bodies


def alternating(round_: int, first: str, second: str) -> tuple[str, str]:
    """Window order: each model goes first in every other round."""
    return (first, second) if round_ % 2 == 0 else (second, first)


def _framed(message: bytes, model: str) -> bytes:
    """The same ModelInferRequest for another model name, framed for h2load."""
    request = pb.ModelInferRequest.FromString(message)
    request.model_name = model
    data = request.SerializeToString()
    return b"\x00" + len(data).to_bytes(4, "big") + data
