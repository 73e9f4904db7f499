#!/usr/bin/env bash
# Run the test suite N times in a row while busy-loop processes keep the CPU cores loaded.
#
#   tests/stress.sh                  # the whole suite, 3 runs, 2 busy loops
#   tests/stress.sh 5 tests/test_scale_out.py -x   # 5 runs of one file (extra args go to pytest)
#   LOAD=4 tests/stress.sh           # 4 busy loops instead of 2
#
# Stops at the first failing run (exit status = pytest's). The busy loops are stopped on any
# exit (normal end, failure, Ctrl-C, kill), and each one also ends on its own after
# MAX_SECONDS (default 3 h) in case this script is killed with -9.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${1:-3}"
shift || true
LOAD="${LOAD:-2}"
MAX_SECONDS="${MAX_SECONDS:-10800}"
PYTHON="${PYTHON:-python}"

busy=()
stop_busy() {
  for pid in "${busy[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${busy[@]}"; do wait "$pid" 2>/dev/null || true; done
  busy=()
}
trap stop_busy EXIT
trap 'exit 130' INT TERM

for _ in $(seq "$LOAD"); do
  "$PYTHON" -c "
import time
end = time.monotonic() + $MAX_SECONDS
while time.monotonic() < end:
    pass
" &
  busy+=("$!")
done
echo "stress: ${#busy[@]} busy loops (pids ${busy[*]}), $RUNS runs of: pytest $*"

for run in $(seq "$RUNS"); do
  start=$(date +%s)
  echo "stress: run $run/$RUNS"
  status=0
  "$PYTHON" -m pytest -q -p no:cacheprovider "$@" || status=$?
  echo "stress: run $run/$RUNS exit $status after $(($(date +%s) - start)) s"
  if [ "$status" -ne 0 ]; then
    echo "stress: FAILED on run $run"
    exit "$status"
  fi
done
echo "stress: all $RUNS runs passed under load"
