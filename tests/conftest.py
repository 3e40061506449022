"""Every test sees 8 fake CPU devices, so sharding code paths run on a laptop.

Compiled programs are cached on disk for the session: many tests train the same tiny model, and
on 2 cores compilation, not computation, dominates their time.
"""
import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402  (must come after XLA_FLAGS)

assert jax.device_count() == 8, "conftest must run before anything imports jax"
jax.config.update("jax_compilation_cache_dir",
                  os.path.join(tempfile.gettempdir(), "imgsynth-test-jax-cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
