#!/usr/bin/env bash
# Reproducible install of Triton's perf_analyzer for benchmarking mlserve.
#
# perf_analyzer ships as a prebuilt binary inside the tritonclient wheel
# (tritonclient-<ver>.data/data/bin/perf_analyzer -> <venv>/bin/perf_analyzer);
# it is in the base wheel, no extra is needed. 2.51.0 is the newest release
# whose binary runs on Debian 12 (glibc 2.36); later wheels need glibc 2.38.
# The binary dynamically links libb64.so.0d (Debian: libb64-0d) and
# libcudart.so.12 (PyPI: nvidia-cuda-runtime-cu12), even without a GPU.
# It lives in its own venv because tritonclient 2.51 pins numpy<2.
#
# Idempotent: safe to re-run. Environment overrides:
#   PA_VENV           venv location        (default: <repo>/.venv-perf-analyzer)
#   PA_PYTHON         interpreter for venv (default: python3)
#   PA_TRITONCLIENT   tritonclient version (default: 2.51.0)
#   PA_CUDART         nvidia-cuda-runtime-cu12 version (default: 12.6.77,
#                     the CUDA 12.6 runtime that Triton 24.10 / 2.51 was built with)
#   PA_FORCE=1        re-run pip install even if everything looks installed
set -euo pipefail

HERE="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${PA_VENV:-$REPO/.venv-perf-analyzer}"
PYTHON="${PA_PYTHON:-python3}"
TC_VER="${PA_TRITONCLIENT:-2.51.0}"
CUDART_VER="${PA_CUDART:-12.6.77}"

log() { printf '[perf_analyzer setup] %s\n' "$*" >&2; }

# --- 1. Debian packages (only those missing) ---------------------------------
APT_PKGS=(libb64-0d libssl3 zlib1g libstdc++6)
missing=()
for p in "${APT_PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { log "need root (or sudo) to install: ${missing[*]}"; exit 1; }
    SUDO=(sudo)
  fi
  log "apt-get install ${missing[*]}"
  "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  log "Debian packages present: ${APT_PKGS[*]}"
fi

# --- 2. venv -----------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating venv $VENV (with $PYTHON: $("$PYTHON" --version 2>&1))"
  "$PYTHON" -m venv "$VENV"
else
  log "venv exists: $VENV"
fi

# --- 3. pip packages (skip when already at the wanted versions) ---------------
installed_ver() { "$VENV/bin/python" -c 'import sys
from importlib.metadata import version, PackageNotFoundError
try: print(version(sys.argv[1]))
except PackageNotFoundError: pass' "$1"; }

if [[ "${PA_FORCE:-0}" != 1 && -x "$VENV/bin/perf_analyzer" \
      && "$(installed_ver tritonclient)" == "$TC_VER" \
      && "$(installed_ver nvidia-cuda-runtime-cu12)" == "$CUDART_VER" ]]; then
  log "tritonclient==$TC_VER and nvidia-cuda-runtime-cu12==$CUDART_VER already installed"
else
  log "pip install tritonclient==$TC_VER nvidia-cuda-runtime-cu12==$CUDART_VER"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    "tritonclient==$TC_VER" "nvidia-cuda-runtime-cu12==$CUDART_VER"
fi

# --- 4. prove it starts ------------------------------------------------------
# 2.51.0 has no real --help option: it prints "unrecognized option '--help'",
# then the full usage, and exits 99. So check the text, not the exit status.
log "checking: $HERE/perf_analyzer --help"
out="$(PA_VENV="$VENV" "$HERE/perf_analyzer" --help 2>&1)" || true
if ! grep -q -- '--concurrency-range' <<<"$out"; then
  printf '%s\n' "$out" >&2
  log "FAILED: perf_analyzer --help did not print its usage"
  exit 1
fi
printf '%s\n' "$out" | head -n 5
PA_VENV="$VENV" "$HERE/perf_analyzer" --version
log "OK: perf_analyzer is ready: $HERE/perf_analyzer"
