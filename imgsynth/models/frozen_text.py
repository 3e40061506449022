"""A frozen pretrained caption encoder from local weights (`text.encoder=clip`).

`trained` (the default) is the caption encoder of `models/text.py`, trained with the generator.
`clip` is OpenAI CLIP's text tower (`models/clip.ClipText`, the one the CLIP score uses too) —
read from a converted .npz (`text.weights`) with its BPE vocabulary (`text.vocab`), and checked
key by key against the architecture the config names (`text.clip`). Its per-token states are
computed once per caption in the encode stage and stored with the latents; the generator trains
only a projection of them (`models/text.CaptionProjection`), so the tower never enters the
optimizer state and its FLOPs are reported apart from training compute (docs/flops.md).
Evaluation computes the states on the fly with the same `FrozenTextEncoder`. See docs/text.md.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os

import numpy as np
from flax import nnx

from imgsynth import config as config_lib, flops, weights as weights_lib
from imgsynth.models import clip as clip_lib
from imgsynth.models.clip_tokenizer import ClipTokenizer
from imgsynth.models.transformer import TransformerConfig

ENCODERS = ("trained", "clip", "t5")
BATCH = 64   # captions per compiled call: the encode stage and evaluation run the same program


def encoder(config) -> str:
    """`text.encoder`, checked: a config error names the choices."""
    name = config.text.get("encoder", "trained")
    if name == "t5":
        raise config_lib.ConfigError("text.encoder='t5' is not implemented; use 'trained' or "
                                     "'clip' (docs/text.md)")
    if name not in ENCODERS:
        raise config_lib.ConfigError(f"text.encoder={name!r}; choose one of {ENCODERS[:2]}")
    return name


def is_frozen(config) -> bool:
    return encoder(config) != "trained"


def width(config) -> int:
    """Width of the frozen encoder's states (what the generator's projection reads)."""
    return config.text.clip.width


def clip_config(config) -> clip_lib.ClipConfig:
    """The text tower `text.clip` names, for captions of `text.max_len` tokens."""
    a = config.text.clip
    if a.width % a.heads:
        raise config_lib.ConfigError(f"text.clip.heads={a.heads} does not divide "
                                     f"text.clip.width={a.width}")
    if config.text.max_len > a.context_length:
        raise config_lib.ConfigError(f"text.max_len={config.text.max_len} (data.text_max_len) "
                                     f"exceeds the CLIP context length {a.context_length}")
    return clip_lib.ClipConfig(text_width=a.width, text_layers=a.depth,
                                 head_width=a.width // a.heads, vocab_size=a.vocab_size,
                                 context_length=a.context_length)


def cost(config) -> flops.Cost:
    """The frozen tower per caption: parameters and forward FLOPs at `text.max_len` tokens."""
    a = config.text.clip
    cfg = TransformerConfig(width=a.width, depth=a.depth, heads=a.heads, mlp_dim=4 * a.width,
                            causal=True)
    return flops.text_encoder(cfg, a.vocab_size, config.text.max_len, positions=a.context_length)


def _file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stat(path: str) -> tuple:
    stat = os.stat(path)
    return os.path.abspath(path), stat.st_size, stat.st_mtime_ns


def identity(config) -> str:
    """'' for the trained encoder; else a hash of everything that fixes the stored states: the
    encoder, its weight and vocabulary files, the architecture and the caption length.

    The check before anything is built: a missing weight or vocabulary file, a weight file that
    does not fit `text.clip`, a vocabulary of another size, and (for a run that pinned it in
    `text.hash`) weights changed since the run started are one-line config errors.
    """
    if not is_frozen(config):
        return ""
    t = config.text
    cfg = clip_config(config)
    for key, help_text in (("weights", clip_lib.WEIGHTS_HELP), ("vocab", "")):
        path = t.get(key, "")
        if not path:
            raise config_lib.ConfigError(f"text.encoder='clip' needs text.{key}=PATH (no "
                                         "download at run time; see docs/text.md)")
        if not os.path.isfile(os.path.expanduser(path)):
            raise config_lib.ConfigError(f"text.{key}={path}: no such file. {help_text}".strip())
    weights, vocab = os.path.expanduser(t.weights), os.path.expanduser(t.vocab)
    digest = _checked_identity(t.weights, _stat(weights), t.vocab, _stat(vocab), cfg, t.max_len)
    pinned = t.get("hash", "")
    if pinned and pinned != digest:
        raise config_lib.ConfigError(
            f"text.weights={t.weights} or text.vocab={t.vocab} changed since this run pinned "
            f"the frozen encoder (text.hash={pinned}, the files now give {digest}); restore them")
    return digest


@functools.lru_cache(maxsize=8)
def _checked_identity(weights_key: str, weights: tuple, vocab_key: str, vocab: tuple,
                      cfg: clip_lib.ClipConfig, max_len: int) -> str:
    """`identity` once per process for files of a given (path, size, mtime) (hashing a real
    CLIP file takes seconds)."""
    try:
        clip_lib.check_text_tower(weights_lib.shape_stand_ins(weights[0]), cfg)
    except (ValueError, OSError) as e:   # a zip error is an OSError
        raise config_lib.ConfigError(f"text.weights={weights_key}: {e} (text.clip names the "
                                     "architecture)") from None
    try:
        tokens = ClipTokenizer(vocab[0]).vocab_size
    except (ValueError, OSError) as e:
        raise config_lib.ConfigError(f"text.vocab={vocab_key}: {e}") from None
    if tokens != cfg.vocab_size:
        raise config_lib.ConfigError(f"text.vocab={vocab_key} has {tokens} tokens, text.clip."
                                     f"vocab_size={cfg.vocab_size}")
    key = {"encoder": "clip", "weights": _file_hash(weights[0]), "vocab": _file_hash(vocab[0]),
           "architecture": dataclasses.asdict(cfg), "max_len": max_len}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class FrozenTextEncoder:
    """Captions → (states float32 [N, L, W], mask bool [N, L]) of the frozen CLIP text tower.

    L = `text.max_len`: CLIP's tokens truncated there (keeping EOT last); the mask covers SOT to
    EOT. Captions run in batches of `BATCH`, so every caption goes through one compiled program
    wherever it is encoded.
    """

    def __init__(self, config, identity_hash: str):
        self.identity = identity_hash
        self.max_len = config.text.max_len
        self.tokenizer = ClipTokenizer(os.path.expanduser(config.text.vocab))
        self.model = clip_lib.load_text_tower(os.path.expanduser(config.text.weights),
                                                clip_config(config))
        self._states = nnx.jit(lambda model, tokens: model.states(tokens))
        self.num_truncated = 0

    def __call__(self, captions) -> tuple[np.ndarray, np.ndarray]:
        captions = [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in captions]
        self.num_truncated += sum(len(self.tokenizer.encode(c)) + 2 > self.max_len
                                  for c in captions)
        tokens = self.tokenizer(captions, self.max_len)
        mask = np.arange(self.max_len)[None] <= np.argmax(tokens, -1)[:, None]   # EOT: largest id
        out = np.empty((len(tokens), self.max_len, self.model.cfg.text_width), np.float32)
        for start in range(0, len(tokens), BATCH):
            chunk = tokens[start:start + BATCH]
            padded = np.pad(chunk, ((0, BATCH - len(chunk)), (0, 0)))
            states = self._states(self.model, padded)
            out[start:start + len(chunk)] = np.asarray(states)[:len(chunk)]
        return out, mask


_LOADED: dict[str, FrozenTextEncoder] = {}


def load(config) -> FrozenTextEncoder:
    """The run's frozen encoder (loaded once per process and identity)."""
    key = identity(config)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = FrozenTextEncoder(config, key)
    return _LOADED[key]
