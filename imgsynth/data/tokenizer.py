"""Caption tokenizers: a word vocabulary built from a dataset, and bytes for open vocabularies.

Both encode a list of captions to fixed-length `ids` (int32 [N, L]) and `mask` (bool [N, L],
True on real tokens) as `[bos] tokens... [eos] [pad]...`. A caption longer than L is cut to its
first L - 2 tokens (bos and eos kept) and counted in `num_truncated`, which the caller logs:
truncation is never silent.
"""
from __future__ import annotations

import abc
import json
import os
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from imgsynth import io

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def words(caption: str) -> list[str]:
    """Lower-cased words and single punctuation marks."""
    return _WORD.findall(caption.lower())


class _Tokenizer(abc.ABC):
    """Fixed-length packing and the truncation counter shared by both tokenizers."""

    kind: str

    def __init__(self, max_len: int):
        if max_len < 3:
            raise ValueError(f"max_len={max_len} leaves no room for a token between bos and eos")
        self.max_len = int(max_len)
        self.num_truncated = 0  # captions cut to fit max_len, over this object's lifetime
        self._lock = threading.Lock()  # grain maps in threads

    def __getstate__(self):  # picklable for grain worker processes; the lock is per process
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @abc.abstractmethod
    def _tokens(self, caption: str) -> list[int]:
        """Token ids of one caption, without bos/eos."""

    def encode(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(captions, (str, bytes)):
            raise TypeError("encode takes a list of captions, not a single string")
        ids = np.full((len(captions), self.max_len), PAD, np.int32)
        truncated = 0
        for i, caption in enumerate(captions):
            if isinstance(caption, bytes):
                caption = caption.decode("utf-8")
            tokens = self._tokens(caption)
            if len(tokens) > self.max_len - 2:
                tokens = tokens[:self.max_len - 2]
                truncated += 1
            ids[i, :len(tokens) + 2] = [BOS, *tokens, EOS]
        if truncated:
            with self._lock:
                self.num_truncated += truncated
        return ids, ids != PAD

    def save(self, path: str | os.PathLike) -> None:
        """Atomic: a reader never sees half a file."""
        io.atomic_write(path, json.dumps(self._to_json(), indent=1))

    def _to_json(self) -> dict:
        return {"kind": self.kind, "max_len": self.max_len}

    @classmethod
    def load(cls, path: str | os.PathLike, max_len: int | None = None):
        """The tokenizer saved at `path`; `max_len` overrides the saved one."""
        tokenizer = load(path, max_len)
        if not isinstance(tokenizer, cls):
            raise ValueError(f"{path} holds a {tokenizer.kind} tokenizer, not a {cls.kind} one")
        return tokenizer


class WordTokenizer(_Tokenizer):
    """Whole words from a vocabulary built on a dataset's captions; unknown words map to <unk>."""

    kind = "word"

    def __init__(self, vocab: Sequence[str], max_len: int):
        super().__init__(max_len)
        vocab = list(vocab)
        if tuple(vocab[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocabulary must start with the special tokens {SPECIALS}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocabulary has duplicate entries")
        self.vocab = vocab
        self._index = {w: i for i, w in enumerate(vocab)}

    @classmethod
    def build(cls, captions: Iterable[str | bytes], max_len: int,
              min_count: int = 1) -> WordTokenizer:
        """Vocabulary of every word seen at least `min_count` times, most frequent first (ties
        alphabetical, so the same captions always give the same ids)."""
        counts = Counter()
        for caption in captions:
            if isinstance(caption, bytes):
                caption = caption.decode("utf-8")
            counts.update(words(caption))
        kept = sorted((w for w, c in counts.items() if c >= min_count),
                      key=lambda w: (-counts[w], w))
        return cls(SPECIALS + tuple(w for w in kept if w not in SPECIALS), max_len)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _tokens(self, caption: str) -> list[int]:
        return [self._index.get(w, UNK) for w in words(caption)]

    def decode(self, ids: np.ndarray) -> list[str]:
        """ids [N, L] (or [L]) → captions, stopping at eos and skipping pad/bos."""
        ids = np.atleast_2d(np.asarray(ids))
        out = []
        for row in ids:
            tokens = []
            for t in row.tolist():
                if t == EOS:
                    break
                if t in (PAD, BOS):
                    continue
                tokens.append(self.vocab[t] if 0 <= t < len(self.vocab) else SPECIALS[UNK])
            out.append(" ".join(tokens))
        return out

    def _to_json(self) -> dict:
        return {**super()._to_json(), "vocab": self.vocab}


class ByteTokenizer(_Tokenizer):
    """UTF-8 bytes shifted past the special tokens: any text, no vocabulary file needed."""

    kind = "byte"
    _OFFSET = len(SPECIALS)

    @property
    def vocab_size(self) -> int:
        return 256 + self._OFFSET

    def _tokens(self, caption: str) -> list[int]:
        return [b + self._OFFSET for b in caption.encode("utf-8")]

    def decode(self, ids: np.ndarray) -> list[str]:
        ids = np.atleast_2d(np.asarray(ids))
        out = []
        for row in ids:
            data = bytearray()
            for t in row.tolist():
                if t == EOS:
                    break
                if t >= self._OFFSET:
                    data.append(t - self._OFFSET)
            out.append(data.decode("utf-8", errors="replace"))
        return out


def load(path: str | os.PathLike, max_len: int | None = None) -> WordTokenizer | ByteTokenizer:
    """Either tokenizer from its JSON file; `max_len` overrides the saved one."""
    with open(path) as f:
        spec = json.load(f)
    max_len = spec.get("max_len") if max_len is None else max_len
    if spec.get("kind") == "word":
        return WordTokenizer(spec["vocab"], max_len)
    if spec.get("kind") == "byte":
        return ByteTokenizer(max_len)
    raise ValueError(f"{path}: not a tokenizer file (kind={spec.get('kind')!r})")
