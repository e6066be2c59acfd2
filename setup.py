"""Build script: maps the top-level component folders into the single `mlserve`
import package and compiles the Cython accelerators in ext/.

Metadata lives in pyproject.toml; this file only carries what setuptools cannot
express there (the Cython extension modules with warnings as errors)."""

from __future__ import annotations

import os
import runpy

from setuptools import setup

PACKAGE_DIR = {
    "mlserve": "mlserve",
    "mlserve.cli": "mlserve/cli",
    "mlserve.bench": "mlserve/bench",
    "mlserve.cython_shim": "mlserve/cython_shim",
    "mlserve.runtime": "runtime",
    "mlserve.runtime.batching": "runtime/batching",
    "mlserve.router": "router",
    "mlserve.ext": "ext",
    "mlserve.proto": "proto",
}


def _compiled_sources() -> list[tuple[str, str]]:
    """(module, its .py) for each request-path module compiled from its own
    source (mlserve/compiled.py says which, and why)."""
    listed = runpy.run_path("mlserve/compiled.py")["COMPILED_MODULES"]
    sources = []
    for module in listed:
        package, name = module.rsplit(".", 1)
        sources.append((module, f"{PACKAGE_DIR[package]}/{name}.py"))
    return sources


def _have_nghttp2() -> bool:
    """The native gRPC transport needs libnghttp2's headers at build time."""
    import sysconfig

    dirs = ["/usr/include", "/usr/local/include", sysconfig.get_config_var("INCLUDEDIR") or ""]
    # The compiler's own search path variables (headers unpacked outside /usr).
    for variable in ("CPATH", "C_INCLUDE_PATH"):
        dirs += os.environ.get(variable, "").split(os.pathsep)
    return any(os.path.isfile(os.path.join(d, "nghttp2", "nghttp2.h")) for d in dirs if d)


def _extensions() -> list:
    if os.environ.get("MLSERVE_NO_EXTENSIONS") == "1":
        return []
    from Cython.Build import cythonize
    from Cython.Compiler import Options

    Options.warning_errors = True  # Cython's own warnings fail the build
    from setuptools import Extension

    strict = ["-Werror", "-Wno-unreachable-code"] if os.name == "posix" else []
    import numpy

    def with_numpy(name: str) -> Extension:
        """An accelerator that cimports numpy (its C API)."""
        return Extension(
            f"mlserve.ext.{name}",
            [f"ext/{name}.pyx"],
            include_dirs=[numpy.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=strict,
        )

    modules = [
        Extension("mlserve.ext._bytes_codec", ["ext/_bytes_codec.pyx"], extra_compile_args=strict),
        with_numpy("_infer_codec"),
        with_numpy("_batching"),
    ]
    if _have_nghttp2():
        modules.append(
            Extension(
                "mlserve.ext._grpc_h2",
                ["ext/_grpc_h2.pyx"],
                libraries=["nghttp2"],
                extra_compile_args=strict,
            )
        )
    else:
        print("mlserve: no nghttp2/nghttp2.h (Debian: libnghttp2-dev); the native gRPC")
        print("mlserve: transport is not built and `serve` will use grpcio")
    accelerators = cythonize(
        modules,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "warn.unused": True},
    )
    # Plain Python semantics: annotations stay hints (a `float` argument is
    # not turned into a C double that refuses None or an int subclass).
    request_path = cythonize(
        [Extension(m, [source], extra_compile_args=strict) for m, source in _compiled_sources()],
        language_level=3,
        compiler_directives={"annotation_typing": False},
    )
    return accelerators + request_path


setup(
    packages=list(PACKAGE_DIR),
    package_dir=PACKAGE_DIR,
    package_data={"mlserve.ext": ["*.pyi", "*.pxd", "*.pxi", "py.typed"], "mlserve": ["py.typed"]},
    ext_modules=_extensions(),
    # Compile the extension modules side by side, one job per core.
    options={"build_ext": {"parallel": os.cpu_count() or 1}},
)
