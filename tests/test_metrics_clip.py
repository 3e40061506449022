"""CLIP score: BPE tokenizer on a tiny vocab, tiny OpenAI-layout weights, full ViT-B/32 key coverage."""
import gzip

import numpy as np
import pytest
from flax import nnx

from imgsynth import weights as weights_lib
from imgsynth.metrics import clip_score
from imgsynth.models import clip as clip_lib
from imgsynth.models.clip_tokenizer import ClipTokenizer, pretokenize

TINY = clip_lib.ClipConfig(embed_dim=16, image_resolution=32, vision_layers=2, vision_width=64,
                             vision_patch_size=8, context_length=16, vocab_size=517, text_width=64,
                             text_layers=2, head_width=32)


def _block_shapes(prefix, w):
    return {f"{prefix}.attn.in_proj_weight": (3 * w, w), f"{prefix}.attn.in_proj_bias": (3 * w,),
            f"{prefix}.attn.out_proj.weight": (w, w), f"{prefix}.attn.out_proj.bias": (w,),
            f"{prefix}.ln_1.weight": (w,), f"{prefix}.ln_1.bias": (w,),
            f"{prefix}.mlp.c_fc.weight": (4 * w, w), f"{prefix}.mlp.c_fc.bias": (4 * w,),
            f"{prefix}.mlp.c_proj.weight": (w, 4 * w), f"{prefix}.mlp.c_proj.bias": (w,),
            f"{prefix}.ln_2.weight": (w,), f"{prefix}.ln_2.bias": (w,)}


def _openai_shapes(c: clip_lib.ClipConfig):
    """OpenAI CLIP ViT state_dict names and shapes, written out from openai/CLIP's model.py."""
    vw, tw, p = c.vision_width, c.text_width, c.vision_patch_size
    s = {"positional_embedding": (c.context_length, tw), "text_projection": (tw, c.embed_dim),
         "logit_scale": (), "token_embedding.weight": (c.vocab_size, tw),
         "ln_final.weight": (tw,), "ln_final.bias": (tw,),
         "visual.class_embedding": (vw,),
         "visual.positional_embedding": ((c.image_resolution // p) ** 2 + 1, vw),
         "visual.proj": (vw, c.embed_dim), "visual.conv1.weight": (vw, 3, p, p),
         "visual.ln_pre.weight": (vw,), "visual.ln_pre.bias": (vw,),
         "visual.ln_post.weight": (vw,), "visual.ln_post.bias": (vw,)}
    for i in range(c.text_layers):
        s |= _block_shapes(f"transformer.resblocks.{i}", tw)
    for i in range(c.vision_layers):
        s |= _block_shapes(f"visual.transformer.resblocks.{i}", vw)
    return s


def tiny_weights(seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for k, shape in _openai_shapes(TINY).items():
        if ".ln_" in f".{k}" and k.endswith(".weight"):
            out[k] = (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            fan_in = shape[-1] if len(shape) == 2 else (np.prod(shape[1:]) if len(shape) == 4 else 1)
            out[k] = (rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))).astype(np.float32)
    return out


def write_tiny_vocab(path):
    """Header + 3 merges: vocab = 256 bytes + 256 bytes</w> + 3 merges + SOT/EOT = 517 ids."""
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\nr e\nre d</w>\nl u\n")


def test_tokenizer_ids_on_a_tiny_vocab(tmp_path):
    write_tiny_vocab(tmp_path / "vocab.txt.gz")
    tok = ClipTokenizer(tmp_path / "vocab.txt.gz")
    assert tok.vocab_size == 517 and (tok.sot, tok.eot) == (515, 516)
    # 'red' merges fully to id 512 + 1; 'a' is byte 97 -> position 64 in the byte table, +256 for '</w>'
    np.testing.assert_array_equal(tok(["a red", "RED!"], context_length=6),
                                  [[515, 320, 513, 516, 0, 0], [515, 513, 256, 516, 0, 0]])
    long = tok(["red " * 20], context_length=6)[0]
    assert long[-1] == 516 and list(long[:5]) == [515] + [513] * 4
    with pytest.raises(ValueError, match="too long"):
        tok(["red " * 20], context_length=6, truncate=False)


def test_pretokenize_matches_clip_pattern():
    assert pretokenize("it's 12 dogs!! café, 東京") == \
        ["it", "'s", "1", "2", "dogs", "!!", "café", ",", "東京"]
    assert pretokenize("a<|endoftext|>b") == ["a", "<|endoftext|>", "b"]


def test_missing_vocab_or_weights_say_where_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="bpe_simple_vocab_16e6"):
        ClipTokenizer(tmp_path / "missing.txt.gz")
    with pytest.raises(FileNotFoundError, match="ViT-B-32.pt.*--convert"):
        clip_lib.load_clip(tmp_path / "missing.npz")


def test_full_vit_b32_state_dict_layout_is_consumed_completely():
    shapes = _openai_shapes(clip_lib.ClipConfig())
    stand_ins = {k: np.broadcast_to(np.float32(0), v) for k, v in shapes.items()}  # no memory
    assert clip_lib.ClipConfig.from_weights(stand_ins) == clip_lib.ClipConfig()
    _, _, filled, targets = weights_lib.match_weights(
        lambda: clip_lib.CLIP(clip_lib.ClipConfig(), rngs=nnx.Rngs(0)), stand_ins,
        clip_lib._convert)
    assert len(filled) == len(targets) == len(shapes)
    n_params = sum(int(np.prod(v)) for v in shapes.values())
    assert 151_000_000 < n_params < 152_000_000  # ViT-B/32 has 151.3M parameters


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    weights_lib.write_npz(d / "clip.npz", tiny_weights())
    write_tiny_vocab(d / "vocab.txt.gz")
    return clip_lib.load_clip(d / "clip.npz", config=TINY), ClipTokenizer(d / "vocab.txt.gz"), d


def test_clip_score_on_tiny_weights_matches_reference(tiny_clip):
    model, tok, d = tiny_clip
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 24, 40, 3), dtype=np.uint8)  # non-square: resize + centre crop
    captions = ["a red ball", "lulu", "red red red"]
    cos = clip_score.clip_cosines(model, tok, images, captions, batch_size=2)
    np.testing.assert_allclose(cos, GOLDEN_COSINES, atol=2e-5)
    np.testing.assert_allclose(clip_score.clip_scores(model, tok, images, captions), 0.0)  # all cos < 0
    flipped = tiny_weights()
    flipped["visual.proj"] = -flipped["visual.proj"]  # negates every image embedding, so every cosine
    weights_lib.write_npz(d / "flipped.npz", flipped)
    mean = clip_score.clip_score(images, captions, d / "flipped.npz", d / "vocab.txt.gz", config=TINY)
    assert mean == pytest.approx(-100 * np.mean(GOLDEN_COSINES), rel=1e-4)
    with pytest.raises(ValueError, match="2 images but 3 captions"):
        clip_score.clip_scores(model, tok, images[:2], captions)


# Cosines from open_clip 3.3.0 (QuickGELU, OpenAI preprocessing) with `tiny_weights()` loaded into
# CLIP(16, CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=8, image_size=32),
# CLIPTextCfg(context_length=16, vocab_size=517, width=64, heads=2, layers=2)), fed the token ids
# this tokenizer gives, on the images and captions of the test above.
GOLDEN_COSINES = [-0.32863408, -0.31936353, -0.35493067]
