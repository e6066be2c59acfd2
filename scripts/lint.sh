#!/usr/bin/env bash
# Lint and type-check: ruff (lint + format) on the tree, mypy --strict on the
# package (and plain mypy on benchmarks/), and the generated protobuf modules
# checked against proto/*.proto.
#
# mypy cannot follow setup.py's package_dir mapping (runtime/ -> mlserve.runtime),
# so it checks a shadow tree of symlinks laid out as the installed package.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MLSERVE_VENV:-.venv}
PY="$VENV/bin/python"

"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .

shadow=build/typecheck
rm -rf "$shadow"
mkdir -p "$shadow/mlserve"
for entry in mlserve/*; do
    ln -s "$PWD/$entry" "$shadow/mlserve/$(basename "$entry")"
done
for component in runtime router ext proto; do
    ln -s "$PWD/$component" "$shadow/mlserve/$component"
done
(cd "$shadow" && MYPYPATH=. "$PWD/../../$VENV/bin/mypy" --config-file ../../pyproject.toml \
    -p mlserve)

# benchmarks/ is not shipped: checked, but not under --strict.
"$VENV/bin/mypy" --config-file benchmarks/mypy.ini benchmarks/load benchmarks/micro benchmarks/peers benchmarks/judge benchmarks/rollout \
    benchmarks/gpu benchmarks/perf_analyzer/check_mlserve.py benchmarks/perf_analyzer/mlserve_process.py \
    benchmarks/perf_analyzer/pa_runs.py

PYTHON="$PWD/$PY" scripts/gen_proto.sh --check
