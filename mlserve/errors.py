"""mlserve's error tree, classified by whose fault it is.

    MlserveError                    root; carries a message a caller can act on
    ├── InvalidRequest              the caller's fault: names the field, what was
    │                               expected and what came
    ├── ModelNotFound               no such model / version in this server
    ├── PermissionDenied            a restricted API was called without its key
    ├── Unsupported                 a valid request for something we do not do
    ├── ModelUnavailable            the model exists but cannot serve right now
    │   └── LatencyBudgetExceeded   refused up front: it would miss the model's budget
    ├── Overloaded                  we refuse work to protect latency/memory
    ├── DeadlineExceeded            the request's own deadline passed
    ├── InferenceFailed             onnxruntime failed on valid input (wraps it)
    ├── InternalError               our bug
    └── ConfigError                 configuration invalid (not a request error)

Domain errors carry an `ErrorKind`, never a transport code. Each transport
maps kinds to its status codes in exactly one table (`runtime/grpc_status.py`,
`runtime/http_status.py`)."""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    """Transport-neutral classification of a failure."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    PERMISSION_DENIED = "permission_denied"
    UNIMPLEMENTED = "unimplemented"
    UNAVAILABLE = "unavailable"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    INTERNAL = "internal"


class MlserveError(Exception):
    """Root of every error mlserve raises on purpose."""

    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(MlserveError):
    """The request is malformed or does not match the model."""

    kind = ErrorKind.INVALID_ARGUMENT


class ModelNotFound(MlserveError):
    """The named model or version is not known to this server."""

    kind = ErrorKind.NOT_FOUND


class PermissionDenied(MlserveError):
    """A restricted endpoint was called without the configured header key."""

    kind = ErrorKind.PERMISSION_DENIED


class Unsupported(MlserveError):
    """A well-formed request for a feature this server does not provide."""

    kind = ErrorKind.UNIMPLEMENTED


class ModelUnavailable(MlserveError):
    """The model exists but is not ready (loading, failed, unloading, draining)."""

    kind = ErrorKind.UNAVAILABLE


class LatencyBudgetExceeded(ModelUnavailable):
    """Refused before queueing: the predicted finish is past `max_latency_ms`."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Overloaded(MlserveError):
    """Refused to protect the server: queue full or latency budget exceeded."""

    kind = ErrorKind.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(MlserveError):
    """The request's deadline passed before it could be served."""

    kind = ErrorKind.DEADLINE_EXCEEDED


class InferenceFailed(MlserveError):
    """onnxruntime raised while running a request that passed validation."""

    kind = ErrorKind.INTERNAL


class InternalError(MlserveError):
    """Something inside mlserve went wrong; a bug to report."""

    kind = ErrorKind.INTERNAL


class ConfigError(MlserveError):
    """Configuration is invalid. The message starts with the key path."""

    kind = ErrorKind.INVALID_ARGUMENT

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason
