"""A frozen pretrained caption encoder (`text.encoder=clip`) from tiny random CLIP weights: it is
CLIP score's text tower, its states are stored by the encode stage exactly as evaluation computes
them, it is never trained, its FLOPs stay out of training compute, and bad input is one line."""
import gzip
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from imgsynth import config as config_lib, evaluate, flops, loop, registry, stages, train
from imgsynth import weights as weights_lib
from imgsynth.data import encode
from imgsynth.models import clip as clip_lib
from imgsynth.models.clip_tokenizer import ClipTokenizer
from imgsynth.models import frozen_text
from imgsynth.paradigms import base
from test_metrics_clip import TINY, tiny_weights, write_tiny_vocab

TINY_TOWER = dict(width=TINY.text_width, depth=TINY.text_layers,
                  heads=TINY.text_width // TINY.head_width, vocab_size=TINY.vocab_size,
                  context_length=TINY.context_length)
CAPTIONS = ["a red ball", "lulu", "red red red", "", "a very long caption " * 4]


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip_text")
    weights_lib.write_npz(d / "clip.npz", tiny_weights())
    write_tiny_vocab(d / "vocab.txt.gz")
    return str(d / "clip.npz"), str(d / "vocab.txt.gz")


def clip_config(paradigm, files, arg="runlocal,steps=4,global_batch_size=8"):
    c = config_lib.default_config(paradigm, arg)
    c.text.encoder = "clip"
    c.text.weights, c.text.vocab = files
    c.text.clip.update(TINY_TOWER)
    return c


def test_states_are_clip_scores_text_tower(clip_files):
    """Pooled at EOT and projected, the states are CLIP's own text embedding; a shorter caption
    length gives the same states for the positions it keeps (the tower is causal)."""
    c = clip_config("flow", clip_files)
    c.text.max_len = TINY.context_length
    states, mask = frozen_text.load(c)(CAPTIONS)
    clip = clip_lib.load_clip(clip_files[0], config=TINY)
    tokens = ClipTokenizer(clip_files[1])(CAPTIONS, TINY.context_length)
    eot = np.argmax(tokens, -1)
    pooled = states[np.arange(len(CAPTIONS)), eot] @ np.asarray(clip.text_projection[...])
    np.testing.assert_allclose(pooled, clip.encode_text(jnp.asarray(tokens)), atol=1e-5)
    np.testing.assert_array_equal(mask, np.arange(16)[None] <= eot[:, None])
    assert mask[3].sum() == 2   # SOT and EOT of the empty caption

    short = clip_config("flow", clip_files)
    short.text.max_len = 8
    encoder = frozen_text.load(short)
    s8, m8 = encoder(CAPTIONS[:3])
    np.testing.assert_allclose(s8, states[:3, :8], atol=1e-5)
    np.testing.assert_array_equal(m8, mask[:3, :8])
    encoder([CAPTIONS[-1]])
    assert encoder.num_truncated == 1   # counted, never silent


def test_batches_do_not_change_a_captions_states(clip_files):
    """Every caption runs through the same compiled batch, whatever else is in it."""
    encoder = frozen_text.load(clip_config("flow", clip_files))
    many = [f"red {'lu ' * (i % 5)}" for i in range(frozen_text.BATCH + 6)]
    together, _ = encoder(many)
    alone = np.concatenate([encoder([m])[0] for m in many[-8:]])
    np.testing.assert_allclose(together[-8:], alone, rtol=0, atol=1e-6)


def test_null_caption_is_the_start_state(clip_files):
    """The tower is causal, so the start token's state is the same for every caption: the null
    caption of classifier-free guidance is that state alone, as for token ids."""
    states, mask = frozen_text.load(clip_config("flow", clip_files))(CAPTIONS)
    np.testing.assert_allclose(states[1:, 0], np.broadcast_to(states[0, 0], states[1:, 0].shape),
                               atol=1e-6)
    null, null_mask = base.null_captions(jnp.asarray(states), jnp.asarray(mask))
    np.testing.assert_array_equal(null[:, 0], states[:, 0])
    assert not np.any(np.asarray(null[:, 1:])) and np.array_equal(null_mask[:, 0], mask[:, 0])
    assert not np.any(np.asarray(null_mask[:, 1:]))


