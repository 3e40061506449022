"""The training loop: golden first step, determinism, crash-and-resume, NaN abort, bad configs."""
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from fixtures.crash import killed_after_checkpoint
from imgsynth import checkpoint as ckpt_lib, config as config_lib, loop, registry, train
from imgsynth.data import sources

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Loss and gradient norm at step 2 of each paradigm — i.e. after one update (size T, global
# batch 8, seed 0, synthetic records). Update only when a change is *meant* to alter the numbers (model,
# initialisation, loss, data order); say why in the commit message.
GOLDEN = {
    "flow": {"train/loss": 2.031953811645508, "train/grad_norm": 0.5745542049407959},
    "maskgit": {"train/loss": 5.545279502868652, "train/grad_norm": 0.6413897275924683},
    "ar": {"train/loss": 5.544490814208984, "train/grad_norm": 0.4844661355018616},
    "ar_continuous": {"train/loss": 2.0323243141174316, "train/grad_norm": 0.24306784570217133},
    "mar": {"train/loss": 2.0285980701446533, "train/grad_norm": 0.2971910834312439},
}


def tiny(paradigm, steps=1, **overrides):
    c = config_lib.default_config(paradigm, f"size=T,steps={steps},global_batch_size=8")
    c.data.name = "synthetic"
    c.data.synthetic_examples = 64
    c.autoencoder.fsq_levels = (4, 4, 4, 4)   # 256 codes, two factors of 16
    c.eval_examples = 16
    c.log_every_steps = 1
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 1000
    c.peak_flops_per_s = 1e11      # skip the peak measurement in tests
    c.optimizer.warmup_steps = 2
    for k, v in overrides.items():
        node = c
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return c


def rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("paradigm", list(GOLDEN))
def test_golden_one_step(paradigm, tmp_path):
    row = train.train(tiny(paradigm, steps=2), str(tmp_path))
    got = {k: row[k] for k in GOLDEN[paradigm]}
    for k, v in GOLDEN[paradigm].items():
        np.testing.assert_allclose(got[k], v, rtol=2e-4, err_msg=f"{paradigm} {k}")
    status = json.load(open(tmp_path / "status.json"))
    assert status["status"] == "done" and status["step"] == 2
    timing = status["timing"]   # what the process cost, for benchmarks/study_efficiency.py
    assert timing["start"] < timing["first_step"] < timing["end"] and timing["cores"] >= 1
    assert timing["steps"] == 2 and timing["peak_flops_per_s"] == 1e11
    assert timing["flops"] == 2 * rows(str(tmp_path))[0]["flops/train_per_step"]
    first = rows(str(tmp_path))[0]
    assert first["n_params/all"] == first["n_params/embedding"] + first["n_params/non_embedding"]


@pytest.mark.slow
def test_crash_and_resume_matches_uninterrupted(tmp_path, monkeypatch):
    c = tiny("flow", steps=6, checkpoint_every_steps=3)
    straight = train.train(c, str(tmp_path / "a"))

    with killed_after_checkpoint(monkeypatch, 3):
        train.train(c, str(tmp_path / "b"))
    assert json.load(open(tmp_path / "b" / "status.json"))["status"] == "failed"
    resumed = train.train(c, str(tmp_path / "b"))

    for k in ("train/loss", "train/grad_norm", "eval/loss", "eval/loss_ema"):
        assert resumed[k] == straight[k], k
    a, b = rows(str(tmp_path / "a")), rows(str(tmp_path / "b"))
    assert [r["step"] for r in a] == [r["step"] for r in b]       # no duplicated rows
    assert [r.get("train/loss") for r in a] == [r.get("train/loss") for r in b]

    again = train.train(c, str(tmp_path / "b"))                    # a done run exits at once
    assert again["already_done"]


def test_nan_loss_fails_without_checkpoint(tmp_path, monkeypatch):
    c = tiny("flow", steps=3, checkpoint_every_steps=1)
    records = sources.synthetic_records(registry.paradigm_module(c), c, 64, 0)
    for r in records:
        r["latents"] = np.full_like(r["latents"], np.nan)
    with pytest.raises(loop.NonFiniteLoss, match="non-finite training loss"):
        loop.run(c, str(tmp_path), train.task(c, (records, records)))
    status = json.load(open(tmp_path / "status.json"))
    assert status["status"] == "failed" and "non-finite" in status["reason"]
    assert ckpt_lib.Checkpointer(str(tmp_path / "checkpoints")).latest_step() is None


def test_bad_config_fails_before_anything_is_written(tmp_path):
    c = tiny("flow", global_batch_size=12)
    with pytest.raises(config_lib.ConfigError, match="not divisible by the 8"):
        train.train(c, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    c = tiny("flow")
    c.total_steps, c.total_flops = None, 10.0
    with pytest.raises(config_lib.ConfigError, match="less than one training step"):
        train.train(c, str(tmp_path / "run"))


def test_compilation_cache_goes_in_the_cache_dir(tmp_path):
    import jax
    before = jax.config.jax_compilation_cache_dir
    c = tiny("flow")
    loop.use_compilation_cache(c)                    # the tests' own cache directory is kept
    assert jax.config.jax_compilation_cache_dir == before
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        c.cache_dir = str(tmp_path / "cache")
        loop.use_compilation_cache(c)
        expected = tmp_path / "cache" / loop.COMPILATION_CACHE
        assert jax.config.jax_compilation_cache_dir == str(expected)
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def test_the_measured_peak_is_kept_in_the_cache_dir(tmp_path, monkeypatch):
    import jax.numpy as jnp
    from imgsynth import perf
    measured = []
    monkeypatch.setattr(perf, "measure_device_peak",
                        lambda dtype: measured.append(dtype) or 1e9 * len(measured))
    assert perf.cached_device_peak(jnp.float32, str(tmp_path)) == 1e9
    assert perf.cached_device_peak(jnp.float32, str(tmp_path)) == 1e9    # read, not measured
    assert perf.cached_device_peak(jnp.bfloat16, str(tmp_path)) == 2e9   # another dtype
    assert perf.cached_device_peak(jnp.float32, None) == 3e9             # no cache: measured
    assert len(measured) == 3 and len(json.load(open(tmp_path / perf.PEAK_FILE))) == 2


def test_the_cached_peak_keeps_the_best_measurement(tmp_path, monkeypatch):
    """A peak read while something else held the core is low; remeasuring (the launcher's stages,
    before any run) replaces it with a better one and never with a worse one."""
    import jax.numpy as jnp
    from imgsynth import perf
    reads = iter([3e10, 9e10, 5e10])
    monkeypatch.setattr(perf, "measure_device_peak", lambda dtype: next(reads))
    cache = str(tmp_path)
    assert perf.cached_device_peak(jnp.float32, cache) == 3e10            # a contended read
    assert perf.cached_device_peak(jnp.float32, cache, remeasure=True) == 9e10
    assert perf.cached_device_peak(jnp.float32, cache, remeasure=True) == 9e10   # 5e10 < 9e10
    assert perf.cached_device_peak(jnp.float32, cache) == 9e10            # read, not measured
    c = ml_collections.ConfigDict({"cache_dir": cache, "peak_flops_per_s": 0.0,
                                   "model": {"dtype": "float32"}})
    assert perf.training_peak(c) == 9e10 * perf.job_peak(1.0)
    c.peak_flops_per_s = 1e11                                              # given: not measured
    assert perf.training_peak(c, remeasure=True) == 1e11


def test_every_budget_and_schedule_end_shares_one_compiled_step(tmp_path):
    """The learning-rate schedule is an input of the update step, not a constant in it: a run of
    another length, warm-up, rate or cooldown (a constant-rate trunk and its wsd branches) finds
    every program it needs already compiled."""
    from jax import monitoring
    settings = {"optimizer.schedule": "wsd", "optimizer.warmup_steps": 1}
    train.train(tiny("flow", steps=3, **settings), str(tmp_path / "a"))
    misses = []
    listener = lambda event, **kw: misses.append(event) if event.endswith("cache_misses") else None  # noqa: E731
    monitoring.register_event_listener(listener)
    try:
        for i, changes in enumerate([{"optimizer.warmup_steps": 2},
                                     {"optimizer.schedule": "constant", "optimizer.lr": 1e-3}]):
            row = train.train(tiny("flow", steps=5, **{**settings, **changes}), str(tmp_path / f"{i}"))
            assert row["step"] == 5
    finally:
        monitoring.unregister_event_listener(listener)
    assert not misses


def test_the_seed_is_an_input_of_the_update_step():
    """Seed replicates share the compiled update step too (the parameters' initialisation, a
    small program, still compiles per seed)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from imgsynth import optim

    graphdef, params = nnx.split(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))

    def loss(model, batch, rng):
        value = jnp.mean((model(batch["x"]) - jax.random.normal(rng, (4, 2))) ** 2)
        return value, {"loss": value}

    texts = []
    for seed, steps in ((0, 10), (1, 30)):
        init_state, train_step, inputs = optim.make_update(
            tiny("flow", seed=seed), loss, graphdef, steps)
        state = init_state(params)
        texts.append(jax.jit(train_step).lower(state, {"x": jnp.ones((4, 3))}, inputs).as_text())
        assert int(inputs["seed"]) == seed
    assert texts[0] == texts[1]


def test_training_imports_no_tensorflow(tmp_path):
    """TensorBoard's scalars are written without TensorFlow (imgsynth/summaries.py): importing it
    cost every training process ~5 s of start-up. Checked in a clean interpreter."""
    check = ("import sys; sys.path.insert(0, 'tests'); from test_train import tiny; "
             "from imgsynth import train; "
             f"train.train(tiny('flow', steps=2), {str(tmp_path)!r}); "
             "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    p = subprocess.run([sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True,
                       text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert p.returncode == 0, p.stderr[-2000:]
    events = [f for f in os.listdir(tmp_path) if f.startswith("events.out.tfevents")]
    assert len(events) == 1, os.listdir(tmp_path)
    from tensorboard.backend.event_processing import event_accumulator
    scalars = event_accumulator.EventAccumulator(str(tmp_path / events[0]))
    scalars.Reload()
    losses = [(e.step, round(e.value, 5)) for e in scalars.Scalars("train/loss")]
    assert losses == [(r["step"], round(r["train/loss"], 5)) for r in rows(tmp_path)
                      if "train/loss" in r]
