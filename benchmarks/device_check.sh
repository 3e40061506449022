#!/usr/bin/env bash
# The accelerator check: what matters about a device in under 8 minutes, each part ending with
# one JSON line ("part": env, peak, train_mfu, train_remat, sampling, kv_cache). The study (data,
# grid, evaluation, report) is benchmarks/device_run.sh's.
#
#   benchmarks/device_check.sh [--smoke] [--workdir=DIR]      (PYTHON=... picks the interpreter)
#
# Parts run in their own processes, each under a time cap, so one failing part reports an error
# line and the rest still run; the exit status is non-zero if any part failed. Caps on one
# H100/H200-class GPU: env and peak 40 s, training MFU and remat 240 s, sampling and KV cache
# 180 s.
# --smoke runs every part at tiny sizes on a CPU, uncapped, in one process (the test suite
# does, so the script cannot rot).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
source benchmarks/device_env.sh || exit 2   # packages checked (and carried) before any work
args=()
workdir=""
smoke=0
for arg in "$@"; do
  case "$arg" in
    --smoke) args+=("--smoke"); smoke=1 ;;
    --workdir=*) workdir="${arg#--workdir=}" ;;
    *) echo "usage: $0 [--smoke] [--workdir=DIR]" >&2; exit 2 ;;
  esac
done
workdir=${workdir:-$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")}
mkdir -p "$workdir"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
echo "device check: workdir $workdir" >&2

failed=0
part() {   # part SECONDS NAME [ARGS]   (0 s: no cap, for --smoke on a shared CPU)
  local cap=$1 name=$2
  shift 2
  # shellcheck disable=SC2086  (NAME may list several parts)
  timeout --kill-after=10 "$cap" "$PYTHON" benchmarks/device_check.py $name \
    --workdir="$workdir" "${args[@]}" "$@"
  local rc=$?
  if [ $rc -ne 0 ]; then
    failed=1
    echo "{\"part\": \"$name\", \"error\": \"exit status $rc$([ $rc -eq 124 ] && echo ": over the $cap s cap")\"}"
  fi
}
if [ $smoke -eq 1 ]; then   # one process: the tiny parts share their compilations
  part 0 "env train sample"
else
  part 40 env
  part 240 train
  part 180 sample
fi
exit $failed
