"""A compiled accelerator and its Python twin, as test parameters: every ext
test runs on both. Every install builds the compiled module (setup.py), so a
failed import fails the tests; only a MLSERVE_NO_EXTENSIONS=1 build may lack
it, and then its cases are skipped with that reason."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

import pytest

NO_EXTENSIONS = os.environ.get("MLSERVE_NO_EXTENSIONS") == "1"
EXPECTED_IMPLEMENTATION = "py" if NO_EXTENSIONS else "cy"


def compiled(name: str) -> ModuleType | None:
    """`mlserve.ext._<name>`, or None in a MLSERVE_NO_EXTENSIONS=1 build."""
    try:
        return importlib.import_module(f"mlserve.ext._{name}")
    except ImportError:
        if not NO_EXTENSIONS:
            raise
        return None


def implementations(name: str) -> list[Any]:
    """pytest params: the twin ("py") and the compiled module ("cy")."""
    module = compiled(name)
    return [
        pytest.param(importlib.import_module(f"mlserve.ext._{name}_py"), id="py"),
        pytest.param(
            module,
            id="cy",
            marks=pytest.mark.skipif(
                module is None, reason="built with MLSERVE_NO_EXTENSIONS=1: no compiled module"
            ),
        ),
    ]
