#!/usr/bin/env bash
# The wheels a GPU machine without a package index needs: into the git-ignored .whl/, Python 3.12
# manylinux x86-64 wheels of what the device run imports (benchmarks/device_deps.py) and its
# dependencies, less what the GPU image holds (benchmarks/gpu_image.txt, whose versions also
# constrain the resolution). Pure-Python packages published as source only are built into wheels
# here. benchmarks/device_env.sh installs them on the machine where an import is missing.
#
#   benchmarks/device_bundle.sh            (PYTHON=... any Python >= 3.11 with pip, default python3)
#
# Needs the package index; .whl/ is replaced only once the new set is complete and within 20 MB.
# Last line of stdout: one JSON object (wheels, MB, names).
set -euo pipefail
unset PYTHONPATH
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
IMAGE=benchmarks/gpu_image.txt
LIMIT_MB=20
SOURCE_ONLY=(promise)   # pure Python, no wheel on the index (tensorflow-datasets needs it)

target=(--only-binary=:all: --python-version 3.12 --implementation cp
        --platform manylinux1_x86_64 --platform manylinux2010_x86_64
        --platform manylinux2014_x86_64)
for n in $(seq 17 39); do   # pip matches manylinux_2_N exactly; the image's glibc is newer
  target+=(--platform "manylinux_2_${n}_x86_64")
done
work=$(mktemp -d "${TMPDIR:-/tmp}/device_bundle.XXXXXX")
trap 'rm -rf "$work"' EXIT
pip=("$PYTHON" -m pip -q --disable-pip-version-check)

"${pip[@]}" wheel --no-deps -w "$work/built" "${SOURCE_ONLY[@]}" >&2
for wheel in "$work"/built/*.whl; do
  case "$wheel" in
    *-none-any.whl) ;;
    *) echo "error: $wheel is not pure Python: it cannot be built here for the image" >&2
       exit 1 ;;
  esac
done
mapfile -t wanted < <("$PYTHON" benchmarks/device_deps.py requirements)
# The whole set, resolved as the image would install it (its packages pinned by the constraints).
"${pip[@]}" install --dry-run --ignore-installed --target "$work/unused" \
  --report "$work/report.json" "${target[@]}" \
  --find-links "$work/built" -c "$IMAGE" "${wanted[@]}" >&2
mapfile -t carry < <("$PYTHON" - "$work/report.json" "$IMAGE" <<'EOF'
import json, re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
image = {norm(line.split("==")[0]) for line in open(sys.argv[2])
         if line.strip() and not line.startswith("#")}
for item in json.load(open(sys.argv[1]))["install"]:
    meta = item["metadata"]
    if norm(meta["name"]) not in image:
        print(f"{meta['name']}=={meta['version']}")
EOF
)
if [ ${#carry[@]} -eq 0 ]; then
  echo "error: the image holds every package the device run needs: nothing to carry" >&2
  exit 1
fi
"${pip[@]}" download --no-deps "${target[@]}" --find-links "$work/built" -d "$work/whl" \
  "${carry[@]}" >&2
mb=$(du -sm "$work/whl" | cut -f1)
if [ "$mb" -gt $LIMIT_MB ]; then
  echo "error: the bundle is $mb MB, over $LIMIT_MB MB: ${carry[*]}" >&2
  exit 1
fi
rm -rf .whl.old
[ -d .whl ] && mv .whl .whl.old
mv "$work/whl" .whl && rm -rf .whl.old
printf '{"wheels": %d, "mb": %s, "bytes": %d, "packages": "%s"}\n' "${#carry[@]}" "$mb" \
  "$(cat .whl/*.whl | wc -c)" "${carry[*]}"
