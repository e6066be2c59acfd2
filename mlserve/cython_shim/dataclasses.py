"""`cython.dataclasses` for the pure twin: a slotted standard dataclass."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform, overload

T = TypeVar("T")

field = dataclasses.field


@overload
def dataclass(cls: type[T], /) -> type[T]: ...
@overload
def dataclass(*, init: bool = True) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform()
def dataclass(cls: Any = None, /, *, init: bool = True) -> Any:
    """`@dataclass`, or `@dataclass(init=False)` for a class with its own __init__."""
    if cls is None:
        return lambda c: dataclasses.dataclass(c, slots=True, init=init)
    return dataclasses.dataclass(cls, slots=True, init=init)
