"""The request path's modules compiled from their own source: a normal
install imports the compiled ones, MLSERVE_NO_EXTENSIONS=1 their source."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

from mlserve.compiled import COMPILED_MODULES, is_compiled
from tests.unit.twins import NO_EXTENSIONS


def _python(code: str) -> str:
    """What `code` prints in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout


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
    assert _python(code).split() == ["0", str(len(COMPILED_MODULES))]


def test_per_request_records_are_cdef_classes_compiled_and_dataclasses_from_source() -> None:
    """The per-request records (the batcher's and the policy's, and the
    inference request and response types): cdef classes (no instance dict)
    when compiled; from source without Cython installed (a user's install has
    it only at build time), slotted dataclasses from mlserve.cython_shim, and
    the policy still decides."""
    from mlserve.runtime import inference_types as types
    from mlserve.runtime.batching import batcher, policy

    records = (
        batcher.Pending, batcher.BatchResult, policy.QueueView, policy.SendNow,
        types.InferInput, types.RequestedOutput, types.InferRequest, types.InferOutput,
        types.InferResponse,
    )  # fmt: skip
    if not NO_EXTENSIONS:
        assert all(r.__dictoffset__ == 0 and "__slots__" not in vars(r) for r in records)
    code = (
        "import sys\n"
        "sys.modules['cython'] = None  # import cython: ImportError, as without Cython\n"
        "from mlserve.compiled import import_from_source\n"
        "import_from_source()\n"
        "from mlserve.runtime.batching import batcher, policy\n"
        "from mlserve.runtime.batching.latency_model import LatencyEstimate\n"
        "from mlserve.runtime import inference_types as t\n"
        "records = (batcher.Pending, batcher.BatchResult, policy.QueueView, policy.SendNow,\n"
        "           t.InferInput, t.RequestedOutput, t.InferRequest, t.InferOutput,\n"
        "           t.InferResponse)\n"
        "print(all('__slots__' in vars(r) for r in records))\n"
        "view = policy.QueueView(1.0, 1.0, 3, 0, 1, 0, 0.0, False, 0.0, 1.0)\n"
        "print(policy.decide(view, policy.BatchPolicy(max_batch_size=8),\n"
        "                    LatencyEstimate(0.0, 0.0, 0)))\n"
    )
    assert _python(code).split("\n")[:2] == ["True", "SendNow(rows=3)"]
