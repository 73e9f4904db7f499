#!/usr/bin/env bash
# Run the test suite N times in a row while busy-loop processes keep the CPU cores loaded.
#
#   tests/stress.sh                  # the whole suite, 3 runs, 2 busy loops
#   tests/stress.sh 5 tests/test_scale_out.py -x   # 5 runs of one file (extra args go to pytest)
#   LOAD=4 tests/stress.sh           # 4 busy loops instead of 2
#
# Stops at the first failing run (exit status = pytest's). On any exit (normal end, failure,
# Ctrl-C, kill) it interrupts a running pytest (SIGINT, so test hubs are stopped; SIGTERM after
# 30 s) and stops the busy loops; each loop also ends on its own after MAX_SECONDS (default
# 3 h) in case this script is killed with -9.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${1:-3}"
shift || true
LOAD="${LOAD:-2}"
MAX_SECONDS="${MAX_SECONDS:-10800}"
PYTHON="${PYTHON:-python}"

set -m  # jobs of their own: pytest gets SIGINT from us (and stops its hubs), not ignored
busy=()
run_pid=""
stop_busy() {
  for pid in "${busy[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${busy[@]}"; do wait "$pid" 2>/dev/null || true; done
  busy=()
}
stop_run() {
  [ -n "$run_pid" ] || return 0
  kill -INT "$run_pid" 2>/dev/null || true  # KeyboardInterrupt: the fixtures stop their hubs
  for _ in $(seq 30); do kill -0 "$run_pid" 2>/dev/null || break; sleep 1; done
  kill -TERM "$run_pid" 2>/dev/null || true
  wait "$run_pid" 2>/dev/null || true
  run_pid=""
}
trap 'stop_busy; stop_run' EXIT
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
  "$PYTHON" -m pytest -q -p no:cacheprovider "$@" &
  run_pid=$!
  wait "$run_pid" || status=$?
  run_pid=""
  echo "stress: run $run/$RUNS exit $status after $(($(date +%s) - start)) s"
  if [ "$status" -ne 0 ]; then
    echo "stress: FAILED on run $run"
    exit "$status"
  fi
done
echo "stress: all $RUNS runs passed under load"
