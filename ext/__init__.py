"""Cython accelerators for mlserve's per-request hot loops.

Each accelerator lives beside a pure-Python twin with the same behaviour
(`_<name>_py.py`); a selector module (`<name>.py`) picks the compiled one
unless `MLSERVE_NO_EXTENSIONS=1` is set or it was not built. The rest of the
code imports only the selectors."""
