#!/usr/bin/env bash
# Run the timing-sensitive tests N times while every core is kept busy by
# another process, and report how many runs failed.
#
#   scripts/stress-tests.sh                 5 runs of the default set
#   scripts/stress-tests.sh 10              10 runs
#   scripts/stress-tests.sh 3 tests/unit    3 runs of the tests named
#
# The busy processes are plain Python spin loops, one per core this script may
# use (nproc), at the same priority as the tests: a test that only passes on
# an idle machine fails here. Each run's pytest output goes to
# ${STRESS_LOG_DIR:-build/stress}/run-K.log; the summary names the failed tests.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${MLSERVE_VENV:-.venv}/bin/python
RUNS=${1:-5}
shift || true
if [ $# -eq 0 ]; then
    set -- tests/integration/test_batching.py tests/integration/test_queueing.py \
        tests/integration/test_native_transport.py \
        tests/unit/test_batcher.py tests/unit/test_batcher_inline.py
fi
LOG_DIR=${STRESS_LOG_DIR:-build/stress}
mkdir -p "$LOG_DIR"

busy=()
for _ in $(seq "$(nproc)"); do
    "$PY" -c 'while True: pass' &
    busy+=($!)
done
trap 'kill "${busy[@]}" 2>/dev/null; wait 2>/dev/null' EXIT
echo "stress: ${#busy[@]} busy processes (one per core), $RUNS runs of: $*"

failed=0
for run in $(seq "$RUNS"); do
    log="$LOG_DIR/run-$run.log"
    if "$PY" -m pytest -q "$@" >"$log" 2>&1; then
        echo "run $run: passed ($(tail -1 "$log"))"
    else
        failed=$((failed + 1))
        echo "run $run: FAILED ($(tail -1 "$log"))"
        grep -E '^(FAILED|ERROR) ' "$log" | sed 's/^/    /'
    fi
done
echo "stress: $failed of $RUNS runs failed"
[ "$failed" -eq 0 ]
