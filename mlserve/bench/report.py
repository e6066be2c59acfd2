"""How results are shown: a fixed-width table on stdout, one row per
concurrency level as it finishes (so a long run shows its first figures
early), and the JSON document `--json` writes, which holds everything the
table does plus the settings and what was sent, for scripts and plots."""

from __future__ import annotations

import dataclasses
import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from mlserve._version import __version__
from mlserve.bench.input_data import InputTensor
from mlserve.bench.settings import BenchSettings
from mlserve.bench.summary import PERCENTILES, LevelSummary
from mlserve.bench.wire import EncodedRequest
from mlserve.client import ModelMetadata

_COLUMNS = (
    ("concurrency", 11),
    ("requests", 10),
    ("errors", 7),
    ("req/s", 10),
    ("infer/s", 10),
    *((f"p{p} us", 9) for p in PERCENTILES),
    ("mean us", 9),
)


def table_header() -> str:
    return "  ".join(name.rjust(width) for name, width in _COLUMNS)


def table_row(level: LevelSummary) -> str:
    latency = [level.latency_us.get(f"p{p}") for p in PERCENTILES]
    latency.append(level.latency_us.get("mean"))
    cells = [
        str(level.concurrency),
        str(level.requests),
        str(level.errors),
        f"{level.requests_per_s:.1f}",
        f"{level.infer_per_s:.1f}",
        *("-" if v is None else f"{v:.0f}" for v in latency),
    ]
    return "  ".join(cell.rjust(width) for cell, (_, width) in zip(cells, _COLUMNS, strict=True))


def error_lines(level: LevelSummary) -> list[str]:
    """One indented line per error kind, under the level's row."""
    return [
        f"    {count} x {kind}: {level.error_examples.get(kind, '')}"
        for kind, count in sorted(level.error_counts.items(), key=lambda item: -item[1])
    ]


def print_level(stream: TextIO, level: LevelSummary) -> None:
    stream.write(table_row(level) + "\n")
    for line in error_lines(level):
        stream.write(line + "\n")
    stream.flush()


def report_document(
    *,
    settings: BenchSettings,
    metadata: ModelMetadata,
    inputs: list[InputTensor],
    request: EncodedRequest,
    levels: list[LevelSummary],
    check_requests: int,
    started_at: datetime,
) -> dict[str, Any]:
    """The JSON report. `successful_requests_total` is what the server's success
    counter for the model should have grown by: measured, warmup and check."""
    settings_doc = {
        key: (str(value) if isinstance(value, Path) else value)
        for key, value in dataclasses.asdict(settings).items()
    }
    settings_doc["shapes"] = {k: list(v) for k, v in settings.shapes.items()}
    settings_doc["concurrency"] = list(settings.concurrency)
    return {
        "tool": "mlserve bench",
        "version": __version__,
        "started_at": started_at.isoformat(timespec="seconds"),
        "host": platform.node(),
        "settings": settings_doc,
        "model": {
            "name": metadata.name,
            "versions": list(metadata.versions),
            "platform": metadata.platform,
            "inputs": [
                {
                    "name": tensor.name,
                    "datatype": tensor.datatype,
                    "shape": list(tensor.array.shape),
                    "model_shape": list(spec.shape),
                }
                for tensor, spec in zip(inputs, metadata.inputs, strict=True)
            ],
        },
        "request_body_bytes": request.body_bytes,
        "rows_per_request": request.rows,
        "levels": [_level_document(level) for level in levels],
        "check_requests": check_requests,
        "successful_requests_total": check_requests
        + sum(level.requests + level.warmup_requests for level in levels),
    }


def _level_document(level: LevelSummary) -> dict[str, Any]:
    return {
        "concurrency": level.concurrency,
        "processes": level.processes,
        "requests": level.requests,
        "errors": level.errors,
        "warmup_requests": level.warmup_requests,
        "warmup_errors": level.warmup_errors,
        "duration_s": round(level.duration_s, 6),
        "throughput": {
            "requests_per_s": round(level.requests_per_s, 3),
            "infer_per_s": round(level.infer_per_s, 3),
        },
        "latency_us": {key: round(value, 3) for key, value in level.latency_us.items()},
        "errors_by_kind": {
            kind: {"count": count, "example": level.error_examples.get(kind, "")}
            for kind, count in level.error_counts.items()
        },
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def now_utc() -> datetime:
    return datetime.now(UTC)
