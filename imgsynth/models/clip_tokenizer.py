"""OpenAI CLIP's byte-level BPE tokenizer, reading the merges from a local vocab file.

Same algorithm and ids as CLIP's `SimpleTokenizer` (`bpe_simple_vocab_16e6.txt.gz`), with two
dependency-free substitutions: the pre-tokenising regex's `\\p{L}` / `\\p{N}` classes are applied by
a scanner over `unicodedata` categories (the stdlib `re` has no Unicode property classes), and
ftfy's mojibake repair is not applied (captions here are clean text; ids are identical for them).
"""
from __future__ import annotations

import gzip
import html
import os
import unicodedata
from functools import lru_cache

import numpy as np

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
_NUM_MERGES = 49152 - 256 - 2  # CLIP uses the first 48894 merges of the file
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
VOCAB_HELP = ("bpe_simple_vocab_16e6.txt.gz ships with OpenAI's CLIP repository "
              "(clip/bpe_simple_vocab_16e6.txt.gz) and with the open_clip package; copy it locally.")


@lru_cache()
def bytes_to_unicode() -> dict[int, str]:
    """Reversible byte → printable character map, so BPE never sees whitespace or control bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _kind(ch: str) -> str:
    cat = unicodedata.category(ch)
    if ch.isspace():
        return "space"
    return {"L": "letter", "N": "number"}.get(cat[0], "other")


def pretokenize(text: str) -> list[str]:
    """The matches of CLIP's pattern `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|
    [\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+` (case-insensitive), in order."""
    out, i, n = [], 0, len(text)
    while i < n:
        rest = text[i:]
        special = next((s for s in (SOT, EOT) if rest.startswith(s)), None)
        contraction = next((c for c in _CONTRACTIONS if rest[:len(c)].lower() == c), None)
        kind = _kind(text[i])
        if special or contraction:
            tok = special or rest[:len(contraction)]
        elif kind == "space":
            i += 1
            continue
        elif kind == "number":
            tok = text[i]
        else:  # a run of letters, or a run of "other" (neither space, letter nor number)
            j = i + 1
            while j < n and _kind(text[j]) == kind:
                j += 1
            tok = text[i:j]
        out.append(tok)
        i += len(tok)
    return out


def _pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return set(zip(word[:-1], word[1:]))


class ClipTokenizer:
    """Text → CLIP token ids ([SOT] + BPE + [EOT], zero-padded to the context length)."""

    def __init__(self, bpe_path: str | os.PathLike):
        bpe_path = os.fspath(bpe_path)
        if not os.path.isfile(bpe_path):
            raise FileNotFoundError(f"CLIP BPE vocabulary not found at {bpe_path!r}. {VOCAB_HELP}")
        with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1:] if line.strip()][:_NUM_MERGES]
        if any(len(m) != 2 for m in merges):
            raise ValueError(f"{bpe_path}: every merge line must hold two symbols")
        self.byte_encoder = bytes_to_unicode()
        vocab = list(self.byte_encoder.values())
        vocab += [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.sot, self.eot = self.encoder[SOT], self.encoder[EOT]
        self._cache = {SOT: SOT, EOT: EOT}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def _bpe(self, token: str) -> str:
        if token in self._cache:
            return self._cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = _pairs(word)
        while pairs:
            bigram = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            merged, i = [], 0
            while i < len(word):
                if word[i] == first and i + 1 < len(word) and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            pairs = _pairs(word) if len(word) > 1 else set()
        self._cache[token] = " ".join(word)
        return self._cache[token]

    def encode(self, text: str) -> list[int]:
        """BPE ids of `text` without SOT/EOT, after CLIP's cleaning (unescape, squash spaces, lower)."""
        text = " ".join(html.unescape(html.unescape(text)).split()).lower()
        ids = []
        for tok in pretokenize(text):
            mapped = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(mapped).split(" "))
        return ids

    def __call__(self, texts, context_length: int = 77, truncate: bool = True) -> np.ndarray:
        """[N, context_length] int32 ids; too-long texts are cut keeping EOT last (or raise)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = np.zeros((len(texts), context_length), np.int32)
        for row, text in enumerate(texts):
            ids = [self.sot] + self.encode(text) + [self.eot]
            if len(ids) > context_length:
                if not truncate:
                    raise ValueError(f"text too long for context length {context_length}: {text!r}")
                ids = ids[:context_length - 1] + [self.eot]
            out[row, :len(ids)] = ids
        return out
