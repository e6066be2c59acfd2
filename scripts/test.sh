#!/usr/bin/env bash
# The test suite: unit and integration tests against real server processes,
# then the unit tests again with the Cython extensions switched off
# (MLSERVE_NO_EXTENSIONS=1), so both twins of every accelerator are exercised.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${MLSERVE_VENV:-.venv}/bin/python
"$PY" -m pytest "$@"
MLSERVE_NO_EXTENSIONS=1 "$PY" -m pytest -q tests/unit
