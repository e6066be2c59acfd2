#!/usr/bin/env bash
# Regenerate the Python protobuf/gRPC modules in proto/ from proto/*.proto.
#
#   scripts/gen_proto.sh           regenerate proto/*_pb2*.py(i) in place
#   scripts/gen_proto.sh --check   regenerate into a temp dir and diff against
#                                  the committed files; exit 1 if they differ
#
# The interpreter is ${PYTHON:-python3}; it must have grpcio-tools installed.
# The generated files depend on the grpcio-tools (protoc) version, so --check
# only passes with the same grpcio-tools version that produced the committed
# files (see the "Protobuf Python Version" header in proto/*_pb2.py).
#
# The sources are laid out as mlserve/proto/*.proto in a temp dir so that the
# files register under "mlserve/proto/..." and the generated imports read
# `from mlserve.proto import ...` (proto/ is installed as mlserve.proto).
#
# The .proto files declare `package inference` (the wire contract: the gRPC
# service path is /inference.GRPCInferenceService/...). The Python modules are
# generated with the package renamed to `mlserve.inference`, so their message
# full names never collide with tritonclient's (or MLServer's) in one process.
# Protobuf full names do not travel on the wire; the server registers its
# handlers and the client calls under the `inference.` service path explicitly.
# For the same reason no *_pb2_grpc.py is generated (it would carry the
# renamed service path).
set -euo pipefail

PYTHON="${PYTHON:-python3}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROTO_DIR="$ROOT/proto"

# Generated files, relative to proto/.
GENERATED=(
    grpc_service_pb2.py
    grpc_service_pb2.pyi
    model_config_pb2.py
    model_config_pb2.pyi
)

usage() {
    sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

check=0
for arg in "$@"; do
    case "$arg" in
        --check) check=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gen_proto.sh: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
    esac
done

if ! "$PYTHON" -c 'import grpc_tools.protoc' 2>/dev/null; then
    echo "gen_proto.sh: '$PYTHON' cannot import grpc_tools; pip install grpcio-tools" >&2
    exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
src="$tmp/src"
out="$tmp/out"
mkdir -p "$src/mlserve/proto" "$out"
cp "$PROTO_DIR/model_config.proto" "$PROTO_DIR/grpc_service.proto" "$src/mlserve/proto/"
sed -i 's/^package inference;$/package mlserve.inference;/' "$src"/mlserve/proto/*.proto

# Run from the temp source root so every path protoc records is relative and
# the output does not depend on where the repository is checked out.
(
    cd "$src"
    # model_config.proto has no services: no *_pb2_grpc.py for it.
    "$PYTHON" -m grpc_tools.protoc -I. \
        --python_out="$out" --pyi_out="$out" \
        mlserve/proto/model_config.proto
    "$PYTHON" -m grpc_tools.protoc -I. \
        --python_out="$out" --pyi_out="$out" \
        mlserve/proto/grpc_service.proto
)

gen="$out/mlserve/proto"
for f in "${GENERATED[@]}"; do
    if [[ ! -f "$gen/$f" ]]; then
        echo "gen_proto.sh: protoc did not produce $f" >&2
        exit 2
    fi
done

if [[ "$check" == 1 ]]; then
    status=0
    for f in "${GENERATED[@]}"; do
        if [[ ! -f "$PROTO_DIR/$f" ]]; then
            echo "gen_proto.sh: proto/$f is missing" >&2
            status=1
            continue
        fi
        if ! diff -u --label "proto/$f (committed)" --label "proto/$f (regenerated)" \
                "$PROTO_DIR/$f" "$gen/$f"; then
            status=1
        fi
    done
    if [[ "$status" != 0 ]]; then
        echo "gen_proto.sh: generated files are stale; run scripts/gen_proto.sh" >&2
        exit 1
    fi
    echo "gen_proto.sh: generated files are up to date"
    exit 0
fi

for f in "${GENERATED[@]}"; do
    cp "$gen/$f" "$PROTO_DIR/$f"
done
echo "gen_proto.sh: wrote ${GENERATED[*]/#/proto/}"
