#!/usr/bin/env bash
# One set-up phase (apt packages, venv, a Go build, the images, ...) as one line of output:
#   localcluster/phase.sh NAME "what it does" [--expect "8-15 min cold"] -- COMMAND [ARGS...]
# The command's whole output goes to .cluster/logs/NAME.log (path printed); the line says how long
# the last successful run took (kept in ~/.cache/onnx-operator/setup-times/) or, before any, --expect.
# On a terminal the line is redrawn every second with the elapsed time and the command's latest
# progress line (one starting with "["). On failure the log's last lines and its path are printed.
# V=1 prints the command's output as it comes (and still writes the log).
set -uo pipefail
name=${1:?usage: phase.sh NAME WHAT [--expect TEXT] -- COMMAND...}
what=${2:?usage: phase.sh NAME WHAT [--expect TEXT] -- COMMAND...}
shift 2
expect=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case "$1" in
    --expect) expect=$2; shift 2 ;;
    *) echo "phase.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "phase.sh: no command given for $name" >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
logs=${ONNX_OPERATOR_SETUP_LOGS:-$repo/.cluster/logs}
times=${ONNX_OPERATOR_CACHE:-$HOME/.cache/onnx-operator}/setup-times
mkdir -p "$logs" "$times"
log=$logs/$name.log
shown=${log#"$PWD"/}
last=$(cat "$times/$name" 2>/dev/null || true)
if [ -n "$last" ]; then hint="last run ${last}s"; else hint=${expect:-first run}; fi
head=$(printf '==> %-12s %s (%s)' "$name" "$what" "$hint")
t0=$(date +%s)

if [ "${V:-0}" = "1" ]; then
  echo "$head: full output follows (also in $shown)"
  "$@" 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
elif [ -t 1 ]; then
  "$@" >"$log" 2>&1 </dev/null &
  pid=$!
  cols=$(tput cols 2>/dev/null || echo 120)
  while kill -0 "$pid" 2>/dev/null; do
    progress=$(grep -a '^\[' "$log" 2>/dev/null | tail -1 || true)
    line="$head ... $(( $(date +%s) - t0 ))s ${progress}"
    printf '\r\033[K%s' "${line:0:$((cols - 1))}"
    sleep 1
  done
  wait "$pid"
  status=$?
  printf '\r\033[K%s ...' "$head"
else
  printf '%s ...' "$head"
  "$@" >"$log" 2>&1 </dev/null
  status=$?
fi

took=$(( $(date +%s) - t0 ))
if [ "$status" -eq 0 ]; then
  echo "$took" >"$times/$name"
  [ "${V:-0}" = "1" ] && echo "==> $name: done in ${took}s" || echo " ok in ${took}s, log $shown"
else
  [ "${V:-0}" = "1" ] || echo " FAILED after ${took}s (exit $status)"
  if [ "${V:-0}" != "1" ]; then
    echo "---- last 30 lines of $shown ----"
    tail -n 30 "$log"
  fi
  echo "---- $name failed (exit $status); full log: $log ----"
fi
exit "$status"
