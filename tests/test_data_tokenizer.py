"""Tokenizers: round trips, fixed shapes, counted truncation, save/load."""
import pickle

import numpy as np
import pytest

from imgsynth.data import tokenizer as T

CAPTIONS = ["a red circle", "three green triangles", "a photo of a small blue square",
            "a yellow diamond to the left of an orange star"]


def test_word_round_trip_shapes_and_specials():
    tok = T.WordTokenizer.build(CAPTIONS, max_len=16)
    assert tok.vocab[:4] == list(T.SPECIALS) and (T.PAD, T.UNK, T.BOS, T.EOS) == (0, 1, 2, 3)
    ids, mask = tok.encode(CAPTIONS)
    assert ids.shape == mask.shape == (4, 16) and ids.dtype == np.int32 and mask.dtype == bool
    assert tok.decode(ids) == CAPTIONS
    assert (ids[:, 0] == T.BOS).all()
    lengths = mask.sum(1)
    np.testing.assert_array_equal(lengths, [len(c.split()) + 2 for c in CAPTIONS])
    assert (ids[np.arange(4), lengths - 1] == T.EOS).all()
    assert (ids[~mask] == T.PAD).all()
    assert tok.num_truncated == 0
    assert tok.decode(tok.encode(["a purple circle"])[0]) == ["a <unk> circle"]


def test_word_vocabulary_is_deterministic_and_frequency_ordered():
    a = T.WordTokenizer.build(CAPTIONS, 8)
    b = T.WordTokenizer.build(list(reversed(CAPTIONS)), 8)
    assert a.vocab == b.vocab and a.vocab[4] == "a"


def test_truncation_is_counted_and_keeps_bos_eos():
    tok = T.WordTokenizer.build(CAPTIONS, max_len=5)
    ids, mask = tok.encode(CAPTIONS)
    assert tok.num_truncated == 2  # "three green triangles" (3 words) fits in 5 - 2 = 3
    assert mask.all(axis=1).tolist() == [True, True, True, True]
    assert (ids[:, -1] == T.EOS).all()
    assert tok.decode(ids)[2] == "a photo of"
    tok.encode(CAPTIONS)
    assert tok.num_truncated == 4


def test_byte_round_trip_open_vocabulary_and_truncation():
    tok = T.ByteTokenizer(max_len=24)
    texts = ["Ünïcode ok!", "a cat on a mat"]
    ids, mask = tok.encode(texts)
    assert tok.vocab_size == 260 and ids.max() < tok.vocab_size
    assert tok.decode(ids) == texts and tok.num_truncated == 0
    ids, _ = tok.encode(["x" * 40])
    assert tok.num_truncated == 1 and tok.decode(ids) == ["x" * 22]


@pytest.mark.parametrize("make", [lambda: T.WordTokenizer.build(CAPTIONS, 12),
                                  lambda: T.ByteTokenizer(12)])
def test_save_load_and_pickle(tmp_path, make):
    tok = make()
    path = tmp_path / "sub" / "tok.json"
    tok.save(path)
    loaded = T.load(path)
    assert type(loaded) is type(tok) and loaded.max_len == 12
    np.testing.assert_array_equal(loaded.encode(CAPTIONS)[0], tok.encode(CAPTIONS)[0])
    assert T.load(path, max_len=20).max_len == 20
    assert type(tok).load(path).vocab_size == tok.vocab_size
    clone = pickle.loads(pickle.dumps(tok))
    np.testing.assert_array_equal(clone.encode(CAPTIONS)[0], tok.encode(CAPTIONS)[0])


def test_bad_inputs():
    with pytest.raises(ValueError, match="max_len"):
        T.ByteTokenizer(2)
    with pytest.raises(TypeError):
        T.ByteTokenizer(8).encode("not a list")
    with pytest.raises(ValueError, match="special"):
        T.WordTokenizer(["a", "b"], 8)
