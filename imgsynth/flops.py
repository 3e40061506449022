"""Analytic parameter counts and FLOPs — the x-axis of every plot in the study.

Convention (see docs/flops.md): a matmul with an [m, n] weight costs 2·m·n FLOPs per use; every
weight used in a matmul counts, heads included; embedding lookups cost nothing; self-attention adds
4·T²·d per layer (QKᵀ and AV, no causal discount); cross-attention adds 4·T·T_ctx·d per layer.
Training = 3 × forward. The autoencoder and a frozen caption encoder are excluded (latents and
caption states are precomputed); the frozen encoder's FLOPs are reported apart.

    python -m imgsynth.flops --config=experiments/flow.py:size=S [--json]
"""
from __future__ import annotations

import dataclasses
import json
import sys

from imgsynth.models.transformer import TransformerConfig


@dataclasses.dataclass(frozen=True)
class Cost:
    """Parameters and forward FLOPs per example of one component."""
    params: int = 0
    embedding_params: int = 0
    fwd_flops: float = 0.0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.params + other.params, self.embedding_params + other.embedding_params,
                    self.fwd_flops + other.fwd_flops)


def dense(fan_in: int, fan_out: int, uses: float = 1.0, bias: bool = True) -> Cost:
    """A linear layer applied `uses` times per example (tokens, or 1 for per-example layers)."""
    return Cost(params=fan_in * fan_out + (fan_out if bias else 0), fwd_flops=2.0 * fan_in * fan_out * uses)


def embedding(rows: int, cols: int) -> Cost:
    return Cost(embedding_params=rows * cols)


def layer_norm(width: int, affine: bool) -> Cost:
    return Cost(params=2 * width if affine else 0)


def transformer(cfg: TransformerConfig, tokens: int, ctx_tokens: int = 0) -> Cost:
    """One backbone stack (`models/transformer.py`) over `tokens` tokens and `ctx_tokens` context."""
    d, T, L = cfg.width, tokens, cfg.depth
    modulated = cfg.cond_dim > 0
    block = layer_norm(d, not modulated) + layer_norm(d, not modulated)
    block += dense(d, d, T) + dense(d, d, T) + dense(d, d, T) + dense(d, d, T)   # q, k, v, o
    block += Cost(fwd_flops=4.0 * T * T * d)                                        # QKᵀ and AV
    if cfg.ctx_width:
        block += layer_norm(d, True) + dense(d, d, T) + dense(d, d, T)              # cross q, o
        block += dense(cfg.ctx_width, d, ctx_tokens) + dense(cfg.ctx_width, d, ctx_tokens)
        block += Cost(fwd_flops=4.0 * T * ctx_tokens * d)
    block += dense(d, cfg.mlp_dim, T) + dense(cfg.mlp_dim, d, T)
    if modulated:
        block += dense(cfg.cond_dim, 6 * d, 1)
    total = Cost(block.params * L, block.embedding_params * L, block.fwd_flops * L)
    total += layer_norm(d, not modulated)
    if modulated:
        total += dense(cfg.cond_dim, 2 * d, 1)
    return total


def token_head(channels: int, cond_width: int, width: int, depth: int,
               time_freqs: int = 256) -> tuple[Cost, Cost]:
    """The per-token flow-matching head (`models/token_head.py`) on one token: the projection of
    its condition (once per token) and one velocity evaluation (time embedding, input, `depth`
    adaLN residual blocks, output) — times per token in training, sampler steps at inference."""
    condition = dense(cond_width, width)
    block = dense(width, width) + dense(width, width) + dense(width, 3 * width)
    evaluation = (dense(time_freqs, width) + dense(width, width) + dense(channels, width)
                  + Cost(block.params * depth, 0, block.fwd_flops * depth)
                  + dense(width, 2 * width) + dense(width, channels))
    return condition, evaluation


def text_encoder(cfg: TransformerConfig, vocab_size: int, max_len: int,
                 positions: int | None = None) -> Cost:
    """A caption encoder run on `max_len` tokens: embeddings (free) + a Transformer stack. The
    trained one (`models/text.py`) has `max_len` position rows; CLIP's text tower
    (`models/frozen_text.py`) has `positions` and reads the first `max_len`."""
    return (embedding(vocab_size, cfg.width) + embedding(positions or max_len, cfg.width)
            + transformer(cfg, max_len))


