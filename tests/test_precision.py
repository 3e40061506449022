"""Mixed precision: float32 parameters and optimizer state, bfloat16 matmuls, a step within
tolerance of float32; bfloat16 refused on a device without it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from imgsynth import config as config_lib, optim, registry
from imgsynth.models import transformer

from test_attention import fake_device


def tiny(paradigm, dtype):
    c = config_lib.default_config(paradigm, "size=T")
    c.autoencoder.fsq_levels = (4, 4, 4, 4)
    c.model.dtype = dtype
    return c


def loss_and_grads(config, params):
    """Loss, gradients and the jaxpr of one training loss of `config`'s model at `params`."""
    module = registry.paradigm_module(config)
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: module.build(config, nnx.Rngs(0))))
    assert {str(a.dtype) for a in jax.tree.leaves(abstract)} == {"float32"}   # declared float32
    batch = jax.tree.map(jnp.asarray, module.example_batch(config, 4, np.random.default_rng(0)))

    def loss(p):
        return module.loss(nnx.merge(graphdef, p), batch, jax.random.key(1), config)[0]
    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    return value, grads, jax.make_jaxpr(loss)(params)


def dot_dtypes(jaxpr) -> list:
    """Operand dtypes of every matmul in a jaxpr, nested ones (scan, remat, jit) included."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            out.append(tuple(str(v.aval.dtype) for v in eqn.invars))
        for sub in _subjaxprs(eqn):
            out += dot_dtypes(sub)
    return out


def _subjaxprs(eqn):
    for v in eqn.params.values():
        for x in v if isinstance(v, (list, tuple)) else (v,):
            if isinstance(x, jax.extend.core.ClosedJaxpr):
                yield x.jaxpr
            elif isinstance(x, jax.extend.core.Jaxpr):
                yield x


@pytest.mark.parametrize("paradigm", ["flow", "ar"])   # maskgit shares ar's network
def test_bfloat16_step_is_close_to_float32_and_parameters_stay_float32(paradigm):
    c32, c16 = tiny(paradigm, "float32"), tiny(paradigm, "bfloat16")
    params = nnx.state(registry.paradigm_module(c32).build(c32, nnx.Rngs(0)))
    # zero-initialised heads and adaLN gates would leave the backbone out of loss and gradients
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree.unflatten(tree, [a + 0.05 * jax.random.normal(k, a.shape)
                                       for a, k in zip(leaves, keys)])
    l32, g32, _ = loss_and_grads(c32, params)
    l16, g16, jaxpr = loss_and_grads(c16, params)
    assert {str(a.dtype) for a in jax.tree.leaves(g16)} == {"float32"}
    assert l16.dtype == jnp.float32
    dots = dot_dtypes(jaxpr.jaxpr)
    assert dots and all(d == ("bfloat16", "bfloat16") for d in dots), set(dots)
    assert abs(float(l16) - float(l32)) <= 0.01 * abs(float(l32))
    flat16, flat32 = (jnp.concatenate([g.ravel() for g in jax.tree.leaves(g)]) for g in (g16, g32))
    rel = float(jnp.linalg.norm(flat16 - flat32) / jnp.linalg.norm(flat32))
    cos = float(flat16 @ flat32 / jnp.linalg.norm(flat16) / jnp.linalg.norm(flat32))
    assert rel < 0.05 and cos > 0.999, (rel, cos)


def test_optimizer_state_is_float32_under_bfloat16():
    config = tiny("ar", "bfloat16")
    params = nnx.state(registry.paradigm_module(config).build(config, nnx.Rngs(0)), nnx.Param)
    tx = optim.make(config.optimizer)
    dtypes = {str(a.dtype) for a in jax.tree.leaves(tx.init(params)) if jnp.ndim(a)}
    assert dtypes == {"float32"}


def test_bfloat16_is_refused_on_a_gpu_without_it(monkeypatch):
    v100 = fake_device(cc="7.0", kind="Tesla V100-SXM2-16GB")
    with pytest.raises(ValueError, match="model.dtype=bfloat16 needs native bfloat16.*V100"
                                         ".*compute capability 7.0.*model.dtype=float32"):
        transformer.check_compute_dtype(jnp.bfloat16, v100)
    transformer.check_compute_dtype(jnp.float32, v100)                   # float32 is fine there
    for ok in (fake_device(), fake_device(cc="8.0"), fake_device(platform="tpu", cc=None),
               fake_device(version="rocm 6.2", cc="gfx942"), jax.devices()[0]):
        transformer.check_compute_dtype(jnp.bfloat16, ok)
    with pytest.raises(ValueError, match="lacks"):
        transformer.check_compute_dtype(jnp.bfloat16, fake_device(platform="METAL", cc=None))
    # building the model is where a run meets the device: it fails there, before any step
    monkeypatch.setattr(jax, "devices", lambda *a: [v100])
    config = tiny("flow", "bfloat16")
    with pytest.raises(ValueError, match="native bfloat16"):
        registry.paradigm_module(config).build(config, nnx.Rngs(0))
