"""`cython.dataclasses` for the pure twin: a slotted standard dataclass."""

from __future__ import annotations

import dataclasses
from typing import TypeVar, dataclass_transform

T = TypeVar("T")

field = dataclasses.field


@dataclass_transform()
def dataclass(cls: type[T]) -> type[T]:
    return dataclasses.dataclass(cls, slots=True)
