"""FSDP and tensor parallelism must not change the numbers: loss and gradients match 1 device."""
import jax
import numpy as np
import pytest
from flax import nnx

from imgsynth import config as config_lib, sharding
from imgsynth.paradigms import flow


def _batch(config, n=8):
    rng = np.random.default_rng(0)
    return {"latents": rng.normal(size=(n, 8, 8, 4)).astype(np.float32),
            "text_ids": rng.integers(1, 50, size=(n, 16)).astype(np.int32),
            "text_mask": np.arange(16)[None] < rng.integers(3, 16, size=(n, 1))}


def _loss_and_grads(model, batch, config):
    def f(model, batch):
        return flow.loss(model, batch, jax.random.key(3), config)[0]
    return nnx.jit(nnx.value_and_grad(f))(model, batch)


@pytest.fixture(scope="module")
def reference():
    config = config_lib.default_config("flow", "size=T")
    config.cfg_dropout = 0.25
    # Non-zero output head and modulation so every parameter receives a gradient.
    model = flow.build(config, nnx.Rngs(0))
    _perturb(model)
    loss, grads = _loss_and_grads(model, _batch(config), config)
    return config, loss, grads


def _perturb(model):
    for path, p in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        key = jax.random.key(abs(hash(path)) % 2**31)
        p.set_value(p.get_value() + 0.02 * jax.random.normal(key, p.get_value().shape))


@pytest.mark.parametrize("mesh_spec", [(1, 8, 1), (4, 1, 2)], ids=["fsdp8", "data4_tensor2"])
def test_sharded_matches_single_device(reference, mesh_spec):
    config, ref_loss, ref_grads = reference
    mesh = sharding.make_mesh(mesh_spec)
    model = sharding.create_sharded(lambda: flow.build(config, nnx.Rngs(0)), mesh)
    _perturb(model)
    kernel = model.backbone.blocks.mlp_in.kernel.get_value()   # [layers, embed, mlp]
    want = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "fsdp", "tensor"))
    assert kernel.sharding.is_equivalent_to(want, kernel.ndim)
    with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.LOGICAL_RULES):
        batch = sharding.to_global(_batch(config), mesh)
        loss, grads = _loss_and_grads(model, batch, config)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    flat_ref = dict(nnx.to_flat_state(ref_grads))
    scale = max(float(np.abs(np.asarray(g.get_value())).max()) for _, g in flat_ref.items())
    for path, g in nnx.to_flat_state(grads):
        # Relative to the largest gradient: some entries (key biases) are exactly zero in theory.
        np.testing.assert_allclose(np.asarray(g.get_value()), np.asarray(flat_ref[path].get_value()),
                                   rtol=1e-5, atol=1e-6 * scale, err_msg=str(path))


def test_mesh_shape_fill_and_errors():
    assert sharding.mesh_shape((-1, 2, 1), 8) == (4, 2, 1)
    with pytest.raises(ValueError, match="at most one"):
        sharding.mesh_shape((-1, -1, 1), 8)
    with pytest.raises(ValueError, match="does not divide"):
        sharding.mesh_shape((3, -1, 1), 8)
    with pytest.raises(ValueError, match="uses 4 devices"):
        sharding.mesh_shape((2, 2, 1), 8)
