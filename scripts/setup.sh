#!/usr/bin/env bash
# Set up mlserve on a fresh Debian 12 machine: system packages, a virtual
# environment in .venv with mlserve (editable, Cython extensions compiled) and
# its test tools, and the example model repository in examples/models.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${MLSERVE_VENV:-.venv}

# Debian packages: a C compiler and libnghttp2's headers for the Cython extensions
# (the native gRPC transport links libnghttp2), and the load tools the benchmarks
# use. Installed only when missing, so a warm machine skips apt.
need=()
command -v gcc >/dev/null || need+=(gcc)
[ -f /usr/include/nghttp2/nghttp2.h ] || need+=(libnghttp2-dev)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[dev]'
"$VENV/bin/python" -m mlserve.examples examples/models
echo "mlserve is set up: $("$VENV/bin/mlserve" --version)"
