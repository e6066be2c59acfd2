#!/usr/bin/env bash
# The GPU check, run on the device machine in one call (benchmarks/gpu/README.md):
# install onnxruntime-gpu and the carried wheels, build mlserve with its Cython
# extensions, run the GPU tests, then the GPU batching benchmark.
#
# Expects, from earlier calls of the same lease: /tmp/ortgpu holding the pieces
# of ../shared/gpu/prepare-onnxruntime-gpu.sh; in this checkout: .whl/ (wheels
# for CPython 3.12), .pylib/ (tritonclient's Python files), .deb/ (libnghttp2).
# Writes logs and results under $OUT. Never for CI.
set -uo pipefail
OUT=${OUT:-/tmp/mlserve-gpu-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/device_run.log") 2>&1
step() { echo "== $(date +%T) $*"; }
ROOT=$(pwd)

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 --version; nproc

step "onnxruntime-gpu"
(cd /tmp/ortgpu && cat part* > "$(cat WHEEL_NAME)" \
  && echo "$(cat SHA256)  $(cat WHEEL_NAME)" | sha256sum -c - \
  && python3 -m pip install -q --no-deps --no-index --target /tmp/site "$(cat WHEEL_NAME)") || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
cp -r .pylib/* /tmp/site/
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
# CUDA and cuDNN libraries from the image's nvidia-* wheels and toolkit: this
# onnxruntime is not installed beside them, so its relative rpath misses them.
NV=$(python3 -c "import nvidia; print(list(nvidia.__path__)[0])" 2>/dev/null)
NVLIBS=$( { [ -n "$NV" ] && find "$NV" -name 'lib*.so*' -printf '%h\n'; ls -d /usr/local/cuda/lib64 2>/dev/null; } | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH=${NVLIBS}${LD_LIBRARY_PATH:-}
python3 -c "
import onnxruntime as o
print(o.__version__, o.get_available_providers())"

step "libnghttp2 headers (native gRPC transport)"
mkdir -p /tmp/ng && for f in .deb/*.deb; do dpkg -x "$f" /tmp/ng; done
export C_INCLUDE_PATH=/tmp/ng/usr/include LIBRARY_PATH=/tmp/ng/usr/lib/x86_64-linux-gnu
ldconfig -p | grep -q 'libnghttp2.so.14' || export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/tmp/ng/usr/lib/x86_64-linux-gnu

step "build mlserve (editable, Cython extensions)"
if ! python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$OUT/build.log" 2>&1; then
  tail -30 "$OUT/build.log"
  step "the extensions did not build: pure-Python twins"
  MLSERVE_NO_EXTENSIONS=1 python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . || exit 1
fi
ls ext/*.so 2>/dev/null
python3 -c "
from mlserve.ext import batching, bytes_codec, infer_codec
print('kernels:', batching.IMPLEMENTATION, bytes_codec.IMPLEMENTATION, infer_codec.IMPLEMENTATION)"

python3 -c "
import onnxruntime as o
from mlserve import examples
s = o.InferenceSession(examples.mlp_model(), providers=['CUDAExecutionProvider', 'CPUExecutionProvider'])
print('a CUDA session runs on:', s.get_providers())"

step "GPU tests"
python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/integration/test_gpu.py \
  tests/unit/test_batching_kernels.py 2>&1 | tail -25

step "GPU batching benchmark"
timeout 420 python3 -m benchmarks.gpu --out "$OUT" "$@"
step "done"
