"""Typed, path-aware reading of YAML config mappings.

Both the server config and each model's config.yaml are plain mappings; a
`Section` reads one of them with typed getters and raises `ConfigError` whose
message starts with the full key path (`models.mlp.max_batch_size: ...`), and
refuses keys nobody read, so a typo is an error and not a silent default."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from mlserve.errors import ConfigError

T = TypeVar("T")
_MISSING: Any = object()


def _type_name(value: object) -> str:
    return type(value).__name__


class Section:
    """One mapping of a config tree, read with typed getters."""

    def __init__(self, data: object, path: str = "") -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(path, f"must be a mapping, got {_type_name(data)}")
        for key in data:
            if not isinstance(key, str):
                raise ConfigError(path, f"keys must be strings, got {key!r}")
        self._data: Mapping[str, Any] = data
        self._path = path
        self._read: set[str] = set()

    @property
    def path(self) -> str:
        return self._path

    def child_path(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def has(self, key: str) -> bool:
        return key in self._data

    def keys(self) -> list[str]:
        return list(self._data)

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        self._read.add(key)
        if key not in self._data or self._data[key] is None:
            if default is _MISSING:
                raise ConfigError(self.child_path(key), "is required")
            return default
        return self._data[key]

    def section(self, key: str) -> Section:
        return Section(self.raw(key, {}), self.child_path(key))

    def optional_section(self, key: str) -> Section | None:
        if key not in self._data:
            self._read.add(key)
            return None
        return Section(self.raw(key, {}), self.child_path(key))

    def integer(
        self,
        key: str,
        default: int | Any = _MISSING,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        value = self.raw(key, default)
        return check_int(value, self.child_path(key), minimum=minimum, maximum=maximum)

    def number(self, key: str, default: float | Any = _MISSING, *, minimum: float = 0.0) -> float:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(self.child_path(key), f"must be a number, got {value!r}")
        if value < minimum:
            raise ConfigError(self.child_path(key), f"must be >= {minimum}, got {value}")
        return float(value)

    def boolean(self, key: str, default: bool | Any = _MISSING) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise ConfigError(self.child_path(key), f"must be true or false, got {value!r}")
        return value

    def string(self, key: str, default: str | Any = _MISSING) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str):
            raise ConfigError(self.child_path(key), f"must be a string, got {value!r}")
        return value

    def optional_string(self, key: str) -> str | None:
        return None if self.raw(key, None) is None else self.string(key)

    def choice(self, key: str, choices: tuple[str, ...], default: str | Any = _MISSING) -> str:
        value = self.string(key, default)
        if value not in choices:
            raise ConfigError(
                self.child_path(key), f"must be one of {', '.join(choices)}; got {value!r}"
            )
        return value

    def items(self, key: str, read: Callable[[object, str], T]) -> list[T]:
        value = self.raw(key, [])
        path = self.child_path(key)
        if not isinstance(value, list):
            raise ConfigError(path, f"must be a list, got {_type_name(value)}")
        return [read(item, f"{path}[{index}]") for index, item in enumerate(value)]

    def reject_unknown(self) -> None:
        unknown = sorted(set(self._data) - self._read)
        if unknown:
            raise ConfigError(
                self.child_path(unknown[0]),
                "unknown key" + (f" (also: {', '.join(unknown[1:])})" if len(unknown) > 1 else ""),
            )


def check_int(
    value: object, path: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(path, f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(path, f"must be <= {maximum}, got {value}")
    return value
