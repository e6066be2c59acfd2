#!/usr/bin/env bash
# The test suite: unit and integration tests against real server processes
# (with tritonclient, grpcio, and KServe's own client from .venv-kserve),
# then the unit tests again with the Cython extensions switched off
# (MLSERVE_NO_EXTENSIONS=1), so both twins of every accelerator are exercised.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${MLSERVE_VENV:-.venv}/bin/python
# KServe's own client runs from its own venv (it cannot share a process with
# tritonclient): tests/integration/test_kserve_client.py. Seconds when present.
benchmarks/peers/setup.sh kserve
"$PY" -m pytest "$@"
MLSERVE_NO_EXTENSIONS=1 "$PY" -m pytest -q tests/unit