@pytest.mark.parametrize("paradigm", ["flow", "maskgit", "ar"])
def test_frozen_flops_are_reported_apart_from_training(paradigm, clip_files):
    c = clip_config(paradigm, clip_files)
    trained = config_lib.default_config(paradigm, "runlocal,steps=4,global_batch_size=8")
    cost, old = registry.plan(c).cost, registry.plan(trained).cost
    tower = frozen_text.cost(c)
    assert set(cost.frozen) == {"text_encoder"} and cost.frozen["text_encoder"] == tower
    assert "text_encoder" not in cost.components and "text_projection" in cost.components
    L, d = c.text.max_len, c.text.width
    assert cost.components["text_projection"] == flops.dense(TINY.text_width, d, L)
    # Training compute: the same generator, the projection instead of the trained encoder.
    expected = (old.fwd_flops_per_example - old.components["text_encoder"].fwd_flops
                + 2.0 * TINY.text_width * d * L)
    assert cost.fwd_flops_per_example == pytest.approx(expected)
    assert cost.train_flops_per_example == 3 * cost.fwd_flops_per_example
    assert cost.params_total == sum(
        x.size for x in jax.tree.leaves(nnx.state(registry.plan(c).module.build(
            c, nnx.Rngs(0)), nnx.Param)))
    summary = cost.summary(8, 4)
    assert summary["frozen_fwd_flops/text_encoder"] == tower.fwd_flops > 0
    # Sampling runs the tower on the fly: inference counts it (twice with guidance).
    c1, t1 = c.copy_and_resolve_references(), trained.copy_and_resolve_references()
    c1.sampler.guidance = t1.sampler.guidance = 1.0
    module = registry.plan(c).module
    delta = module.inference_flops(c1) - module.inference_flops(t1)
    assert delta == pytest.approx(tower.fwd_flops + cost.components["text_projection"].fwd_flops
                                  - old.components["text_encoder"].fwd_flops)


def test_frozen_cost_counts_the_tower(clip_files):
    """Parameters of the real module; forward FLOPs against XLA's count (unrolled blocks)."""
    c = clip_config("flow", clip_files)
    cost = frozen_text.cost(c)
    tower = nnx.eval_shape(lambda: clip_lib.ClipText(frozen_text.clip_config(c),
                                                       rngs=nnx.Rngs(0)))
    assert cost.params + cost.embedding_params == sum(
        x.size for x in jax.tree.leaves(nnx.state(tower)))
    graphdef, state = nnx.split(frozen_text.load(c).model)
    tokens = jnp.zeros((1, c.text.max_len), jnp.int32)
    xla = jax.jit(lambda s, t: nnx.merge(graphdef, s).states(t)).lower(
        state, tokens).cost_analysis()["flops"]
    assert cost.fwd_flops == pytest.approx(xla, rel=0.05)


def test_t5_and_unknown_encoders_are_config_errors():
    c = config_lib.default_config("flow", "runlocal")
    c.text.encoder = "t5"
    with pytest.raises(config_lib.ConfigError, match="'t5' is not implemented"):
        registry.plan(c)
    c.text.encoder = "bert"
    with pytest.raises(config_lib.ConfigError, match="choose one of"):
        registry.plan(c)


