"""Every test sees 8 fake CPU devices, so sharding code paths run on a laptop.

Compiled programs are cached on disk (`$TMPDIR/imgsynth-test-jax-cache`): many tests train the same
tiny model, and on 2 cores compilation, not computation, dominates their time. That cache and
pytest's own `pytest-of-<user>/` (empty unless a test failed: its tmp_path is kept to debug) are
all a run leaves in the temporary directory; the session fails naming anything else it left.
"""
import getpass
import os
import shutil
import tempfile

import pytest

# LLVM's cheap optimisation level: compiling, not running, is what tiny test models cost, and it
# compiles in about 60 % of the CPU time with no slower a warm run (benchmarks.md, test time).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402  (must come after XLA_FLAGS)

assert jax.device_count() == 8, "conftest must run before anything imports jax"
_TMP = tempfile.gettempdir()
_KEPT = {"imgsynth-test-jax-cache", f"pytest-of-{getpass.getuser()}"}
_BEFORE, _LEFT = pytest.StashKey[set](), pytest.StashKey[list]()

# Set through the environment, so the training and evaluation processes tests start share it too.
os.environ.update(JAX_COMPILATION_CACHE_DIR=os.path.join(_TMP, "imgsynth-test-jax-cache"),
                  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture
def tfds_offline(monkeypatch):
    """`tfds.testing.mock_data`, with TFDS's builders kept from leaving an empty `tmp*tfds`
    directory each time one is made before its data exists (a lookup in TFDS's bucket, which is
    switched off by default and never reached here)."""
    import tensorflow_datasets as tfds
    monkeypatch.setattr(tfds.core.DatasetInfo, "initialize_from_bucket", lambda self: None)
    return tfds.testing.mock_data


_STAGE_CACHE = "IMGSYNTH_TEST_STAGE_CACHE"


def pytest_configure(config):
    if not hasattr(config, "workerinput"):   # the controller, or a run without xdist
        os.environ[_STAGE_CACHE] = tempfile.mkdtemp(prefix="imgsynth-test-stage-cache-")


@pytest.fixture(scope="session")
def stage_cache():
    """One stage cache (the r32_tiny data, its autoencoders, judge and alignment model) for the
    end-to-end tests of every module and worker: each entry is built once per run, under the
    stages' own file locks, not once per module and worker. Removed when the run ends."""
    return os.environ[_STAGE_CACHE]


def pytest_sessionstart(session):
    session.stash[_BEFORE] = set(os.listdir(_TMP))


def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workerinput"):
        return   # an xdist worker: the controller checks once every worker is done
    shutil.rmtree(os.environ.pop(_STAGE_CACHE, ""), ignore_errors=True)
    left = sorted(set(os.listdir(_TMP)) - session.stash.get(_BEFORE, set()) - _KEPT)
    session.config.stash[_LEFT] = left
    if left:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    left = config.stash.get(_LEFT, [])
    if left:
        terminalreporter.section("temporary files left behind", red=True)
        terminalreporter.write_line(f"{len(left)} new entries in {_TMP}: {', '.join(left[:10])}")
