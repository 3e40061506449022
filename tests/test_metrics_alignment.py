"""Alignment model: a short training on a tiny dataset beats chance at retrieval, scores lie in
[0, 100] and real pairs outscore mismatched ones; save/load round-trips."""
import numpy as np
import pytest

from imgsynth.data import build
from imgsynth.metrics import _data, alignment as A, train_alignment as TA


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("data"))
    build.build_shapes(d, "r32_tiny", log=lambda m: None)
    with pytest.raises(FileNotFoundError, match=r"prepare the run's stages with `python -m "
                       r"imgsynth\.stages --config=\.\.\.`"):
        A.load_alignment(d, "r32_tiny")
    settings = TA.TrainSettings(steps=100, per_step_examples=64, learning_rate=3e-3, warmup_steps=10)
    config = A.AlignmentConfig(widths=(32, 64), width=64, layers=1, heads=2, embed_dim=64)
    model = TA.train_alignment(d, "r32_tiny", config=config, settings=settings, log=lambda m: None)
    return d, model


def _chance(captions, group):
    """Expected top-1 hits of a random ranking: duplicates of the own caption in the group."""
    hits = []
    for start in range(0, len(captions) // group * group, group):
        g = captions[start:start + group]
        hits += [g.count(c) / group for c in g]
    return float(np.mean(hits))


def test_retrieval_beats_chance_and_scores_separate_real_from_mismatched(trained):
    d, model = trained
    split = _data.read_split(d, "r32_tiny", "train")  # 256 pairs: groups of 64
    acc = A.retrieval_accuracy(model, split.images, split.captions, group=64)
    test = _data.read_split(d, "r32_tiny", "test", with_images=False)
    print(f"retrieval {acc:.3f}, chance {_chance(split.captions, 64):.3f}; held out "
          f"{model.retrieval_accuracy:.3f}, chance {_chance(test.captions, 64):.3f}")
    assert acc > 3 * _chance(split.captions, 64), acc
    assert model.retrieval_accuracy > 2.5 * _chance(test.captions, 64)  # held out, stored
    scores = A.alignment_scores(model, split.images, split.captions)
    assert scores.shape == (256,) and np.all((scores >= 0) & (scores <= 100))
    mismatched = A.alignment_score(model, split.images, np.roll(split.captions, 7).tolist())
    assert A.alignment_score(model, split.images, split.captions) > mismatched + 5
    with pytest.raises(ValueError, match="at least 100 pairs"):
        A.retrieval_accuracy(model, split.images[:50], split.captions[:50])


def test_saved_model_reloads_with_its_measured_quality(trained):
    d, model = trained
    loaded = A.load_alignment(d, "r32_tiny")
    assert loaded.info["retrieval_accuracy"] == model.info["retrieval_accuracy"]
    assert "groups of 64" in loaded.info["retrieval_protocol"]  # the tiny test split is one group
    images = _data.read_split(d, "r32_tiny", "test", limit=8).images
    captions = ["a red circle"] * 8
    np.testing.assert_allclose(A.alignment_scores(loaded, images, captions),
                               A.alignment_scores(model, images, captions), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="8 images but 2 captions"):
        A.alignment_score(loaded, images, captions[:2])
    with pytest.raises(ValueError, match="uint8"):
        A.alignment_score(loaded, images.astype(np.float32), captions)


def test_the_shipped_alignment_model_serves_32px_shapes(trained, tmp_path):
    """The model trained on r32 ships with the package; a run's stages — and evaluation, which
    trains nothing (`train=False`) — copy it into a 32 px shapes dataset's cache unless
    `instruments.alignment_steps` asks for a training, and it retrieves r32_tiny's test captions far above chance (it reads them with its own vocabulary,
    ordered differently from this dataset's)."""
    import os
    import shutil

    from imgsynth import config as config_lib, stages
    d, _ = trained
    own = str(tmp_path / "data")
    rel = os.path.relpath(_data.dataset_path(d, "r32_tiny"), d)
    shutil.copytree(os.path.join(d, rel), os.path.join(own, rel))
    c = config_lib.default_config("flow", "runlocal")
    c.data.data_dir, c.data.builder_config = own, "r32_tiny"
    dataset = _data.Dataset.of(stages.data_config(c))
    assert A.shipped_alignment(dataset) == A.SHIPPED_DIR
    c.instruments.alignment_steps = 5   # asks for a training, which evaluation never does
    assert stages.alignment(c, train=False) == dataset.instrument_dir("alignment")
    with pytest.raises(FileNotFoundError, match="imgsynth.stages --config="):
        A.load_alignment(dataset)
    c.instruments.alignment_steps = 0
    path = stages.alignment(c, train=False)
    model = A.load_alignment_from(path)
    assert model.info["shipped"].startswith("trained on r32")
    test = _data.read_split(own, "r32_tiny", "test")
    acc = A.retrieval_accuracy(model, test.images, test.captions, group=64)
    assert acc > 10 * _chance(test.captions, 64), acc
