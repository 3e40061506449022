"""The GPU image on a CPU: a Python 3.12 virtualenv holding exactly benchmarks/gpu_image.txt's
packages (PyPI's CPU build of jaxlib standing in for the CUDA one), where the device run is
rehearsed as the image would run it (tests/test_device_rehearsal.py).

    python benchmarks/device_image.py [--python=PYTHON3.12]    builds it once, prints its python

It is kept in the cache dir under the image file's hash, so it is built once per file; .ci/run
builds it before the tests, as it installs the suite's own packages. Standard library only.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import os
import shutil
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = os.path.join(REPO_ROOT, "benchmarks", "gpu_image.txt")


def python312() -> str | None:
    """A Python 3.12: IMGSYNTH_PY312, python3.12 on PATH, or pyenv's; None if there is none."""
    candidates = [os.environ.get("IMGSYNTH_PY312"), shutil.which("python3.12"),
                  *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))]
    for path in filter(None, candidates):
        try:
            ok = subprocess.run([path, "-c", "import sys; assert sys.version_info[:2] == (3, 12)"],
                                capture_output=True, timeout=60).returncode == 0
        except OSError:
            ok = False
        if ok:
            return path
    return None


def venv(python: str) -> str:
    """The cached virtualenv holding exactly the image file's packages (its python)."""
    with open(IMAGE, "rb") as f:
        key = hashlib.sha256(f.read()).hexdigest()[:16]
    cache = os.path.join(os.path.expanduser(os.environ.get("XDG_CACHE_HOME", "~/.cache")),
                         "imgsynth", f"gpu-image-venv-{key}")
    if not os.path.exists(os.path.join(cache, "complete")):
        tmp = f"{cache}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run([python, "-m", "venv", tmp], check=True)
        # --no-deps: exactly the file, which lists the image's packages with their dependencies.
        subprocess.run([os.path.join(tmp, "bin", "python"), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", "--no-deps", "-r", IMAGE], check=True)
        open(os.path.join(tmp, "complete"), "w").close()
        shutil.rmtree(cache, ignore_errors=True)
        os.rename(tmp, cache)   # the venv's python is always run as bin/python: renaming is safe
    return os.path.join(cache, "bin", "python")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--python", help="a Python 3.12 (default: IMGSYNTH_PY312, PATH, pyenv)")
    args = p.parse_args()
    python = args.python or python312()
    if python is None:
        print("error: no Python 3.12 found: put python3.12 on PATH, install it with pyenv, or "
              "set IMGSYNTH_PY312", file=sys.stderr)
        return 2
    print(venv(python))
    return 0


if __name__ == "__main__":
    sys.exit(main())
