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


def test_status_of_a_grid_imports_no_framework(tmp_path):
    """`--status` reads run names and run files only: no config is built, so no JAX."""
    check = ("import sys; from launch import __main__ as m; "
             f"rc = m.main(['--grid=cpu_study', '--workdir={tmp_path}', '--status']); "
             f"loaded = [m for m in {HEAVY!r} if m in sys.modules]; "
             "assert rc == 0 and not loaded, (rc, loaded)")
    p = subprocess.run([sys.executable, "-c", check], cwd=grid_lib.REPO_ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr.strip().splitlines()[-1:]
    names = [r.name for r in grid_lib.load("cpu_study").runs]
    listed = [line.split()[0] for line in p.stdout.splitlines()[2:-2]]
    assert listed == names                      # the same runs, in the grid's order
    assert f"{len(names)} pending" in p.stdout