def test_bad_text_weights_stop_training_before_any_work(clip_files, tmp_path):
    """No weights, a missing file, weights of another architecture, a vocabulary of another
    size: one line each, before a dataset or an autoencoder is built or a workdir written."""
    good = clip_config("flow", clip_files)
    good.cache_dir = str(tmp_path / "cache")
    good.data.data_dir = str(tmp_path / "data")
    wide = good.copy_and_resolve_references()
    wide.text.clip.width = 32
    deep = good.copy_and_resolve_references()
    deep.text.clip.depth = 3
    long_ = good.copy_and_resolve_references()
    long_.text.max_len = 17
    cases = {"needs text.weights": ("weights", ""), "needs text.vocab": ("vocab", ""),
             "clip.npz: no such file": ("weights", str(tmp_path / "clip.npz")),
             "vocab.gz: no such file": ("vocab", str(tmp_path / "vocab.gz"))}
    configs = []
    for match, (key, value) in cases.items():
        c = good.copy_and_resolve_references()
        c.text[key] = value
        configs.append((c, match))
    configs += [(wide, r"does not match the architecture: .*shape mismatches"),
                (deep, r"model variables no key fills: \['transformer.resblocks.2"),
                (long_, "exceeds the CLIP context length 16")]
    for c, match in configs:
        with pytest.raises(config_lib.ConfigError, match=match) as e:
            train.train(c, str(tmp_path / "run"))
        assert "\n" not in str(e.value)
    for made in ("run", "cache", "data"):
        assert not os.path.exists(tmp_path / made)
    other = tmp_path / "other_vocab.txt.gz"
    with gzip.open(other, "wt") as f:
        f.write("#version: 0.2\nr e\n")
    c = good.copy_and_resolve_references()
    c.text.vocab = str(other)
    with pytest.raises(config_lib.ConfigError, match="has 515 tokens, text.clip.vocab_size=517"):
        train.train(c, str(tmp_path / "run"))


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.slow
def test_clip_conditioned_run_trains_samples_and_evaluates(clip_files, tmp_path):
    """Folder data → encode stage stores the frozen states → a few steps train only the generator
    → evaluation encodes its prompts on the fly with the same encoder; changed weights are a new
    cache entry and refused by the run that trained on the old ones."""
    from test_anydata import _tiny_generator, make_folder

    src = make_folder(tmp_path / "images", n=36, labels=False)
    data = {"name": "folder", "folder_name": "plain", "data_dir": str(tmp_path / "data"),
            "src": src}
    c = _tiny_generator(str(tmp_path / "cache"), data)
    c.text.encoder = "clip"
    c.text.weights, c.text.vocab = clip_files
    c.text.clip.update(TINY_TOWER)
    before = _sha(clip_files[0])
    run = str(tmp_path / "run")
    row = train.train(c, run)
    rows = loop.MetricsLog(run).rows()
    assert row["step"] == 4 and all(np.isfinite(r["train/loss"]) for r in rows if "train/loss" in r)

    pinned = json.load(open(os.path.join(run, "config.json")))
    identity = frozen_text.identity(c)
    assert pinned["text"]["hash"] == identity
    path = stages.encoded(c)
    assert path.endswith(f"-text-{identity}")
    source = encode.load_encoded(path, "validation", text_encoder=identity)
    from imgsynth.data import pipeline
    raw = pipeline.load_split(stages.data_config(c), "validation")
    stored = np.stack([source[i]["text_ids"] for i in range(len(source))])
    fly, fly_mask = stages.caption_inputs(c, [raw[i]["caption"] for i in range(len(raw))])
    assert stored.shape == fly.shape == (len(raw), c.text.max_len, TINY.text_width)
    np.testing.assert_allclose(stored, fly, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.stack([source[i]["text_mask"] for i in range(len(source))]),
                                  fly_mask)
    with pytest.raises(ValueError, match="holds captions for text encoder"):
        encode.load_encoded(path, "validation")

    # Frozen: only the projection is in the generator (and its checkpoint); the file is untouched.
    first = rows[0]
    assert first["n_params/all"] == registry.plan(c).cost.params_total
    assert first["flops/frozen_fwd_text_encoder_per_example"] == frozen_text.cost(c).fwd_flops
    config, module, graphdef, weights, _ = evaluate.load_run(run)
    text_params = weights["params"]["text"]
    assert set(text_params) == {"proj"}
    assert text_params["proj"]["kernel"].shape == (TINY.text_width, c.text.width)
    assert _sha(clip_files[0]) == before

    stages.prepare(c)
    report = evaluate.evaluate(run, num_samples=4)
    for which in ("raw", "ema"):
        m = report["weights"][which]
        assert 0 <= m["alignment_score"] <= 100 and np.isfinite(m["fd_align"])
    assert report["inference"]["flops_per_image"] == module.inference_flops(config)

    changed = tiny_weights(seed=1)
    weights_lib.write_npz(tmp_path / "changed.npz", changed)
    os.replace(tmp_path / "changed.npz", clip_files[0])
    try:
        assert frozen_text.identity(c) != identity   # a new encoded-data cache entry
        with pytest.raises(config_lib.ConfigError, match="changed since this run pinned"):
            evaluate.evaluate(run, num_samples=4)
        with pytest.raises(config_lib.ConfigError, match=r"different config \(keys \['text'\]\)"):
            train.train(c, run)
    finally:
        weights_lib.write_npz(clip_files[0], tiny_weights())
