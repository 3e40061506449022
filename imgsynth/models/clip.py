"""OpenAI's CLIP (ViT-B/32 by default) in Flax NNX, from local files only: both towers.

The CLIP-score metric (`metrics/clip_score.py`) uses the whole model, the frozen caption
encoder (`models/frozen_text.py`) the text tower alone. The architecture is OpenAI's `model.py`
ViT variant (QuickGELU, pre-norm residual attention blocks, class token, causal text transformer
read at the EOT token); images get OpenAI's preprocessing (bicubic resize of the short side to
the input resolution, centre crop, CLIP mean/std) done with PIL, as `clip.load` does.

Nothing is downloaded. The weight file is an .npz with OpenAI's state_dict names and layouts
(`visual.conv1.weight`, `transformer.resblocks.0.attn.in_proj_weight`, ...); make it once, on a
machine with torch, from OpenAI's released checkpoint:

    python -m imgsynth.models.clip --convert ViT-B-32.pt --out clip_vit_b32.npz
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from imgsynth import weights as weights_lib

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
WEIGHTS_HELP = (
    "Download OpenAI's ViT-B-32.pt (the URL is in openai/CLIP's clip/clip.py, _MODELS) on a "
    "machine with network access, then convert it with: python -m imgsynth.models.clip --convert "
    "ViT-B-32.pt --out clip_vit_b32.npz (needs torch there only).")
_CHECKPOINT_EXTRAS = ("input_resolution", "context_length", "vocab_size")


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """OpenAI CLIP ViT hyper-parameters; the defaults are ViT-B/32. Heads = width // head_width."""
    embed_dim: int = 512
    image_resolution: int = 224
    vision_layers: int = 12
    vision_width: int = 768
    vision_patch_size: int = 32
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 512
    text_layers: int = 12
    head_width: int = 64

    @classmethod
    def from_weights(cls, weights: dict[str, np.ndarray], head_width: int = 64) -> "ClipConfig":
        """Reads the hyper-parameters off a state_dict, as OpenAI's `build_model` does."""
        def count(prefix):
            depth = len(prefix.split("."))
            return len({k.split(".")[depth] for k in weights if k.startswith(prefix + ".")})
        try:
            conv = weights["visual.conv1.weight"]
            grid = round((weights["visual.positional_embedding"].shape[0] - 1) ** 0.5)
            return cls(
                embed_dim=weights["text_projection"].shape[1],
                image_resolution=conv.shape[-1] * grid,
                vision_layers=count("visual.transformer.resblocks"), vision_width=conv.shape[0],
                vision_patch_size=conv.shape[-1],
                context_length=weights["positional_embedding"].shape[0],
                vocab_size=weights["token_embedding.weight"].shape[0],
                text_width=weights["ln_final.weight"].shape[0],
                text_layers=count("transformer.resblocks"), head_width=head_width)
        except KeyError as e:
            raise ValueError(f"not an OpenAI CLIP ViT state_dict: key {e} is missing") from e


def _quick_gelu(x):
    return x * jax.nn.sigmoid(1.702 * x)


class Attention(nnx.Module):
    """torch.nn.MultiheadAttention's packed q/k/v projection, batch-first."""

    def __init__(self, width: int, heads: int, *, rngs: nnx.Rngs):
        self.heads = heads
        self.in_proj = nnx.Linear(width, 3 * width, rngs=rngs)
        self.out_proj = nnx.Linear(width, width, rngs=rngs)

    def __call__(self, x_BLD, causal: bool):
        b, length, d = x_BLD.shape
        qkv = self.in_proj(x_BLD).reshape(b, length, 3 * self.heads, d // self.heads)
        q, k, v = jnp.split(qkv, 3, axis=2)
        logits_BHLL = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d // self.heads)
        if causal:
            allowed = jnp.tril(jnp.ones((length, length), bool))
            logits_BHLL = jnp.where(allowed, logits_BHLL, -jnp.inf)
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits_BHLL, axis=-1), v)
        return self.out_proj(out.reshape(b, length, d))


class Mlp(nnx.Module):
    def __init__(self, width: int, *, rngs: nnx.Rngs):
        self.c_fc = nnx.Linear(width, 4 * width, rngs=rngs)
        self.c_proj = nnx.Linear(4 * width, width, rngs=rngs)

    def __call__(self, x):
        return self.c_proj(_quick_gelu(self.c_fc(x)))


