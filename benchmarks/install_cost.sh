#!/usr/bin/env bash
# What a newcomer's install costs: `pip install -e ".[test]"` in a fresh clone at REV, cold (a
# new HOME and TMPDIR, so pip's cache is empty), into a new virtualenv.
#
#   benchmarks/install_cost.sh [REV] [EXTRAS]      (REV defaults to HEAD, EXTRAS to "test";
#                                                   PYTHON=... picks the interpreter, python3.11)
#
# Last line of stdout: one JSON object with the seconds pip took, the environment's size in MB,
# whether TensorFlow is in it, the revision and the load average before and after.
set -euo pipefail
unset PYTHONPATH VIRTUAL_ENV
repo=$(cd "$(dirname "$0")/.." && pwd)
rev=${1:-HEAD}
extras=${2:-test}
python=${PYTHON:-python3.11}
root=$(mktemp -d "${TMPDIR:-/tmp}/install_cost.XXXXXX")
trap 'rm -rf "$root"' EXIT
commit=$(git -C "$repo" rev-parse --short "$rev")
git clone -q "$repo" "$root/clone"
git -C "$root/clone" checkout -q "$commit"
mkdir -p "$root/home" "$root/tmp"
load_before=$(cut -d' ' -f1 /proc/loadavg)
cd "$root/clone"
start=$(date +%s.%N)
HOME="$root/home" TMPDIR="$root/tmp" "$python" -m venv "$root/venv"
HOME="$root/home" TMPDIR="$root/tmp" "$root/venv/bin/python" -m pip install -q -e ".[$extras]" >&2
end=$(date +%s.%N)
load_after=$(cut -d' ' -f1 /proc/loadavg)
size_mb=$(du -sm "$root/venv" | cut -f1)
tf=$("$root/venv/bin/python" -c \
  "import importlib.util as u; print('true' if u.find_spec('tensorflow') else 'false')")
printf '{"rev": "%s", "extras": "%s", "python": "%s", "install_s": %.1f, "env_mb": %s, ' \
  "$commit" "$extras" "$("$root/venv/bin/python" -V 2>&1 | cut -d' ' -f2)" \
  "$(python3 -c "print($end - $start)")" "$size_mb"
printf '"tensorflow": %s, "load_before": %s, "load_after": %s}\n' "$tf" "$load_before" "$load_after"
