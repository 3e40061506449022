"""The device run rehearsed on the CPU as the GPU image would run it: a Python 3.12 virtualenv
holding only benchmarks/gpu_image.txt's packages (CPU builds of JAX), the .whl/ bundle installed
by benchmarks/device_env.sh, and `import tensorflow` failing.

The rehearsal needs a Python 3.12 (`python3.12` on PATH, pyenv's, or IMGSYNTH_PY312) and the
bundle (benchmarks/device_bundle.sh); without them it is skipped with a message naming what is
missing, except where IMGSYNTH_REQUIRE_PY312=1 (CI) makes that a failure. The virtualenv
(benchmarks/device_image.py) is kept in the cache dir under the image file's hash: built once,
by .ci/run before the tests, or here on the first run.
"""
import glob
import os
import shutil
import subprocess
import sys

import pytest

from test_device_run import check_rehearsal

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import device_image  # noqa: E402

ENV_SCRIPT = os.path.join("benchmarks", "device_env.sh")
# Where the image has no TensorFlow: every attempt to import it is recorded (a guarded one too)
# and fails.
NO_TENSORFLOW = """import os, traceback
with open(os.environ.get("IMGSYNTH_TENSORFLOW_ATTEMPTS", os.devnull), "a") as f:
    f.write("".join(traceback.format_stack()) + "\\n")
raise ModuleNotFoundError("No module named 'tensorflow' (the GPU image has none)")
"""


def _missing(what: str) -> None:
    if os.environ.get("IMGSYNTH_REQUIRE_PY312", "") not in ("", "0"):
        pytest.fail(f"the device rehearsal is required here but {what}")
    pytest.skip(f"device rehearsal: {what}")


def _env(**extra) -> dict:
    """The caller's environment without the suite's fake devices and import path."""
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                     if not f.startswith("--xla_force_host_platform_device_count"))
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTHONPATH")}
    return {**env, **({"XLA_FLAGS": flags} if flags else {}), **extra}


@pytest.mark.slow
def test_rehearsal_on_python312_with_the_bundle_alone(tmp_path):
    python = device_image.python312()
    if python is None:
        _missing("no Python 3.12 was found: put python3.12 on PATH or set IMGSYNTH_PY312")
    if not glob.glob(os.path.join(REPO, ".whl", "*.whl")):
        _missing("no wheels in .whl/: run benchmarks/device_bundle.sh")
    venv_python = device_image.venv(python)
    # The image alone lacks the data packages: without .whl/ that is one line naming them.
    bare = subprocess.run(["bash", "-c", f"source {ENV_SCRIPT}"], cwd=_fake_repo(tmp_path / "bare"),
                          env=_env(PYTHON=venv_python, IMGSYNTH_BUNDLE_DIR=str(tmp_path / "b")),
                          capture_output=True, text=True, timeout=300)
    assert bare.returncode != 0 and len(bare.stderr.strip().splitlines()) == 1, bare.stderr
    assert "grain>=" in bare.stderr and "benchmarks/device_bundle.sh" in bare.stderr
    hidden = tmp_path / "no_tensorflow" / "tensorflow"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text(NO_TENSORFLOW)
    attempts = tmp_path / "tensorflow_imports.txt"
    env = _env(PYTHON=venv_python, PYTHONPATH=str(hidden.parent),
               IMGSYNTH_TENSORFLOW_ATTEMPTS=str(attempts),
               IMGSYNTH_BUNDLE_DIR=str(tmp_path / "bundle"))
    out = tmp_path / "out"
    command = ["benchmarks/device_run.sh", "--rehearse", f"--out={out}",
               f"--workdir={tmp_path / 'work'}"]
    proc = subprocess.run(["bash", *command], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert "wheels of .whl/ into" in proc.stderr   # the image lacked them: the bundle was used
    check_rehearsal(proc, out)
    assert not attempts.exists(), f"TensorFlow was imported:\n{attempts.read_text()[-4000:]}"


def _fake_repo(root, dependency: str | None = None):
    """benchmarks/device_env.sh and device_deps.py beside a pyproject.toml asking for one
    dependency (None: the suite's own), and no .whl/."""
    (root / "benchmarks").mkdir(parents=True)
    for name in ("device_env.sh", "device_deps.py"):
        shutil.copy(os.path.join(REPO, "benchmarks", name), root / "benchmarks" / name)
    if dependency is None:
        shutil.copy(os.path.join(REPO, "pyproject.toml"), root / "pyproject.toml")
    else:
        (root / "pyproject.toml").write_text(
            f'[project]\nname = "x"\ndependencies = ["{dependency}"]\n')
    return root


@pytest.mark.parametrize("dependency,named", [("numpy>=999", "numpy>=999 (found "),
                                              ("no-such-package>=1", "no-such-package>=1 (")])
def test_missing_package_is_one_line_naming_it_and_the_bundle(tmp_path, dependency, named):
    repo = _fake_repo(tmp_path, dependency)
    proc = subprocess.run(["bash", "-c", f"source {ENV_SCRIPT} && echo reached"], cwd=repo,
                          env=_env(PYTHON=sys.executable, IMGSYNTH_BUNDLE_DIR=str(tmp_path / "b")),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "reached" not in proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert named in proc.stderr and "benchmarks/device_bundle.sh" in proc.stderr


def test_nothing_changes_where_every_package_imports(tmp_path):
    repo = _fake_repo(tmp_path, "numpy>=1.26")
    proc = subprocess.run(["bash", "-c", f"source {ENV_SCRIPT} && echo \"[$PYTHONPATH]\""],
                          cwd=repo, env=_env(PYTHON=sys.executable), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr
