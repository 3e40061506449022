"""Rematerialisation (`model.remat`): every policy computes the same loss and gradients as none,
`auto` takes the least recomputation whose compiled step fits the memory it is given, and a bad
value is a config error."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from imgsynth import config as config_lib, registry, train
from imgsynth.models.transformer import REMAT_POLICIES, Transformer, TransformerConfig

B, T, S, D = 2, 8, 5, 32


def loss_and_grads(remat: str, scan_layers: bool):
    cfg = TransformerConfig(width=D, depth=3, heads=4, mlp_dim=2 * D, causal=True, ctx_width=D,
                            cond_dim=D, scan_layers=scan_layers, remat=remat)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    for _, p in nnx.to_flat_state(nnx.state(model, nnx.Param)):   # adaLN off its zero init
        noise = jax.random.normal(jax.random.key(3), p.get_value().shape)
        p.set_value(p.get_value() + 0.05 * noise)
    r = np.random.default_rng(0)
    x, cond, ctx = (jnp.asarray(r.normal(size=shape), jnp.float32)
                    for shape in ((B, T, D), (B, D), (B, S, D)))

    @nnx.jit
    def step(model):
        def loss(model):
            h, _ = model(x, cond_BC=cond, ctx_BSD=ctx)
            return jnp.mean(jnp.tanh(h) ** 2)
        return nnx.value_and_grad(loss)(model)

    value, grads = step(model)
    return float(value), jax.tree.leaves(nnx.state(grads))


@pytest.mark.parametrize("scan_layers", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_every_policy_gives_the_loss_and_gradients_of_none(scan_layers):
    value, grads = loss_and_grads("none", scan_layers)
    assert any(float(jnp.abs(g).max()) > 0 for g in grads)
    for remat in REMAT_POLICIES:
        if remat == "none":
            continue
        v, g = loss_and_grads(remat, scan_layers)
        assert v == pytest.approx(value, rel=1e-6), remat
        for a, b in zip(g, grads):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=remat)


def tiny_flow(remat: str):
    config = config_lib.default_config("flow", "size=T,global_batch_size=32")
    config.model.remat = remat
    return config


@pytest.mark.slow
def test_full_remat_needs_less_memory_than_none():
    config = tiny_flow("none")
    plan = registry.plan(config)
    peaks = {remat: train.compile_step(train.with_remat(config, remat), plan)
             ["peak_bytes_per_device"] for remat in ("none", "full")}   # real compiles
    assert 0 < peaks["full"] < peaks["none"]


PEAKS = {"none": 100, "dots": 60, "dots_no_batch": 50, "full": 30}   # bytes, as compiled


def fake_compile(compiled):
    def compile_fn(config, plan):
        compiled.append(config.model.remat)
        return {"peak_bytes_per_device": PEAKS[config.model.remat]}
    return compile_fn


def test_auto_takes_less_recomputation_the_less_memory_it_has():
    config = tiny_flow("auto")
    plan, compiled = registry.plan(config), []

    def choose(limit):
        compiled.clear()
        return train.choose_remat(config, plan, limit, compile_fn=fake_compile(compiled))[0]

    f = train.FIT_FRACTION
    assert choose(100 / f) == "none" and compiled == ["none"]   # stops at the first that fits
    assert choose(99 / f) == "dots" and compiled == ["none", "dots"]
    assert choose(59 / f) == "dots_no_batch"
    assert choose(30 / f) == "full"
    with pytest.raises(config_lib.ConfigError, match="even with full rematerialisation"):
        choose(29 / f)


def test_compile_only_reports_every_policy_and_the_choice(monkeypatch):
    compiled = []
    monkeypatch.setattr(train, "compile_step", fake_compile(compiled))
    report = train.compile_only(tiny_flow("auto"), memory_limit=int(70 / train.FIT_FRACTION))
    assert report["remat"] == "dots" and report["peak_bytes_per_device"] == 60
    assert report["remat_peak_bytes_per_device"] == PEAKS       # every policy, for the table
    assert compiled == [*PEAKS, "dots"]
    report = train.compile_only(tiny_flow("full"))
    assert report["remat"] == "full" and "remat_peak_bytes_per_device" not in report


def test_bad_remat_is_a_config_error():
    with pytest.raises(ValueError, match="model.remat='sometimes'; choose one of"):
        registry.plan(tiny_flow("sometimes"))


@pytest.mark.slow
def test_training_with_auto_builds_the_chosen_policy_and_keeps_auto_in_config(tmp_path,
                                                                               monkeypatch):
    from test_train import GOLDEN, tiny
    chosen = []

    def choose(config, plan, limit, **kw):
        chosen.append(limit)
        return "full", {}
    monkeypatch.setattr(train, "choose_remat", choose)
    built, module = [], registry.paradigm_module(tiny("flow"))
    build = module.build
    monkeypatch.setattr(module, "build", lambda config, rngs: built.append(config.model.remat)
                        or build(config, rngs))
    row = train.train(tiny("flow", steps=2, **{"model.remat": "auto"}), str(tmp_path))
    assert chosen == [train.device_memory_limit()] and set(built) == {"full"}
    for k, v in GOLDEN["flow"].items():   # recomputation changes no number
        np.testing.assert_allclose(row[k], v, rtol=2e-4, err_msg=k)
    assert json.load(open(tmp_path / "config.json"))["model"]["remat"] == "auto"
