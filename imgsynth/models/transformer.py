"""The one Transformer backbone shared by every paradigm (Flax NNX).

Pre-norm blocks: self-attention (bidirectional or causal, with a KV cache for decoding), optional
cross-attention to a conditioning sequence (the caption), an MLP, and optional adaLN-zero modulation
from a conditioning vector (the diffusion timestep). Blocks are stacked with `nnx.vmap` and run with
`nnx.scan` so compile time does not grow with depth. Paradigm-specific input/output heads live in
`imgsynth/paradigms/`, not here.

Precision (the mixed-precision recipe of AMP and most JAX trainers): parameters are float32 always;
every matmul runs in `dtype` (bfloat16 on accelerators); the residual stream, layer norms,
adaLN modulation and softmax stay float32. Attention is `jax.nn.dot_product_attention`: cuDNN's
fused flash kernel on Ampere-or-newer GPUs, XLA elsewhere (`attention`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from imgsynth.sharding import constrain

Cache = dict[str, jax.Array]
ATTENTION_CHOICES = ("auto", "xla", "cudnn")
PARAM_DTYPE = jnp.float32
# Rematerialisation of each block in the backward pass, from least recomputation (most memory) to
# most: `jax.checkpoint` policies naming what a block keeps from its forward pass. "dots" keeps
# every matmul output, "dots_no_batch" only those without batch dimensions (the weight matmuls:
# attention scores are recomputed), "full" only the block's input.
REMAT_POLICIES = {
    "none": None,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
}
# "auto": the least of these whose compiled update step fits the device (chosen by the trainer,
# `imgsynth.train.choose_remat`, before any weights exist); a forward pass alone runs it as "none".
REMAT_CHOICES = (*REMAT_POLICIES, "auto")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    width: int
    depth: int
    heads: int
    mlp_dim: int
    causal: bool = False
    ctx_width: int = 0        # 0: no cross-attention
    cond_dim: int = 0         # 0: no adaLN modulation
    scan_layers: bool = True  # False unrolls (XLA cost analysis counts a scan body once)
    remat: str = "none"         # one of REMAT_CHOICES
    dtype: Any = jnp.float32    # compute dtype of matmuls; parameters are always float32
    norm_eps: float = 1e-6
    attention: str = "auto"     # "auto" | "xla" | "cudnn": the dot_product_attention kernel

    def __post_init__(self):
        if self.attention not in ATTENTION_CHOICES:
            raise ValueError(f"model.attention={self.attention!r}; choose one of {ATTENTION_CHOICES}")
        if self.remat not in REMAT_CHOICES:
            raise ValueError(f"model.remat={self.remat!r}; choose one of {REMAT_CHOICES}")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


def init(names, base=nnx.initializers.xavier_uniform()):
    """An initializer carrying logical axis names; `sharding.create_sharded` places parameters.

    Eager sharding is off so a model can also be built without a mesh (tests, single device).
    """
    return nnx.with_partitioning(base, names, eager_sharding=False)


class Dense(nnx.Linear):
    """`nnx.Linear` on the input's rows: the leading axes are merged into one before the matmul.

    The weight gradient is then one 2-D matmul; XLA's CPU backend computes the one of a [B, T, D]
    input (contracting B and T) ~40 % slower per MLP.
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        return super().__call__(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)


def dense(fan_in: int, fan_out: int, names, *, rngs: nnx.Rngs, dtype, zero=False) -> Dense:
    kernel = nnx.initializers.zeros_init() if zero else nnx.initializers.xavier_uniform()
    return Dense(fan_in, fan_out, dtype=dtype, param_dtype=PARAM_DTYPE, rngs=rngs,
                 kernel_init=init(names, kernel),
                 bias_init=init((names[1],), nnx.initializers.zeros_init()))


