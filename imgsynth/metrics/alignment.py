"""Alignment score: a small contrastive image–caption model trained on the dataset itself.

The CLIP score of the study, without CLIP: score = 100 · max(cos(image, caption), 0) averaged
over pairs, where the embeddings come from a CNN image tower (2×2 space-to-depth stem, per-cell
pooled features as in the judge, so layout survives) and a small Transformer over the dataset's word tokens (word order
matters: "a red circle above a blue square" ≠ "a blue circle above a red square"). Trained with a
symmetric InfoNCE loss in which pairs with identical captions count as positives.

Where no judge guards the data (any dataset but shapes), the model the stages train also has a
*readable* head on its image features, learnt from real images against destroyed copies of them
(`corruptions.training_negatives`): an image it rejects scores 0 and is never retrieved, so
colour noise, blur or shuffled patches cannot score as their caption's image.

How good the instrument is gets measured and stored with it: image→caption retrieval accuracy on
real held-out test pairs (`retrieval_protocol`). Trained once per dataset version (any captioned dataset: `_data.Dataset`) by the run's stages
or, for shapes, `python -m imgsynth.metrics.train_alignment`, and cached at
`<data_dir>/alignment/<dataset key>/`. Its image tower's hidden features are also what `fd_align`
and KID compare.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from imgsynth import io, weights as weights_lib
from imgsynth.data import shapes
from imgsynth.data.images import to_float
from imgsynth.data.scene import GRID
from imgsynth.data.tokenizer import WordTokenizer
from imgsynth.metrics import _data
from imgsynth.metrics.judge import _cell_pool_matrix
from imgsynth.models.layers import space_to_depth

INFO_FILE, VOCAB_FILE = "alignment.json", "vocab.json"
# The alignment model trained on all of r32 with the default settings (1,000 steps, retrieval
# 0.674 against ~1% chance), for every 32 px shapes dataset whose words it knows.
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shipped",
                           "alignment-shapes-32px")
RETRIEVAL_GROUP = 100


def retrieval_protocol(group: int = RETRIEVAL_GROUP) -> str:
    """The retrieval protocol in words, as stored next to the accuracy."""
    return (f"image->caption top-1 on the test split in consecutive groups of {group} pairs "
            f"(stored order): each image ranks its group's {group} captions by cosine; a hit is a "
            "top caption whose text equals the image's own caption (duplicates in a group count "
            f"as the same caption). Chance is about {100 / group:.0f}% plus duplicates.")


@dataclasses.dataclass(frozen=True)
class AlignmentConfig:
    resolution: int = 32
    vocab_size: int = 64
    text_max_len: int = 16
    widths: tuple[int, ...] = (32, 64)  # conv stages after a 2x2 space-to-depth stem
    width: int = 128  # text Transformer width and image head width
    layers: int = 2
    heads: int = 4
    embed_dim: int = 128
    reject: bool = False  # a readable head: images it rejects score 0 (`Alignment.readable`)


class ImageTower(nnx.Module):
    def __init__(self, cfg: AlignmentConfig, *, rngs: nnx.Rngs):
        convs, cin = [], 12
        for i, w in enumerate(cfg.widths):
            convs.append(nnx.Conv(cin, w, (3, 3), strides=1 if i == 0 else 2, rngs=rngs))
            convs.append(nnx.Conv(w, w, (3, 3), rngs=rngs))
            cin = w
        self.resolution = cfg.resolution
        self.convs = nnx.List(convs)
        self.hidden = nnx.Linear(GRID * GRID * cin, cfg.width, rngs=rngs)
        self.proj = nnx.Linear(cfg.width, cfg.embed_dim, rngs=rngs)

    def features(self, images_BHWC):
        """The hidden layer before the projection: what fd_align and KID compare."""
        x = space_to_depth(to_float(images_BHWC), 2)
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        p = _cell_pool_matrix(x.shape[1], self.resolution / x.shape[1], self.resolution)
        cells = jnp.einsum("ry,cx,byxd->brcd", p, p, x).reshape(x.shape[0], -1)
        return jax.nn.relu(self.hidden(cells))

    def __call__(self, images_BHWC):
        return self.proj(self.features(images_BHWC))


class TextBlock(nnx.Module):
    def __init__(self, width: int, heads: int, *, rngs: nnx.Rngs):
        self.ln_1 = nnx.LayerNorm(width, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(heads, width, decode=False, rngs=rngs)
        self.ln_2 = nnx.LayerNorm(width, rngs=rngs)
        self.fc = nnx.Linear(width, 4 * width, rngs=rngs)
        self.out = nnx.Linear(4 * width, width, rngs=rngs)

    def __call__(self, x, mask):
        x = x + self.attn(self.ln_1(x), mask=mask)
        return x + self.out(jax.nn.gelu(self.fc(self.ln_2(x))))


class TextTower(nnx.Module):
    def __init__(self, cfg: AlignmentConfig, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(cfg.vocab_size, cfg.width, rngs=rngs)
        init = nnx.initializers.normal(0.02)
        self.pos = nnx.Param(init(rngs.params(), (cfg.text_max_len, cfg.width)))
        self.blocks = nnx.List([TextBlock(cfg.width, cfg.heads, rngs=rngs)
                                for _ in range(cfg.layers)])
        self.ln = nnx.LayerNorm(cfg.width, rngs=rngs)
        self.proj = nnx.Linear(cfg.width, cfg.embed_dim, rngs=rngs)

    def __call__(self, ids_BL, mask_BL):
        x = self.embed(ids_BL) + self.pos[...][None, : ids_BL.shape[1]]
        attn_mask = nnx.make_attention_mask(mask_BL, mask_BL)
        for block in self.blocks:
            x = block(x, attn_mask)
        m = mask_BL[..., None].astype(x.dtype)
        pooled = (self.ln(x) * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
        return self.proj(pooled)


class AlignmentNet(nnx.Module):
    def __init__(self, cfg: AlignmentConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.image = ImageTower(cfg, rngs=rngs)
        self.text = TextTower(cfg, rngs=rngs)
        self.logit_scale = nnx.Param(jnp.asarray(np.log(1 / 0.07), jnp.float32))
        self.readable = nnx.Linear(cfg.width, 1, rngs=rngs) if cfg.reject else None

    def readable_logits(self, images):
        """[B] logit that the image is a readable one (a model with the head only)."""
        return self.readable(self.image.features(images))[:, 0]

    def embed(self, images, ids, mask):
        """Unit-norm image and caption embeddings."""
        img, txt = self.image(images), self.text(ids, mask)
        return (img / jnp.linalg.norm(img, axis=-1, keepdims=True),
                txt / jnp.linalg.norm(txt, axis=-1, keepdims=True))


@nnx.jit
def _embed_images(model: AlignmentNet, images):
    img = model.image(images)
    return img / jnp.linalg.norm(img, axis=-1, keepdims=True)


@nnx.jit
def _image_features(model: AlignmentNet, images):
    return model.image.features(images)


@nnx.jit
def _readable(model: AlignmentNet, images):
    return model.readable_logits(images) > 0


@nnx.jit
def _embed_texts(model: AlignmentNet, ids, mask):
    txt = model.text(ids, mask)
    return txt / jnp.linalg.norm(txt, axis=-1, keepdims=True)


def _batched(fn, arrays, batch_size: int) -> np.ndarray:
    """fn over fixed-size padded batches of `arrays` (one compiled shape), concatenated."""
    n = len(arrays[0])
    out = []
    for start in range(0, n, batch_size):
        chunk = [a[start:start + batch_size] for a in arrays]
        pad = batch_size - len(chunk[0])
        if pad:
            chunk = [np.concatenate([c, np.repeat(c[:1], pad, axis=0)]) for c in chunk]
        out.append(np.asarray(fn(*(jnp.asarray(c) for c in chunk)))[: batch_size - pad])
    return np.concatenate(out)


class Alignment:
    """A trained alignment model, its tokenizer, and its measured quality (`info`)."""

    def __init__(self, model: AlignmentNet, tokenizer: WordTokenizer, info: dict | None = None,
                 batch_size: int = 256):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.info = dict(info or {})

    @property
    def config(self) -> AlignmentConfig:
        return self.model.cfg

    @property
    def retrieval_accuracy(self) -> float | None:
        return self.info.get("retrieval_accuracy")

    def _checked(self, images) -> np.ndarray:
        images = np.asarray(images)
        r = self.config.resolution
        if images.ndim != 4 or images.shape[1:] != (r, r, 3) or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 [N, {r}, {r}, 3] images, got {images.dtype} "
                             f"{images.shape}")
        return images

    def embed_images(self, images) -> np.ndarray:
        return _batched(lambda x: _embed_images(self.model, x), [self._checked(images)],
                        self.batch_size)

    def readable(self, images) -> np.ndarray:
        """[N] bool: the image is not rejected as destroyed (all True without the head)."""
        images = self._checked(images)
        if not self.config.reject:
            return np.ones(len(images), bool)
        return _batched(lambda x: _readable(self.model, x), [images], self.batch_size)

    def image_features(self, images) -> np.ndarray:
        """[N, width] image-tower features (float64) for fd_align and KID."""
        return _batched(lambda x: _image_features(self.model, x), [self._checked(images)],
                        self.batch_size).astype(np.float64)

    def embed_captions(self, captions) -> np.ndarray:
        ids, mask = self.tokenizer.encode(list(captions))
        return _batched(lambda i, m: _embed_texts(self.model, i, m), [ids, mask], self.batch_size)

    def cosines(self, images, captions) -> np.ndarray:
        captions = list(captions)
        if len(captions) != len(images):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        if not captions:
            raise ValueError("no image-caption pairs to score")
        return np.sum(self.embed_images(images) * self.embed_captions(captions), axis=-1)

    def save(self, directory: str) -> None:
        vocab = {"kind": "word", "max_len": self.tokenizer.max_len, "vocab": self.tokenizer.vocab}
        weights_lib.save_model(directory, self.model, INFO_FILE, self.info,
                            {VOCAB_FILE: weights_lib.json_bytes(vocab)})


def alignment_scores(model: Alignment, images, captions) -> np.ndarray:
    """Per-pair 100 · max(cos, 0); 0 for an image the model rejects as unreadable."""
    return 100.0 * np.maximum(model.cosines(images, captions), 0.0) * model.readable(images)


def alignment_score(model: Alignment, images, captions) -> float:
    """Mean alignment score of generated images with their prompts (CLIP-score convention)."""
    return float(np.mean(alignment_scores(model, images, captions)))


def retrieval_accuracy(model: Alignment, images, captions, group: int = RETRIEVAL_GROUP) -> float:
    """Image→caption top-1 accuracy under `retrieval_protocol(group)` (a short tail is dropped)."""
    n = len(captions) // group * group
    if n == 0:
        raise ValueError(f"retrieval needs at least {group} pairs, got {len(captions)}")
    img, txt = model.embed_images(images[:n]), model.embed_captions(captions[:n])
    readable = model.readable(images[:n])
    hits = []
    for start in range(0, n, group):
        sims = img[start:start + group] @ txt[start:start + group].T
        best = np.argmax(sims, axis=1)
        hits += [captions[start + b] == captions[start + i] and readable[start + i]
                 for i, b in enumerate(best)]
    return float(np.mean(hits))


def retrieval_chance(captions, group: int = RETRIEVAL_GROUP) -> float:
    """Expected `retrieval_accuracy` of a model that ranks captions at random: per image, the
    share of its group's captions whose text equals its own."""
    n = len(captions) // group * group
    if n == 0:
        raise ValueError(f"retrieval needs at least {group} pairs, got {len(captions)}")
    same = []
    for start in range(0, n, group):
        ids = np.unique(np.asarray(captions[start:start + group]), return_inverse=True)[1]
        same += list(np.bincount(ids)[ids] / group)
    return float(np.mean(same))


