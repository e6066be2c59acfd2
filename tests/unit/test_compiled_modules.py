"""The request path's modules compiled from their own source: a normal
install imports the compiled ones, MLSERVE_NO_EXTENSIONS=1 their source."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

from mlserve.compiled import COMPILED_MODULES, is_compiled
from tests.unit.twins import NO_EXTENSIONS


def test_every_listed_module_has_its_source() -> None:
    for name in COMPILED_MODULES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        origin = Path(spec.origin)
        assert origin.with_name(origin.name.split(".")[0] + ".py").is_file(), name


def test_install_imports_the_compiled_modules_unless_extensions_are_off() -> None:
    loaded = {name: is_compiled(importlib.import_module(name)) for name in COMPILED_MODULES}
    if NO_EXTENSIONS:
        assert not any(loaded.values()), [n for n, c in loaded.items() if c]
    else:
        assert all(loaded.values()), [n for n, c in loaded.items() if not c]


def test_import_from_source_switches_a_fresh_interpreter() -> None:
    code = (
        "import importlib\n"
        "from mlserve.compiled import COMPILED_MODULES, import_from_source, is_compiled\n"
        "import_from_source()\n"
        "mods = [importlib.import_module(n) for n in COMPILED_MODULES]\n"
        "print(sum(map(is_compiled, mods)), sum(m.__file__.endswith('.py') for m in mods))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == ["0", str(len(COMPILED_MODULES))]
