"""mlserve: serve ONNX models over the Open Inference Protocol (KServe V2).

Components are subpackages: `mlserve.runtime` (the serving process),
`mlserve.router`, `mlserve.ext` (Cython accelerators), `mlserve.proto`
(wire contract), `mlserve.cli` (the command line)."""

import os as _os

if _os.environ.get("MLSERVE_NO_EXTENSIONS") == "1":  # before any compiled module is imported
    from mlserve.compiled import import_from_source

    import_from_source()

from mlserve._version import __version__
from mlserve.errors import (
    ConfigError,
    DeadlineExceeded,
    InferenceFailed,
    InternalError,
    InvalidRequest,
    LatencyBudgetExceeded,
    MlserveError,
    ModelNotFound,
    ModelUnavailable,
    Overloaded,
    PermissionDenied,
    Unsupported,
)

__all__ = [
    "ConfigError",
    "DeadlineExceeded",
    "InferenceFailed",
    "InternalError",
    "InvalidRequest",
    "LatencyBudgetExceeded",
    "MlserveError",
    "ModelNotFound",
    "ModelUnavailable",
    "Overloaded",
    "PermissionDenied",
    "Unsupported",
    "__version__",
]