class ResidualAttentionBlock(nnx.Module):
    def __init__(self, width: int, heads: int, *, rngs: nnx.Rngs):
        self.ln_1 = nnx.LayerNorm(width, epsilon=1e-5, rngs=rngs)
        self.attn = Attention(width, heads, rngs=rngs)
        self.ln_2 = nnx.LayerNorm(width, epsilon=1e-5, rngs=rngs)
        self.mlp = Mlp(width, rngs=rngs)

    def __call__(self, x, causal: bool):
        x = x + self.attn(self.ln_1(x), causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nnx.Module):
    def __init__(self, width: int, layers: int, heads: int, *, rngs: nnx.Rngs):
        self.resblocks = nnx.List([ResidualAttentionBlock(width, heads, rngs=rngs)
                                   for _ in range(layers)])

    def __call__(self, x, causal: bool):
        for block in self.resblocks:
            x = block(x, causal)
        return x


class VisionTransformer(nnx.Module):
    def __init__(self, cfg: ClipConfig, *, rngs: nnx.Rngs):
        w, p = cfg.vision_width, cfg.vision_patch_size
        tokens = (cfg.image_resolution // p) ** 2 + 1
        init = nnx.initializers.normal(w ** -0.5)
        self.conv1 = nnx.Conv(3, w, (p, p), strides=(p, p), padding="VALID", use_bias=False,
                              rngs=rngs)
        self.class_embedding = nnx.Param(init(rngs.params(), (w,)))
        self.positional_embedding = nnx.Param(init(rngs.params(), (tokens, w)))
        self.ln_pre = nnx.LayerNorm(w, epsilon=1e-5, rngs=rngs)
        self.transformer = Transformer(w, cfg.vision_layers, w // cfg.head_width, rngs=rngs)
        self.ln_post = nnx.LayerNorm(w, epsilon=1e-5, rngs=rngs)
        self.proj = nnx.Param(init(rngs.params(), (w, cfg.embed_dim)))

    def __call__(self, x_BHWC):
        x = self.conv1(x_BHWC)
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        cls = jnp.broadcast_to(self.class_embedding[...], (x.shape[0], 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], axis=1) + self.positional_embedding[...]
        x = self.transformer(self.ln_pre(x), causal=False)
        return self.ln_post(x[:, 0]) @ self.proj[...]


class ClipText(nnx.Module):
    """CLIP's text tower up to `ln_final`: per-token states of a causal Transformer.

    CLIP score pools it at the EOT token and projects it (`CLIP.encode_text`); a generator with
    `text.encoder=clip` conditions on the states themselves (`models/frozen_text.py`). The
    attribute names are OpenAI's, at the root of its state_dict, so both load by the same walk.
    """

    def __init__(self, cfg: ClipConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.transformer = Transformer(cfg.text_width, cfg.text_layers,
                                       cfg.text_width // cfg.head_width, rngs=rngs)
        self.token_embedding = nnx.Embed(cfg.vocab_size, cfg.text_width, rngs=rngs)
        self.positional_embedding = nnx.Param(
            nnx.initializers.normal(0.01)(rngs.params(), (cfg.context_length, cfg.text_width)))
        self.ln_final = nnx.LayerNorm(cfg.text_width, epsilon=1e-5, rngs=rngs)

    def states(self, tokens_BL):
        """[B, L, text_width] for any L up to the context length: the tower is causal, so the
        states of a prefix do not depend on the positions after it."""
        pos_LD = self.positional_embedding[...][: tokens_BL.shape[1]]
        x = self.token_embedding(tokens_BL) + pos_LD
        return self.ln_final(self.transformer(x, causal=True))


class CLIP(ClipText):
    """The text tower plus the image tower and the text projection."""

    def __init__(self, cfg: ClipConfig, *, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs)
        self.visual = VisionTransformer(cfg, rngs=rngs)
        proj_init = nnx.initializers.normal(cfg.text_width ** -0.5)
        self.text_projection = nnx.Param(proj_init(rngs.params(), (cfg.text_width, cfg.embed_dim)))
        self.logit_scale = nnx.Param(jnp.asarray(np.log(1 / 0.07), jnp.float32))

    def encode_image(self, x_BHWC):
        """Embeddings of images already preprocessed (`preprocess`)."""
        return self.visual(x_BHWC)

    def encode_text(self, tokens_BL):
        x = self.states(tokens_BL)
        eot = jnp.argmax(tokens_BL, axis=-1)  # EOT has the largest id in the vocabulary
        return x[jnp.arange(x.shape[0]), eot] @ self.text_projection[...]


def _convert(key: str, array: np.ndarray):
    """OpenAI state_dict entry → NNX variable path and layout."""
    parts = [int(p) if p.isdigit() else p for p in key.split(".")]
    *module, leaf = parts
    if leaf == "in_proj_weight":
        return [((*module, "in_proj", "kernel"), array.T)]
    if leaf == "in_proj_bias":
        return [((*module, "in_proj", "bias"), array)]
    if leaf == "weight":
        if module and str(module[-1]).startswith("ln"):
            return [((*module, "scale"), array)]
        if module == ["token_embedding"]:
            return [((*module, "embedding"), array)]
        if array.ndim == 4:
            return [((*module, "kernel"), array.transpose(2, 3, 1, 0))]
        return [((*module, "kernel"), array.T)]
    return [(tuple(parts), array)]


def load_clip(weights_path, config: ClipConfig | None = None) -> CLIP:
    """CLIP from a converted .npz; the config is read off the weights unless given."""
    weights = weights_lib.read_npz(weights_path, what="CLIP", how_to_get=WEIGHTS_HELP)
    cfg = config or ClipConfig.from_weights(weights)
    return weights_lib.load_into(lambda: CLIP(cfg, rngs=nnx.Rngs(0)), weights, _convert,
                              ignore=lambda k: k in _CHECKPOINT_EXTRAS, what="CLIP")


def _text_tower(cfg: ClipConfig) -> dict:
    """The loading arguments of the text tower of `cfg` out of a CLIP state_dict (a full
    checkpoint, or its text keys only): the image tower's keys are ignored."""
    def ignore(key):
        return (key.startswith("visual.") or key in ("text_projection", "logit_scale")
                or key in _CHECKPOINT_EXTRAS)
    return dict(factory=lambda: ClipText(cfg, rngs=nnx.Rngs(0)), convert=_convert, ignore=ignore,
                what="CLIP text tower")


def check_text_tower(shapes: dict[str, np.ndarray], cfg: ClipConfig) -> None:
    """Raises ValueError naming every key of a CLIP state_dict (arrays or zero-stride stand-ins,
    `weights_lib.shape_stand_ins`) that does not fit the text tower of `cfg`."""
    weights_lib.match_weights(weights=shapes, **_text_tower(cfg))


def load_text_tower(weights_path, cfg: ClipConfig) -> ClipText:
    """The text tower of `cfg` from a converted CLIP .npz (shapes checked key by key)."""
    weights = weights_lib.read_npz(weights_path, what="CLIP", how_to_get=WEIGHTS_HELP)
    return weights_lib.load_into(weights=weights, **_text_tower(cfg))


def preprocess(images, resolution: int) -> np.ndarray:
    """OpenAI's transform: bicubic resize of the short side, centre crop, CLIP mean/std; NHWC."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3] RGB, got shape {images.shape}")
    if images.dtype != np.uint8:
        if not np.all(np.isfinite(images)) or images.min() < -1e-3 or images.max() > 1 + 1e-3:
            raise ValueError("float images must lie in [0, 1] (pass uint8 for [0, 255])")
        images = np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)
    out = np.empty((len(images), resolution, resolution, 3), np.float32)
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        scale = resolution / min(h, w)
        size = (resolution, int(w * scale)) if h <= w else (int(h * scale), resolution)
        pil = Image.fromarray(img).resize((size[1], size[0]), Image.BICUBIC)
        top, left = int(round((size[0] - resolution) / 2)), int(round((size[1] - resolution) / 2))
        crop = np.asarray(pil, np.float32)[top:top + resolution, left:left + resolution] / 255.0
        out[i] = (crop - CLIP_MEAN) / CLIP_STD
    return out


def convert_checkpoint(pt_path: str, out_path: str) -> None:
    """OpenAI CLIP .pt (JIT archive or state_dict) → .npz with the same names, as float32."""
    torch = weights_lib.import_torch(".pt")
    try:
        state = torch.jit.load(pt_path, map_location="cpu").state_dict()
    except RuntimeError:
        state = torch.load(pt_path, map_location="cpu", weights_only=True)
    arrays = {k: v.detach().cpu().float().numpy() for k, v in state.items()
              if k not in _CHECKPOINT_EXTRAS}
    cfg = ClipConfig.from_weights(arrays)
    weights_lib.load_into(lambda: CLIP(cfg, rngs=nnx.Rngs(0)), arrays, _convert, what="CLIP")
    weights_lib.write_npz(out_path, arrays)


def main(argv=None) -> None:
    weights_lib.conversion_main(convert_checkpoint, "an OpenAI CLIP checkpoint (.pt)", argv)


if __name__ == "__main__":
    main()
