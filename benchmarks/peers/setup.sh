#!/usr/bin/env bash
# Reproducible install of the two peer servers the benchmark compares mlserve
# against, each in its own venv (they cannot share one with mlserve's dev venv:
# `mlserver` and `tritonclient.grpc` register the same proto symbols):
#   <repo>/.venv-mlserver  MLServer 1.7.1 + onnxruntime   (mlserver_peer.py, mlserver_onnx.py)
#   <repo>/.venv-kserve    KServe 0.21.0 + onnxruntime    (kserve_onnx.py)
#
# uvloop is pinned to 0.21.0 for MLServer: with uvloop 0.23 MLServer 1.7.1's
# workers crash at start ("There is no current event loop"). KServe 0.21.0 is
# the newest release on PyPI and installs on Python 3.11 / glibc 2.36.
# Transitive packages are held to what was tested by constraints-<peer>.txt
# (a pip freeze), so a fresh setup gets the same stack.
#
# `setup.sh` sets up both; `setup.sh kserve` only KServe's (the test suite runs
# KServe's own Python client from it: tests/integration/test_kserve_client.py).
#
# Idempotent: a venv whose pinned packages are already at the wanted versions
# is left alone (a second run takes seconds). Environment overrides:
#   PEERS_PYTHON   interpreter for the venvs (default: python3)
#   PEERS_FORCE=1  re-run pip install even if everything looks installed
set -euo pipefail

HERE="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PYTHON="${PEERS_PYTHON:-python3}"

MLSERVER_PINS=(mlserver==1.7.1 uvloop==0.21.0 onnxruntime==1.32.0 numpy==2.4.6)
KSERVE_PINS=(kserve==0.21.0 onnxruntime==1.32.0 numpy==2.4.6)

log() { printf '[peers setup] %s\n' "$*" >&2; }

installed_ver() { # venv package
  "$1/bin/python" -c 'import sys
from importlib.metadata import version, PackageNotFoundError
try: print(version(sys.argv[1]))
except PackageNotFoundError: pass' "$2"
}

# setup_venv NAME IMPORTS PIN...: venv <repo>/.venv-NAME with the pins, then import IMPORTS.
setup_venv() {
  local name="$1" imports="$2"
  shift 2
  local venv="$REPO/.venv-$name" constraints="$HERE/constraints-$name.txt"
  if [[ ! -x "$venv/bin/python" ]]; then
    log "creating $venv (with $PYTHON: $("$PYTHON" --version 2>&1))"
    "$PYTHON" -m venv "$venv"
  fi
  local pin missing=()
  for pin in "$@"; do
    [[ "$(installed_ver "$venv" "${pin%%==*}")" == "${pin#*==}" ]] || missing+=("$pin")
  done
  if [[ "${PEERS_FORCE:-0}" != 1 && ${#missing[@]} -eq 0 ]]; then
    log "$name: already installed: $*"
  else
    log "$name: pip install $* (constraints: ${constraints#"$REPO"/})"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -c "$constraints" "$@"
  fi
  "$venv/bin/python" -c "import $imports" || { log "$name: import $imports FAILED"; exit 1; }
  log "$name: OK ($venv: $(installed_ver "$venv" "${1%%==*}"))"
}

peers=("$@")
[[ ${#peers[@]} -gt 0 ]] || peers=(mlserver kserve)
for peer in "${peers[@]}"; do
  case "$peer" in
    mlserver) setup_venv mlserver "mlserver, onnxruntime, numpy, uvloop" "${MLSERVER_PINS[@]}" ;;
    kserve) setup_venv kserve "kserve, onnxruntime, numpy" "${KSERVE_PINS[@]}" ;;
    *) log "unknown peer: $peer (mlserver, kserve)"; exit 2 ;;
  esac
done
log "peers ready: ${peers[*]/#/$REPO/.venv-}"
