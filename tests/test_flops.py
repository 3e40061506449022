"""The analytic counts are the x-axis of every plot: check them against real models and XLA."""
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from imgsynth import config as config_lib, flops, registry
from imgsynth.models.transformer import TransformerConfig, Transformer


def _param_count(model_fn):
    state = nnx.state(nnx.eval_shape(model_fn), nnx.Param)
    return sum(x.size for x in jax.tree.leaves(state))


@pytest.mark.parametrize("size", list(registry.SIZES))
@pytest.mark.parametrize("paradigm", ["flow"])
def test_param_count_matches_model(size, paradigm):
    config = config_lib.default_config(paradigm, f"size={size}")
    module = registry.paradigm_module(config)
    cost = module.model_cost(config)
    assert _param_count(lambda: module.build(config, nnx.Rngs(0))) == cost.params_total
    text = nnx.eval_shape(lambda: module.build(config, nnx.Rngs(0))).text
    assert cost.params_embedding == text.embed.embedding.size + text.pos.size


def test_transformer_formula_by_hand():
    """4·L·T²·d attention, 2·weights·tokens matmuls, per-example adaLN, written out by hand."""
    cfg = TransformerConfig(width=32, depth=3, heads=4, mlp_dim=128, ctx_width=16, cond_dim=8)
    T, S, d, m, L = 10, 5, 32, 128, 3
    per_layer = (2 * T * (4 * d * d + 2 * d * m + 2 * d * d) + 2 * S * 2 * 16 * d
                 + 4 * T * T * d + 4 * T * S * d + 2 * 8 * 6 * d)
    assert flops.transformer(cfg, T, S).fwd_flops == L * per_layer + 2 * 8 * 2 * d
    assert flops.transformer(cfg, T, S).params == _param_count(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("size", ["T", "XS"])
def test_forward_flops_match_xla(size):
    """XLA counts a scan body once, so compare on the unrolled model (elementwise ops add ~1-3%)."""
    config = config_lib.default_config("flow", f"size={size}")
    config.model.scan_layers = False
    module = registry.paradigm_module(config)
    model = module.build(config, nnx.Rngs(0))
    B = 2
    args = (jnp.zeros((B, 8, 8, 4)), jnp.ones((B,)), jnp.ones((B, 16), jnp.int32), jnp.ones((B, 16), bool))
    xla = jax.jit(lambda *a: model(*a)).lower(*args).compile().cost_analysis()["flops"] / B
    analytic = module.model_cost(config).fwd_flops_per_example
    assert abs(xla / analytic - 1) < 0.05, (xla, analytic)


def test_cached_decode_is_sum_of_steps():
    cfg = TransformerConfig(width=32, depth=2, heads=4, mlp_dim=128, causal=True, ctx_width=32)
    full = flops.cached_decode_flops(cfg, 4, 3)
    steps = sum(flops.decode_step_flops(cfg, t, 3) for t in range(4))
    assert full == steps + 2 * 2 * 2 * 32 * 32 * 3
    # Attention grows with the number of cached keys.
    assert flops.decode_step_flops(cfg, 3, 3) - flops.decode_step_flops(cfg, 2, 3) == 2 * 4 * 32


def test_flops_cli_json(capsys):
    config = config_lib.default_config("flow", "size=S,budget=1e15")
    out = flops.report(config, as_json=True)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    import json
    parsed = json.loads(line)
    for key in ("params_total", "params_nonembedding", "fwd_flops_per_example",
                "train_flops_per_step", "steps"):
        assert parsed[key] == out[key]
    assert parsed["steps"] == int(1e15 // parsed["train_flops_per_step"])
