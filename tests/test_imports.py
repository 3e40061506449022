"""What importing a module pulls in: the launcher and the shared file helpers start no JAX.

The launcher runs on login nodes and in job wrappers, and `--dry_run`/`--status` answer in a second
there; a heavy import would also make every job wrapper load a framework it never uses. Checked in
a clean interpreter: in this process conftest has imported jax already.
"""
import subprocess
import sys

import pytest

from launch import grid as grid_lib

LIGHT_MODULES = ("imgsynth.io", "launch", "launch.runs", "launch.local", "launch.slurm",
                 "launch.tpu", "launch.grid", "launch.memory", "launch.study", "launch.__main__")
HEAVY = ("jax", "flax", "tensorflow")


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_module_imports_no_framework(module):
    check = (f"import sys, {module}; "
             f"loaded = [m for m in {HEAVY!r} if m in sys.modules]; "
             "assert not loaded, loaded")
    p = subprocess.run([sys.executable, "-c", check], cwd=grid_lib.REPO_ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 0, f"importing {module} loads {p.stderr.strip().splitlines()[-1:]}"
