"""The per-token flow-matching head of the continuous-token paradigms (MAR's diffusion head).

A small MLP of residual blocks with adaLN that predicts, for one continuous latent token, the
flow-matching velocity ε − x₀ at x_t = (1 − t)·x₀ + t·ε, given the Transformer's output vector z
for that token and the time t. Both enter as one conditioning vector y = embed(t) + proj(z) that
modulates every block (adaLN-zero: modulations and the output layer start at zero, so the head
starts as the zero velocity). Training draws several times per token (`time_steps`) so the cheap
head sees more noise levels per pass of the expensive backbone; sampling integrates from t = 1
to t = 0 with Euler or Heun steps from noise scaled by a temperature.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from imgsynth.models.transformer import dense, layer_norm, sincos_1d

TIME_FREQS = 256
NORM_EPS = 1e-6
METHODS = ("euler", "heun")


class ResBlock(nnx.Module):
    """x + gate · MLP(LN(x)·(1 + scale) + shift), with (shift, scale, gate) from y."""

    def __init__(self, width: int, *, rngs: nnx.Rngs, dtype):
        self.norm = layer_norm(width, affine=False, eps=NORM_EPS, rngs=rngs)
        self.fc1 = dense(width, width, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.fc2 = dense(width, width, ("mlp", "embed"), rngs=rngs, dtype=dtype)
        self.modulation = dense(width, 3 * width, ("embed", "mlp"), rngs=rngs, dtype=dtype,
                                zero=True)

    def __call__(self, x_NW, y_NW):
        mods = self.modulation(jax.nn.silu(y_NW)).astype(jnp.float32)
        shift, scale, gate = jnp.split(mods, 3, axis=-1)
        h = self.fc2(jax.nn.silu(self.fc1(self.norm(x_NW) * (1 + scale) + shift)))
        return x_NW + gate * h.astype(jnp.float32)


class TokenHead(nnx.Module):
    """Velocity of one `channels`-dim token given a `cond_width` condition; `width` × `depth`."""

    def __init__(self, channels: int, cond_width: int, width: int, depth: int, *,
                 rngs: nnx.Rngs, dtype):
        self.time_in = dense(TIME_FREQS, width, ("patch", "embed"), rngs=rngs, dtype=dtype)
        self.time_hidden = dense(width, width, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.cond_in = dense(cond_width, width, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.x_in = dense(channels, width, ("patch", "embed"), rngs=rngs, dtype=dtype)
        self.blocks = nnx.List([ResBlock(width, rngs=rngs, dtype=dtype) for _ in range(depth)])
        self.final_norm = layer_norm(width, affine=False, eps=NORM_EPS, rngs=rngs)
        self.final_modulation = dense(width, 2 * width, ("embed", "mlp"), rngs=rngs, dtype=dtype,
                                      zero=True)
        self.out = dense(width, channels, ("embed", "patch"), rngs=rngs, dtype=dtype, zero=True)

    def condition(self, z_ND):
        """The projected Transformer output: computed once per token, shared by every time."""
        return self.cond_in(z_ND).astype(jnp.float32)

    def __call__(self, x_NC, t_N, c_NW):
        """Velocity [N, C] at times `t_N` for the conditions `c_NW` of `condition`."""
        t_emb = self.time_hidden(jax.nn.silu(self.time_in(sincos_1d(t_N * 1000.0, TIME_FREQS))))
        y_NW = t_emb.astype(jnp.float32) + c_NW
        h = self.x_in(x_NC).astype(jnp.float32)
        for block in self.blocks:
            h = block(h, y_NW)
        shift, scale = jnp.split(self.final_modulation(jax.nn.silu(y_NW)).astype(jnp.float32),
                                 2, axis=-1)
        return self.out(self.final_norm(h) * (1 + scale) + shift).astype(jnp.float32)


def interpolate(x0, noise, t):
    """x_t and the velocity target ε − x₀ (t broadcasts against the token axis)."""
    t = t[..., None]
    return (1 - t) * x0 + t * noise, noise - x0


def loss(head: TokenHead, x0_NC, z_ND, rng, time_steps: int, weight_N=None):
    """Per-token velocity MSE [N], averaged over `time_steps` logit-normal times per token.

    The condition is projected once per token and repeated, so the backbone's output is reused
    by every time drawn for its token (MAR's `diffusion_batch_mul`).
    """
    N, C = x0_NC.shape
    k_t, k_noise = jax.random.split(rng)
    c = jnp.repeat(head.condition(z_ND), time_steps, axis=0)
    x0 = jnp.repeat(x0_NC.astype(jnp.float32), time_steps, axis=0)
    t = jax.nn.sigmoid(jax.random.normal(k_t, (N * time_steps,)))     # logit-normal(0, 1)
    x_t, target = interpolate(x0, jax.random.normal(k_noise, x0.shape), t)
    err = (head(x_t, t, c) - target) ** 2
    return jnp.mean(err.reshape(N, time_steps * C), axis=-1)


def fixed_time_loss(head: TokenHead, x0_NC, z_ND, noise_NC, t: float):
    """Per-token velocity MSE [N] at one fixed time with given noise (deterministic eval)."""
    t_N = jnp.full((x0_NC.shape[0],), t)
    x_t, target = interpolate(x0_NC.astype(jnp.float32), noise_NC, t_N)
    return jnp.mean((head(x_t, t_N, head.condition(z_ND)) - target) ** 2, axis=-1)


def sample(head: TokenHead, z_ND, noise_NC, *, steps: int, method: str, temperature: float,
           guidance: float = 1.0, z_null_ND=None):
    """Tokens [N, C] integrated from t = 1 (noise × temperature) to t = 0.

    With guidance ≠ 1 the head runs on the conditional and unconditional conditions together
    and steps along u + guidance · (c − u), classifier-free guidance on the velocity.
    """
    if method not in METHODS:
        raise ValueError(f"head sampler method={method!r}; choose one of {METHODS}")
    c = head.condition(z_ND)
    if guidance != 1.0:
        c = jnp.concatenate([c, head.condition(z_null_ND)])

    def velocity(x, t):
        t_N = jnp.full((c.shape[0],), t)
        if guidance == 1.0:
            return head(x, t_N, c)
        cond, uncond = jnp.split(head(jnp.concatenate([x, x]), t_N, c), 2)
        return uncond + guidance * (cond - uncond)

    x = temperature * noise_NC.astype(jnp.float32)
    ts = [1.0 - i / steps for i in range(steps + 1)]
    for t, t_next in zip(ts[:-1], ts[1:]):
        v = velocity(x, t)
        x_next = x + (t_next - t) * v
        if method == "heun":
            x_next = x + (t_next - t) * 0.5 * (v + velocity(x_next, t_next))
        x = x_next
    return x
