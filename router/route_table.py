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
from dataclasses import dataclass

from mlserve.errors import InvalidRequest

ROUTE_KEY_HEADER = "mlserve-route-key"
ROUTE_OVERRIDE_HEADER = "mlserve-route"
ROUTE_KEY_PARAMETER = "mlserve_route_key"
_SCALE = float(1 << 64)


class Track(enum.Enum):
    STABLE = "stable"
    CANARY = "canary"


_OVERRIDES = {"stable": Track.STABLE, "canary": Track.CANARY}


def key_position(key: str) -> float:
    """Where a route key falls in [0, 1): the same everywhere, always."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes: the version that answers, its track, and
    whether the canary also runs it in the shadow."""

    version: int
    track: Track
    mirror: bool = False


@dataclass(frozen=True, slots=True)
class RouteTable:
    model: str
    stable: int
    canary: int
    weight: float = 0.0  # share of requests the canary answers, 0-1
    mirror: float = 0.0  # share of requests mirrored to the canary, 0-1
    generation: int = 0  # bumped by every swap

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
            return Route(self.canary if track is Track.CANARY else self.stable, track)
        position = draw if key is None else key_position(key)
        if position < self.weight:
            return Route(self.canary, Track.CANARY)
        return Route(self.stable, Track.STABLE, mirror=position < self.mirror)