def false_positive_rates(model: Alignment, images, captions,
                         destroyed: dict[str, np.ndarray]) -> dict:
    """The alignment model on destroyed copies (`corruptions`) of real `images`, each against the
    caption of the image it was made from. No scene is left in them: retrieval above
    `alignment_retrieval_chance`, or a score above real images' with mismatched captions
    (`alignment_score_mismatched`), credits garbage. `alignment_false_positive` is the worst
    corruption's retrieval accuracy."""
    captions = list(captions)
    group = min(RETRIEVAL_GROUP, len(captions))
    retrieval, score, rejected = {}, {}, {}
    for name, x in destroyed.items():
        retrieval[name] = retrieval_accuracy(model, x, captions, group)
        score[name] = alignment_score(model, x, captions)
        rejected[name] = float(1 - model.readable(x).mean())
    return {"alignment_false_positive": max(retrieval.values()),
            "alignment_retrieval_chance": retrieval_chance(captions, group),
            "alignment_false_positive_per_corruption": retrieval,
            "alignment_score_per_corruption": score,
            "alignment_unreadable_per_corruption": rejected,
            "alignment_score_mismatched": alignment_score(model, images,
                                                          captions[-1:] + captions[:-1])}


def alignment_dir(data_dir: str, builder_config: str = "r32") -> str:
    return _data.cache_dir(data_dir, "alignment", builder_config)


