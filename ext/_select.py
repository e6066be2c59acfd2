"""The one rule every selector follows: the compiled module `_<name>` unless
`MLSERVE_NO_EXTENSIONS=1` or it was not built, else its twin `_<name>_py`."""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def select(name: str) -> tuple[ModuleType, str]:
    """The module to use for accelerator `name`, and "cy" or "py"."""
    twin = f"mlserve.ext._{name}_py"
    if os.environ.get("MLSERVE_NO_EXTENSIONS") == "1":
        return importlib.import_module(twin), "py"
    try:
        return importlib.import_module(f"mlserve.ext._{name}"), "cy"
    except ImportError:  # not built (e.g. a source checkout without a compiler)
        return importlib.import_module(twin), "py"
