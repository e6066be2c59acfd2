"""Restricted endpoints: Triton's `--grpc-restricted-protocol` /
`--http-restricted-api` option. Each endpoint belongs to a protocol group; a
restricted group answers only callers that send the configured header key and
value."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from mlserve.errors import ConfigError, PermissionDenied

GROUPS = (
    "health",
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)


@dataclass(frozen=True, slots=True)
class Restriction:
    """Calls to `group` must carry header `key` with value `value`."""

    group: str
    key: str
    value: str


def parse_restriction(spec: str, option: str) -> list[Restriction]:
    """'model-repository,statistics:admin-key=secret' -> one Restriction per group."""
    groups_part, sep, header = spec.partition(":")
    key, eq, value = header.partition("=")
    if not sep or not eq or not key or not value:
        raise ConfigError(option, f"must look like 'group[,group...]:<key>=<value>', got {spec!r}")
    out = []
    for group in groups_part.split(","):
        if group not in GROUPS:
            raise ConfigError(
                option, f"unknown protocol group {group!r}; known: {', '.join(GROUPS)}"
            )
        out.append(Restriction(group, key.lower(), value))
    return out


class AccessPolicy:
    """Checks one call's headers against the restrictions of its group."""

    def __init__(self, restrictions: list[Restriction]) -> None:
        self._by_group = {r.group: r for r in restrictions}

    def restricted(self, group: str) -> bool:
        return group in self._by_group

    def check(self, group: str, header_value: str | None) -> None:
        rule = self._by_group.get(group)
        if rule is None:
            return
        if header_value is None or not hmac.compare_digest(header_value, rule.value):
            raise PermissionDenied(
                f"the {group} API is restricted: send header '{rule.key}' with the configured value"
            )

    def header_for(self, group: str) -> str | None:
        rule = self._by_group.get(group)
        return rule.key if rule else None