def load_alignment_from(directory: str) -> Alignment:
    model, info = weights_lib.load_model(directory, INFO_FILE, AlignmentConfig, AlignmentNet,
                                      what="alignment model")
    return Alignment(model, WordTokenizer.load(os.path.join(directory, VOCAB_FILE)), info)


def shipped_alignment(dataset: _data.Dataset) -> str | None:
    """The alignment model that ships with the package, if it serves `dataset`: shapes of the same
    version and resolution (every builder config draws from one scene generator), captions of
    the same length and no word it has not seen (it reads captions with its own vocabulary)."""
    info = io.read_json(os.path.join(SHIPPED_DIR, INFO_FILE), {})
    vocab = io.read_json(os.path.join(SHIPPED_DIR, VOCAB_FILE), {})
    if dataset.spec.name != "shapes" or not info:
        return None
    words = dataset.tokenizer().vocab
    fits = (info.get("dataset_version") == shapes.VERSION
            and info["config"]["resolution"] == dataset.resolution
            and vocab.get("max_len") == dataset.tokenizer().max_len
            and set(words) <= set(vocab.get("vocab", ())))
    return SHIPPED_DIR if fits else None


def install_shipped(directory: str) -> None:
    """Copies the shipped alignment model into a dataset's cache `directory`."""
    info = io.read_json(os.path.join(SHIPPED_DIR, INFO_FILE))
    io.install_shipped(SHIPPED_DIR, directory, INFO_FILE, {
        **info, "shipped": f"trained on {info['builder_config']}, shipped with the package"})


def load_alignment(data, builder_config: str = "r32") -> Alignment:
    """The cached alignment model of a dataset (a `_data.Dataset`, or a shapes data_dir and
    builder config); says how to make it when there is none."""
    return load_alignment_from(_data.as_dataset(data, builder_config).trained_dir(
        "alignment", info_file=INFO_FILE, what="alignment model"))
