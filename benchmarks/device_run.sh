#!/usr/bin/env bash
# The GPU study in one call of at most 6 minutes on one GPU: data, stages, the gpu_study grid,
# the evaluation of every branch and the report, each step ending with one JSON line ("step":
# plan, env, peak, data, shipped, encode, grid, evaluate, report).
#
#   PYTHON=python3 benchmarks/device_run.sh [--plan|--rehearse] --out=DIR [--grid=FILE]
#                                           [--workdir=DIR] [--budget_s=360]
#
# --plan      print the itemised estimate of the whole call and stop; exit 2 (one line with its
#             seconds) if it exceeds the budget
# --rehearse  the same steps at tiny sizes on a CPU (size T, r32_tiny), no time limit
# --out       where the (at most 8) results go: results.csv, findings.md, report.html,
#             samples.png, steps.jsonl (the JSON lines), log_tail.txt
# The grid is stopped at the deadline less what evaluation and report need (the runs
# checkpoint), what finished is evaluated and reported. docs/launch.md, "The study on one GPU".
set -uo pipefail
{   # read whole before it runs: an edit of this file during a call cannot change the call
start=$(date +%s)   # the deadline counts the packages' check too
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
[ -f benchmarks/device_env.sh ] && source benchmarks/device_env.sh
mode=run out="" workdir="" budget_s=360 grid=()
for arg in "$@"; do
  case "$arg" in
    --plan) mode=plan ;;
    --rehearse) mode=rehearse ;;
    --out=*) out="${arg#--out=}" ;;
    --workdir=*) workdir="${arg#--workdir=}" ;;
    --budget_s=*) budget_s="${arg#--budget_s=}" ;;
    --grid=*) grid=("$arg") ;;
    *) echo "usage: $0 [--plan|--rehearse] --out=DIR [--grid=FILE] [--workdir=DIR]" \
         "[--budget_s=S]" >&2; exit 2 ;;
  esac
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
common=("${grid[@]}" --budget_s="$budget_s")
if [ "$mode" = plan ]; then
  exec "$PYTHON" benchmarks/device_run.py plan "${common[@]}"
fi
if [ -z "$out" ]; then
  echo "error: --out=DIR is required (where the results go)" >&2
  exit 2
fi
mkdir -p "$out"
workdir=${workdir:-$(mktemp -d "${TMPDIR:-/tmp}/device_run.XXXXXX")}
mkdir -p "$workdir"
common+=(--workdir="$workdir")
[ "$mode" = rehearse ] && common+=(--rehearse)
# The rehearsal is not timed; a run ends at start + budget_s.
REPORT_GRACE_S=60
deadline=$((start + $([ "$mode" = rehearse ] && echo 3600 || echo "$budget_s")))
log="$workdir/device_run.log"
echo "device run: workdir $workdir, deadline $(date -d "@$deadline" +%T)" >&2

# One process runs every step (benchmarks/device_run.py run); it stops the grid before the
# deadline and leaves the report REPORT_GRACE_S past it at most before it is killed.
: > "$out/steps.jsonl"
timeout --kill-after=10 $((deadline - $(date +%s) + REPORT_GRACE_S)) "$PYTHON" \
  benchmarks/device_run.py run "${common[@]}" --out="$out" --deadline="$deadline" \
  2>>"$log" | tee -a "$out/steps.jsonl"
failed=${PIPESTATUS[0]}
if [ "$failed" -eq 2 ]; then   # the plan refused the grid: its line says why
  tail -n 1 "$log" >&2
  exit 2
elif [ "$failed" -ne 0 ] && [ "$failed" -ne 1 ]; then
  echo "{\"step\": \"run\", \"error\": \"exit status $failed\", \"log\": \"$log\"}" \
    | tee -a "$out/steps.jsonl"
fi
tail -n 400 "$log" > "$out/log_tail.txt"
seconds=$(($(date +%s) - start))
echo "{\"step\": \"done\", \"seconds\": $seconds, \"exit\": $failed, \"out\": \"$out\"}" \
  | tee -a "$out/steps.jsonl"
exit $((failed != 0))
}
