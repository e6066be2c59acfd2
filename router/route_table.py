"""The route table: one model's split between its stable and canary versions
at one moment, and the per-request pick.

The rollout controller builds a new `RouteTable` for every change (a step,
a pause, a rollback) and swaps it in with one assignment; the request path
only reads the current one and calls `pick`, which does no I/O, takes no
lock and allocates nothing but its answer. A rollback is a table swap: the
stable version keeps its full capacity throughout.

Sticky routing: a request that carries a route key (the `mlserve-route-key`
header or gRPC metadata, or the V2 parameter `mlserve_route_key`) is hashed
into [0, 1) and goes to the canary when the hash is below the canary's
weight. The hash is the same in every worker process and every restart
(BLAKE2b, not Python's salted `hash`), and a key below one weight is below
every larger one: raising the weight never moves a user from the canary
back to stable. A request without a key draws at random."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from typing import Any

from mlserve.errors import InvalidRequest

ROUTE_KEY_HEADER = "mlserve-route-key"
ROUTE_OVERRIDE_HEADER = "mlserve-route"
ROUTE_KEY_PARAMETER = "mlserve_route_key"
_SCALE = float(1 << 64)
Recorder = Callable[[bool, float, Any], None]


class Track(enum.Enum):
    STABLE = "stable"
    CANARY = "canary"


_OVERRIDES = {"stable": Track.STABLE, "canary": Track.CANARY}


def key_position(key: str) -> float:
    """Where a route key falls in [0, 1): the same everywhere, always."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


class Route:
    """Where one request goes: the version that answers, its track, and
    whether the canary also runs it in the shadow. Built once per table (the
    request path allocates none): with the version as the repository's key
    and the response parameters that say who answered."""

    __slots__ = ("mirror", "parameters", "record", "track", "track_name", "version", "version_str")

    def __init__(
        self, version: int, track: Track, mirror: bool = False, record: Recorder | None = None
    ) -> None:
        self.version = version
        self.version_str = str(version)
        self.track = track
        self.track_name = track.value
        self.mirror = mirror
        self.parameters = {"mlserve_route": track.value}  # read only, shared
        # How a request on this route ended: (failed, latency_s, outputs) to
        # its track's evidence; the rollout's own method, bound once per table.
        self.record = record or _ignore

    def __repr__(self) -> str:
        return f"Route({self.version}, {self.track.value}, mirror={self.mirror})"


def _ignore(failed: bool, latency_s: float, outputs: Any) -> None:
    """A table built without a rollout behind it (tests) records nothing."""


class RouteTable:
    """One model's split, immutable: the controller builds a new one for
    every change."""

    __slots__ = ("_canary_route", "_mirrored", "_stable_route", "canary", "generation",
                 "mirror", "model", "stable", "weight")  # fmt: skip

    def __init__(
        self,
        model: str,
        stable: int,
        canary: int,
        *,
        weight: float = 0.0,  # share of requests the canary answers, 0-1
        mirror: float = 0.0,  # share of requests mirrored to the canary, 0-1
        generation: int = 0,  # bumped by every swap
        record_stable: Recorder | None = None,
        record_canary: Recorder | None = None,
    ) -> None:
        self.model = model
        self.stable = stable
        self.canary = canary
        self.weight = weight
        self.mirror = mirror
        self.generation = generation
        self._stable_route = Route(stable, Track.STABLE, record=record_stable)
        self._mirrored = Route(stable, Track.STABLE, mirror=True, record=record_stable)
        self._canary_route = Route(canary, Track.CANARY, record=record_canary)

    def __repr__(self) -> str:
        return (
            f"RouteTable({self.model!r}, stable={self.stable}, canary={self.canary}, "
            f"weight={self.weight}, mirror={self.mirror}, generation={self.generation})"
        )

    def pick(self, key: str | None, override: str | None, draw: float) -> Route:
        """The route for one request. `draw` is a uniform [0, 1) number used
        when the request has no key; `override` is a tester's
        `mlserve-route: stable|canary`."""
        if override is not None:
            track = _OVERRIDES.get(override)
            if track is None:
                raise InvalidRequest(
                    f"{ROUTE_OVERRIDE_HEADER} must be 'stable' or 'canary', got {override!r}"
                )
            return self._canary_route if track is Track.CANARY else self._stable_route
        position = draw if key is None else key_position(key)
        if position < self.weight:
            return self._canary_route
        return self._mirrored if position < self.mirror else self._stable_route
