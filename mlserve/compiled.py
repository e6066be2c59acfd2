"""The request path's own Python modules, compiled by Cython from their
source as they are, and the switch that imports them from source instead.

Profiled on the MLP, over two thirds of the server's CPU per request is
the interpreter running these modules: evaluating bytecode, building frames,
looking up attributes. setup.py compiles each module listed here from its
`.py` (Cython's pure-Python mode: the same file, no second copy to keep in
step), and Python's import system prefers the compiled module to the source
beside it. `MLSERVE_NO_EXTENSIONS=1` imports them from source, as it selects
the twin of every accelerator in ext/ (`mlserve/__init__.py` calls
`import_from_source` before anything imports them).

Nothing here imports the rest of mlserve: setup.py reads COMPILED_MODULES."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

# Everything a request or a batch runs through, and nothing of the control
# plane (configuration, loading, the CLI), whose speed does not matter.
COMPILED_MODULES: tuple[str, ...] = (
    "mlserve.runtime.coroutine_driver",
    "mlserve.runtime.dataplane",
    "mlserve.runtime.datatypes",
    "mlserve.runtime.grpc_codec",
    "mlserve.runtime.grpc_native",
    "mlserve.runtime.grpc_service",
    "mlserve.runtime.http_api",
    "mlserve.runtime.http_codec",
    "mlserve.runtime.http_server",
    "mlserve.runtime.inference_types",
    "mlserve.runtime.metrics",
    "mlserve.runtime.model_version",
    "mlserve.runtime.statistics",
    "mlserve.runtime.tensor_codec",
    "mlserve.runtime.batching.batcher",
    "mlserve.runtime.batching.gather_buffers",
    "mlserve.runtime.batching.instance_pool",
    "mlserve.runtime.batching.latency_model",
    "mlserve.runtime.batching.policy",
    "mlserve.runtime.batching.wake_timer",
)


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of COMPILED_MODULES by their `.py` only."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in COMPILED_MODULES or not path:
            return None
        source = (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES)
        for entry in path:
            spec = importlib.machinery.FileFinder(entry, source).find_spec(fullname, target)
            if spec is not None:
                return spec
        return None


def import_from_source() -> None:
    """Import the modules of COMPILED_MODULES from their `.py` from now on.
    Modules already imported stay as they are."""
    if not any(isinstance(finder, _SourceFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder())


def is_compiled(module: ModuleType) -> bool:
    """Whether `module` was loaded from a compiled extension module."""
    origin = getattr(module, "__file__", None) or ""
    return origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