def layer_norm(width: int, *, affine: bool, eps: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """Normalisation is float32 whatever the compute dtype (its statistics lose most in bf16)."""
    return nnx.LayerNorm(width, epsilon=eps, use_scale=affine, use_bias=affine, rngs=rngs,
                         dtype=jnp.float32, param_dtype=PARAM_DTYPE,
                         scale_init=init(("act_embed",), nnx.initializers.ones_init()),
                         bias_init=init(("act_embed",), nnx.initializers.zeros_init()))


def sincos_2d(height: int, width: int, dim: int) -> np.ndarray:
    """Fixed 2-D sine-cosine position embedding [height*width, dim] in raster order (as in MAE/DiT)."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim // 4))
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    out = [f(np.outer(c.reshape(-1), omega)) for c in (ys, xs) for f in (np.sin, np.cos)]
    return np.concatenate(out, axis=1).astype(np.float32)


def sincos_1d(positions: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding of scalar positions/timesteps [B] → [B, dim]."""
    half = dim // 2
    freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = positions.astype(jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def native_bfloat16(device) -> bool:
    """Whether `device` multiplies bfloat16 natively.

    TPUs, CUDA GPUs of compute capability 8.0 or newer (Ampere on) and ROCm GPUs do. On older CUDA
    GPUs (V100, T4) XLA would emulate bfloat16 in float32: slower than float32 and not the
    computation asked for. The CPU counts as supporting it: XLA computes bfloat16 there (slowly,
    often through float32), which is what tests and `--compile_only` of an accelerator config need.
    """
    if device.platform in ("cpu", "tpu"):
        return True
    if device.platform != "gpu":
        return False
    return _rocm(device) or _compute_capability(device) >= (8, 0)


def _rocm(device) -> bool:
    return "rocm" in str(getattr(device.client, "platform_version", "")).lower()


def _compute_capability(device) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in str(getattr(device, "compute_capability", "")).split("."))
    except ValueError:
        return (0,)


def check_compute_dtype(dtype, device=None) -> None:
    """A one-line error when bfloat16 compute is asked of a device without native bfloat16."""
    device = device or jax.devices()[0]
    if jnp.dtype(dtype) == jnp.bfloat16 and not native_bfloat16(device):
        cc = getattr(device, "compute_capability", None)
        raise ValueError(
            f"model.dtype=bfloat16 needs native bfloat16 matmuls, which this {device.platform} "
            f"device ({device.device_kind}{f', compute capability {cc}' if cc else ''}) lacks "
            "(CUDA GPUs have them from compute capability 8.0, Ampere); use model.dtype=float32")


def attention_implementation(cfg: TransformerConfig, device=None) -> str:
    """The `jax.nn.dot_product_attention` kernel for `cfg.attention`.

    "auto" takes cuDNN's fused flash attention where it applies — a CUDA GPU of compute capability
    8.0 or newer, bfloat16/float16 compute, a head dimension that is a multiple of 8 and at most
    128 — and XLA (the same two matmuls around a float32 softmax) everywhere else.
    """
    if cfg.attention != "auto":
        return cfg.attention
    device = device or jax.devices()[0]
    ampere_cuda = (device.platform == "gpu" and not _rocm(device)
                   and _compute_capability(device) >= (8, 0))
    fits = (jnp.dtype(cfg.dtype) in (jnp.bfloat16, jnp.float16) and cfg.head_dim % 8 == 0
            and cfg.head_dim <= 128)
    return "cudnn" if ampere_cuda and fits else "xla"


class Attention(nnx.Module):
    """Multi-head attention; keys/values may come from another sequence of width `kv_width`."""

    def __init__(self, width: int, heads: int, kv_width: int, *, dtype, rngs: nnx.Rngs):
        head_dim = width // heads

        def proj(fan_in):
            return nnx.Einsum("BTD,DHK->BTHK", (fan_in, heads, head_dim), (heads, head_dim),
                              dtype=dtype, param_dtype=PARAM_DTYPE, rngs=rngs,
                              kernel_init=init(("embed", "heads", "kv")),
                              bias_init=init(("heads", "kv"), nnx.initializers.zeros_init()))

        self.q, self.k, self.v = proj(width), proj(kv_width), proj(kv_width)
        self.o = nnx.Einsum("BTHK,HKD->BTD", (heads, head_dim, width), (width,), dtype=dtype,
                            param_dtype=PARAM_DTYPE, rngs=rngs,
                            kernel_init=init(("heads", "kv", "embed")),
                            bias_init=init(("embed",), nnx.initializers.zeros_init()))

    def kv(self, x_BSD: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.k(x_BSD), self.v(x_BSD)

    def attend(self, x_BTD, k_BSHK, v_BSHK, implementation: str, *, causal: bool = False,
               lengths_B=None, mask=None) -> jax.Array:
        """Queries from `x_BTD` attend to keys `k_BSHK` (logits and softmax in float32).

        `causal`: query t sees keys ≤ t (T = S); `lengths_B`: only the first `lengths_B[b]` keys
        of example b are valid (padding); `mask` (broadcasts to [B, H, T, S], True = visible):
        any other pattern (the KV cache's), which cuDNN would take as a dense bias.
        """
        out_BTHK = jax.nn.dot_product_attention(
            self.q(x_BTD), k_BSHK, v_BSHK, mask=mask, is_causal=causal,
            key_value_seq_lengths=lengths_B, implementation=implementation)
        return self.o(constrain(out_BTHK, "batch", "seq", "act_heads", None))


class Block(nnx.Module):
    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        d, dt = cfg.width, cfg.dtype
        modulated = cfg.cond_dim > 0
        self.norm1 = layer_norm(d, affine=not modulated, eps=cfg.norm_eps, rngs=rngs)
        self.attn = Attention(d, cfg.heads, d, dtype=dt, rngs=rngs)
        if cfg.ctx_width:
            self.norm_ctx = layer_norm(d, affine=True, eps=cfg.norm_eps, rngs=rngs)
            self.cross = Attention(d, cfg.heads, cfg.ctx_width, dtype=dt, rngs=rngs)
        self.norm2 = layer_norm(d, affine=not modulated, eps=cfg.norm_eps, rngs=rngs)
        self.mlp_in = dense(d, cfg.mlp_dim, ("embed", "mlp"), rngs=rngs, dtype=dt)
        self.mlp_out = dense(cfg.mlp_dim, d, ("mlp", "embed"), rngs=rngs, dtype=dt)
        if modulated:  # adaLN-zero: zero-initialised so every block starts as the identity
            self.modulation = dense(cfg.cond_dim, 6 * d, ("embed", "mlp"), rngs=rngs, dtype=dt,
                                    zero=True)
        self.cfg = cfg

    def __call__(self, x_BTD, cond_BC, ctx_BSD, ctx_lengths_B, self_attn: dict, cache: Cache,
                 layer, index, implementation: str, cross_kv=None):
        """One block on the float32 residual stream `x_BTD`; `self_attn` holds `attend`'s masking.

        Decoding: `cache` is every layer's keys/values [depth, B, L, H, K]; this block writes its
        chunk at (`layer`, `index`) in place and attends to its layer's first `self_attn["keys"]`
        positions. `cross_kv` is its cached cross-attention keys/values (else from `ctx_BSD`).
        """
        cfg = self.cfg
        if cfg.cond_dim:
            mods = self.modulation(jax.nn.silu(cond_BC)).astype(jnp.float32)
            shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mods[:, None, :], 6, axis=-1)
        else:
            shift1 = scale1 = shift2 = scale2 = 0.0
            gate1 = gate2 = 1.0

        h = self.norm1(x_BTD) * (1 + scale1) + shift1
        k, v = self.attn.kv(h)
        attn_kw = self_attn
        if cache:  # write the chunk first, then read the layer back: the update stays in place
            keys = self_attn["keys"]
            cache = {name: jax.lax.dynamic_update_slice(
                cache[name], new[None].astype(cache[name].dtype), (layer, 0, index, 0, 0))
                for name, new in (("k", k), ("v", v))}
            k, v = (jax.lax.dynamic_slice(cache[name], (layer, 0, 0, 0, 0),
                                          (1, *cache[name].shape[1:2], keys,
                                           *cache[name].shape[3:]))[0]
                    for name in ("k", "v"))
            attn_kw = {"mask": self_attn["mask"]}
        x_BTD = x_BTD + gate1 * self.attn.attend(h, k, v, implementation, **attn_kw)

        if cfg.ctx_width:
            ck, cv = cross_kv if cross_kv is not None else self.cross.kv(ctx_BSD)
            x_BTD = x_BTD + self.cross.attend(self.norm_ctx(x_BTD), ck, cv, implementation,
                                              lengths_B=ctx_lengths_B)

        h = self.norm2(x_BTD) * (1 + scale2) + shift2
        h = constrain(jax.nn.gelu(self.mlp_in(h)), "batch", "seq", "act_mlp")
        x_BTD = x_BTD + gate2 * self.mlp_out(h)
        return constrain(x_BTD, "batch", "seq", "act_embed"), cache


class Transformer(nnx.Module):
    """A stack of blocks plus the final norm (adaLN-modulated when conditioned)."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        check_compute_dtype(cfg.dtype)
        self.cfg = cfg
        if cfg.scan_layers:
            @nnx.split_rngs(splits=cfg.depth)
            @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
            def make(rngs):
                return Block(cfg, rngs=rngs)
            self.blocks = make(rngs)
        else:
            self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.depth)])
        modulated = cfg.cond_dim > 0
        self.final_norm = layer_norm(cfg.width, affine=not modulated, eps=cfg.norm_eps, rngs=rngs)
        if modulated:
            self.final_modulation = dense(cfg.cond_dim, 2 * cfg.width, ("embed", "mlp"),
                                          rngs=rngs, dtype=cfg.dtype, zero=True)

    def init_cache(self, batch: int, length: int, ctx_BSD: jax.Array | None = None) -> Cache:
        """An empty KV cache for `length` positions; cross-attention K/V are computed once here."""
        cfg = self.cfg
        shape = (cfg.depth, batch, length, cfg.heads, cfg.head_dim)
        cache = {"k": jnp.zeros(shape, cfg.dtype), "v": jnp.zeros(shape, cfg.dtype)}
        if cfg.ctx_width:
            if ctx_BSD is None:
                raise ValueError("a cross-attending Transformer needs the context to build its cache")
            if cfg.scan_layers:
                @nnx.vmap(in_axes=(0, None), out_axes=0)
                def ctx_kv(block, ctx):
                    return block.cross.kv(ctx)
                cache["ck"], cache["cv"] = ctx_kv(self.blocks, ctx_BSD)
            else:
                kvs = [b.cross.kv(ctx_BSD) for b in self.blocks]
                cache["ck"] = jnp.stack([k for k, _ in kvs])
                cache["cv"] = jnp.stack([v for _, v in kvs])
        return cache

    def __call__(self, x_BTD, *, mask_BT=None, cond_BC=None, ctx_BSD=None, ctx_mask_BS=None,
                 cache: Cache | None = None, index=0, keys: int | None = None):
        """Runs the stack. With `cache`, `x_BTD` is the chunk at positions [index, index + T).

        `mask_BT` hides padding keys from self-attention (the caption encoder's padded captions),
        `ctx_mask_BS` the caption's padding from cross-attention. Padding masks are prefixes (True
        on the first n tokens, as every tokenizer here writes them): they reach the attention
        kernel as per-example lengths, the form cuDNN's fused kernel takes. Decoding attends to
        the cache's first `keys` positions only (static; all of them when None): a decoder that
        knows `index + T ≤ keys` reads no more of the cache than it has written. Returns the
        final normalised states in float32 and the updated cache.
        """
        cfg = self.cfg
        T = x_BTD.shape[1]
        kv_cache, cross = {}, {}
        if cache is None:
            self_attn = {"causal": cfg.causal, "lengths_B": _lengths(mask_BT)}
            implementation = attention_implementation(cfg)
        else:  # keys beyond the written prefix (and the future, if causal) are hidden
            kv_cache = {"k": cache["k"], "v": cache["v"]}
            cross = {name: cache[name] for name in ("ck", "cv") if name in cache}
            keys = keys or cache["k"].shape[2]
            key_pos = jnp.arange(keys)
            query_pos = index + jnp.arange(T)
            visible = key_pos[None, :] <= (query_pos[:, None] if cfg.causal else index + T - 1)
            self_attn = {"mask": visible[None, None], "keys": keys}
            implementation = "xla"   # decoding a token is memory-bound; no fused kernel needed
        ctx_lengths_B = _lengths(ctx_mask_BS)
        x_BTD = constrain(x_BTD.astype(jnp.float32), "batch", "seq", "act_embed")

        def body(block, carry, cross):
            x, kv, layer = carry
            x, kv = block(x, cond_BC, ctx_BSD, ctx_lengths_B, self_attn, kv, layer, index,
                          implementation, (cross["ck"], cross["cv"]) if cross else None)
            return x, kv, layer + 1

        if REMAT_POLICIES.get(cfg.remat):   # prevent_cse: unneeded inside a scan, costly
            body = nnx.remat(body, policy=REMAT_POLICIES[cfg.remat],
                             prevent_cse=not cfg.scan_layers)
        carry = (x_BTD, kv_cache, jnp.int32(0))
        if cfg.scan_layers:   # the cache travels in the carry, so each step updates it in place
            carry = nnx.scan(body, in_axes=(0, nnx.Carry, 0), out_axes=nnx.Carry,
                             transform_metadata={nnx.PARTITION_NAME: "layers"})(
                self.blocks, carry, cross)
        else:
            for i, block in enumerate(self.blocks):
                carry = body(block, carry, jax.tree.map(lambda a: a[i], cross))
        x_BTD, kv_cache, _ = carry
        cache = {**cache, **kv_cache} if cache is not None else {}

        h = self.final_norm(x_BTD)
        if cfg.cond_dim:
            mods = self.final_modulation(jax.nn.silu(cond_BC)).astype(jnp.float32)
            shift, scale = jnp.split(mods[:, None], 2, -1)
            h = h * (1 + scale) + shift
        return h, cache


def _lengths(mask_BS):
    """Valid lengths [B] (int32) of prefix padding masks; None for no mask."""
    return None if mask_BS is None else jnp.sum(mask_BS, axis=-1, dtype=jnp.int32)
