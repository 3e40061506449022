"""benchmarks/device_check.sh --smoke end to end: every part runs and ends with its JSON line."""
import json
import math
import os
import subprocess
import sys

import jax
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_device_check_smoke_runs_every_part(tmp_path):
    # One CPU device per part, as on a GPU host: the suite's fake-device flag is left out (and an
    # XLA_FLAGS left blank would be read as a file name).
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                     if not f.startswith("--xla_force_host_platform_device_count"))
    env = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, "PYTHON": sys.executable,
           **({"XLA_FLAGS": flags} if flags else {}),
           # the suite's compilation cache (conftest.py): a second run compiles next to nothing
           "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    proc = subprocess.run(["bash", os.path.join(REPO, "benchmarks", "device_check.sh"), "--smoke",
                           f"--workdir={tmp_path}"], env=env, capture_output=True, text=True,
                          timeout=900)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode:
        print(proc.stdout, proc.stderr[-8000:])   # shown whole in the failure report
    assert proc.returncode == 0
    assert not [r for r in lines if "error" in r], lines
    by_part = {}
    for r in lines:
        by_part.setdefault(r["part"], []).append(r)
    assert by_part["env"][0]["jax"] and by_part["env"][0]["backend"] == "cpu"
    assert by_part["peak"][0]["peak_flops_per_s"] > 0
    assert [r["paradigm"] for r in by_part["train_mfu"]] == ["flow", "ar"]
    for r in by_part["train_mfu"]:
        assert r["dtype"] == "bfloat16" and 0 < r["mfu"] and math.isfinite(r["loss"])
    remat = by_part["train_remat"][0]   # remat=auto's choice: a CPU's memory holds size T whole
    assert remat["remat"] == "none" and remat["remat_peak_bytes_per_device"]["none"] > 0
    assert [r["paradigm"] for r in by_part["sampling"]] == ["flow", "maskgit", "ar"]
    assert all(r["images_per_s"] > 0 and r["latency_s"] > 0 for r in by_part["sampling"])
    assert by_part["kv_cache"][0]["kv_cache_speedup"] > 0
    assert "gpu_study" not in by_part   # the study is device_run.sh's
