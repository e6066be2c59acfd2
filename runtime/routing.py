"""What the data plane asks of a rollout, and what it tells it.

The rollout machinery lives in `mlserve.router`; the runtime never imports
it. The composition root gives the data plane two things: `routes`, a dict
of route tables (one per model being rolled out, replaced whole by the
controller) whose `pick` says which version answers a version-less request,
and `RolloutHooks`, which hears how each routed request ended and gets the
pairs of answers of mirrored (shadow) requests; each picked route carries
its rollout's recorder, which hears how the request ended. A model with no rollout
costs the request path one empty-dict test."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from mlserve.errors import ErrorKind, InvalidRequest

ROUTE_KEY_HEADER = "mlserve-route-key"
ROUTE_HEADER = "mlserve-route"
ROUTE_KEY_PARAMETER = "mlserve_route_key"
ROUTE_PARAMETER = "mlserve_route"
# The failures that count against the version that served a request: the
# server's own (the model failed, timed out, was overloaded or unavailable),
# not the caller's (bad input, unknown names).
SERVER_FAILURES = frozenset(
    {
        ErrorKind.INTERNAL,
        ErrorKind.UNAVAILABLE,
        ErrorKind.DEADLINE_EXCEEDED,
        ErrorKind.RESOURCE_EXHAUSTED,
    }
)


class PickedRoute(Protocol):
    version: int
    version_str: str  # the repository's key for it
    mirror: bool
    parameters: dict[str, Any]  # the answer's V2 parameters saying who answered (shared)
    track_name: str  # "stable" or "canary"

    def record(self, failed: bool, latency_s: float, outputs: Any) -> None:
        """How a request on this route ended, to its rollout's evidence."""


class RouteTableView(Protocol):
    canary: int

    def pick(self, key: str | None, override: str | None, draw: float) -> PickedRoute: ...


class RolloutHooks(Protocol):
    """Mirrored (shadow) requests: whether one more may be made, and both
    answers once in. (A routed request's end goes to its route's `record`.)"""

    def mirror_admitted(self, model: str) -> bool:
        """May one more request be mirrored now? False is a drop, counted."""

    def mirrored(
        self,
        model: str,
        names: Sequence[str],
        stable: Sequence[np.ndarray] | None,
        canary: Sequence[np.ndarray] | None,
        canary_latency_s: float,
    ) -> None:
        """Both outcomes of a mirrored request, once the later is in: each
        track's outputs, or None where it failed."""


class RolloutAdmin(Protocol):
    """The rollout admin API's operations (the HTTP API maps them to
    /v2/rollouts; errors are mlserve errors, mapped as everywhere)."""

    def statuses(self) -> list[dict[str, Any]]: ...

    def status(self, name: str) -> dict[str, Any]: ...

    async def start(
        self, name: str, *, canary: int, stable: int | None = None
    ) -> dict[str, Any]: ...

    def act(self, name: str, action: str) -> dict[str, Any]: ...


def route_hints(request: Any) -> tuple[str | None, str | None]:
    """(route key, override) of a request: its V2 parameters, else its
    transport's headers / metadata."""
    params = request.parameters
    key = params.get(ROUTE_KEY_PARAMETER) if params else None
    override = params.get(ROUTE_PARAMETER) if params else None
    lookup: Callable[[str], str | None] | None = request.headers
    if lookup is not None:
        if key is None:
            key = lookup(ROUTE_KEY_HEADER)
        if override is None:
            override = lookup(ROUTE_HEADER)
    if key is not None and not isinstance(key, str):
        raise InvalidRequest(f"parameter '{ROUTE_KEY_PARAMETER}' must be a string, got {key!r}")
    if override is not None and not isinstance(override, str):
        raise InvalidRequest(f"parameter '{ROUTE_PARAMETER}' must be a string, got {override!r}")
    return key, override
