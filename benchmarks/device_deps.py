"""What the device run needs from its interpreter: the shared part of device_env.sh and
device_bundle.sh, standard library only (it runs before anything is known to import).

    python benchmarks/device_deps.py requirements     the device run's requirements, one a line
    python benchmarks/device_deps.py missing          those this interpreter lacks (empty: none)
    python benchmarks/device_deps.py wanted WHEEL...  the wheels whose version is not installed

The requirements are pyproject.toml's dependencies less those the device run never imports
(submitit: the SLURM backend's, imported there alone). `missing` imports each one's module, so a
package whose own dependency is absent counts as missing too.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import sys
import tomllib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_IMPORTED_ON_DEVICE = {"submitit"}
MODULES = {"orbax-checkpoint": "orbax.checkpoint", "tensorflow-datasets": "tensorflow_datasets",
           "pillow": "PIL"}


def requirements() -> list[tuple[str, str]]:
    """(name, minimum version) of each dependency the device run imports."""
    with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    out = []
    for dep in deps:
        match = re.fullmatch(r"([A-Za-z0-9._-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)", dep)
        if not match:
            raise ValueError(f"pyproject dependency {dep!r}: only 'name>=version' is understood")
        if match[1].lower() not in NOT_IMPORTED_ON_DEVICE:
            out.append((match[1].lower(), match[2]))
    return out


def _release(version: str) -> tuple[int, ...]:
    """The numeric release: "0.12.0.1" → (0, 12, 0, 1), "2.21.0rc1" → (2, 21, 0)."""
    return tuple(int(re.match(r"\d+", part)[0]) for part in version.split(".")
                 if re.match(r"\d+", part))


def problem(name: str, minimum: str) -> str | None:
    """Why `name>=minimum` is not met here, or None."""
    try:
        importlib.import_module(MODULES.get(name, name.replace("-", "_")))
        version = importlib.metadata.version(name)
    except Exception as e:  # any import failure, a missing dependency's included
        return f"{name}>={minimum} ({type(e).__name__}: {' '.join(str(e).split())})"
    if _release(version) < _release(minimum):
        return f"{name}>={minimum} (found {version})"
    return None


def wanted(wheels: list[str]) -> list[str]:
    """The wheels whose distribution is not installed here at the wheel's version."""
    out = []
    for wheel in wheels:
        name, version = os.path.basename(wheel).split("-")[:2]
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            have = None
        if have != version:
            out.append(wheel)
    return out


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "requirements":
        print("\n".join(f"{name}>={minimum}" for name, minimum in requirements()))
    elif command == "missing":
        problems = [p for p in (problem(*r) for r in requirements()) if p]
        print("; ".join(problems))
    elif command == "wanted":
        print("\n".join(wanted(argv[1:])))
    else:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
