# The device run's environment, checked before any data is built. Sourced at the top of the GPU
# scripts (benchmarks/device_check.sh, benchmarks/device_run.sh):
#
#   source benchmarks/device_env.sh || exit 2          (PYTHON=... picks the interpreter)
#
# With the interpreter in $PYTHON (default `python`) every package the device run imports must
# import at its pyproject.toml minimum or newer (benchmarks/device_deps.py). If all do, nothing
# changes: the image's own JAX, flax, optax and orbax run. If some do not, the wheels of the
# git-ignored .whl/ (made by benchmarks/device_bundle.sh where the package index is reachable)
# that the interpreter lacks at their version are installed, without the index and without
# dependencies, into IMGSYNTH_BUNDLE_DIR (default $TMPDIR/imgsynth-bundle; reused while .whl/ is
# unchanged), which goes first on PYTHONPATH. What is still missing then is one line on stderr
# naming it and the bundle command, and a non-zero status.

_imgsynth_device_env() {
  local repo py deps dir missing stamp tmp
  local -a wheels
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  py=${PYTHON:-python}
  deps="$repo/benchmarks/device_deps.py"
  missing=$("$py" "$deps" missing) || return 1
  [ -z "$missing" ] && return 0
  dir=${IMGSYNTH_BUNDLE_DIR:-${TMPDIR:-/tmp}/imgsynth-bundle}
  mapfile -t wheels < <(compgen -G "$repo/.whl/*.whl" | sort)
  if [ ${#wheels[@]} -gt 0 ]; then
    mapfile -t wheels < <("$py" "$deps" wanted "${wheels[@]}")
  fi
  stamp=$(printf '%s\n' "${wheels[@]##*/}" | cksum | cut -d' ' -f1)
  if [ ${#wheels[@]} -gt 0 ] && [ "$(cat "$dir/.bundle" 2>/dev/null)" != "$stamp" ]; then
    tmp="$dir.tmp.$$"   # installed beside it, then renamed: a half-done install is never used
    rm -rf "$tmp"
    if ! "$py" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
        --target "$tmp" "${wheels[@]}" >&2; then
      rm -rf "$tmp"
      echo "error: installing the .whl/ bundle into $dir failed (above); remake it with" \
        "benchmarks/device_bundle.sh" >&2
      return 1
    fi
    echo "$stamp" >"$tmp/.bundle"
    rm -rf "$dir" && mv "$tmp" "$dir"
    echo "device env: installed ${#wheels[@]} wheels of .whl/ into $dir" >&2
  fi
  if [ ${#wheels[@]} -gt 0 ]; then
    export PYTHONPATH="$dir${PYTHONPATH:+:$PYTHONPATH}"
    missing=$("$py" "$deps" missing) || return 1
  fi
  if [ -n "$missing" ]; then
    echo "error: the device run's packages are missing or too old for $py: $missing;" \
      "make the wheels with benchmarks/device_bundle.sh where the package index is reachable" \
      "and bring .whl/ along" >&2
    return 1
  fi
}
_imgsynth_device_env