@dataclasses.dataclass(frozen=True)
class ModelCost:
    """A whole generator: named components, each with parameters and forward FLOPs per example.

    `frozen` holds what runs but is not trained (a pretrained caption encoder whose states are
    precomputed once per caption): reported apart, in neither parameters nor training compute.
    """
    components: dict[str, Cost]
    frozen: dict[str, Cost] = dataclasses.field(default_factory=dict)

    def _sum(self, attr: str):
        return sum(getattr(c, attr) for c in self.components.values())

    @property
    def params_total(self) -> int:
        return self._sum("params") + self._sum("embedding_params")

    @property
    def params_embedding(self) -> int:
        return self._sum("embedding_params")

    @property
    def params_nonembedding(self) -> int:
        return self._sum("params")

    @property
    def fwd_flops_per_example(self) -> float:
        return self._sum("fwd_flops")

    @property
    def train_flops_per_example(self) -> float:
        return 3.0 * self.fwd_flops_per_example

    def summary(self, global_batch_size: int, steps: int | None) -> dict:
        out = {
            "params_total": self.params_total,
            "params_embedding": self.params_embedding,
            "params_nonembedding": self.params_nonembedding,
            "fwd_flops_per_example": self.fwd_flops_per_example,
            "train_flops_per_example": self.train_flops_per_example,
            "train_flops_per_step": self.train_flops_per_example * global_batch_size,
            "steps": steps,
        }
        for name, c in self.components.items():
            out[f"fwd_flops/{name}"] = c.fwd_flops
        for name, c in self.frozen.items():
            out[f"frozen_params/{name}"] = c.params + c.embedding_params
            out[f"frozen_fwd_flops/{name}"] = c.fwd_flops
        return out


def decode_step_flops(cfg: TransformerConfig, position: int, ctx_tokens: int) -> float:
    """Forward FLOPs of one cached decoding step at `position` (it attends to position+1 keys).

    Cross-attention keys/values are computed once per image (see `cached_decode_flops`).
    """
    d, L = cfg.width, cfg.depth
    per_layer = 2.0 * (4 * d * d + 2 * d * cfg.mlp_dim) + 4.0 * (position + 1) * d
    if cfg.ctx_width:
        per_layer += 2.0 * 2 * d * d + 4.0 * ctx_tokens * d
    return L * per_layer


def cached_decode_flops(cfg: TransformerConfig, tokens: int, ctx_tokens: int) -> float:
    """Σₜ of the per-token cost of KV-cached decoding of `tokens` tokens, plus cross K/V once."""
    total = sum(decode_step_flops(cfg, t, ctx_tokens) for t in range(tokens))
    if cfg.ctx_width:
        total += cfg.depth * 2.0 * 2 * cfg.ctx_width * cfg.width * ctx_tokens
    return total


def report(config, as_json: bool = False) -> dict:
    """Prints the FLOPs table of a run config; returns the numbers."""
    from imgsynth import config as config_lib, registry

    module = registry.paradigm_module(config)
    cost = module.model_cost(config)
    try:
        steps = registry.plan(config).total_steps
    except config_lib.ConfigError as e:
        print(f"(steps: {e})", file=sys.stderr)
        steps = None
    summary = cost.summary(config.global_batch_size, steps)
    summary["inference_flops_per_image"] = module.inference_flops(config)
    print(f"paradigm={config.paradigm} size={config.size} "
          f"global_batch_size={config.global_batch_size}")
    for key, value in summary.items():
        text = "-" if value is None else (f"{value:,}" if isinstance(value, int) else f"{value:.4g}")
        print(f"  {key:<28} {text:>20}")
    if as_json:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file.")
    _JSON = flags.DEFINE_bool("json", False, "End with one JSON line of the numbers.")
    flags.mark_flag_as_required("config")
    app.run(lambda argv: report(_CONFIG.value, _JSON.value) and None)
