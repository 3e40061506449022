"""Judge: target encoding round-trips the dataset's scenes; a briefly trained judge saves, loads and
reads; prompt following on ground truth is exact; an unreadable cell makes the image read as no
scene; destroyed images train as unreadable; a judge trained to older rules is never loaded."""
import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from imgsynth.data import build
from imgsynth.data import scene as S
from flax import nnx

from imgsynth.metrics import _data, corruptions, frechet, judge as J, prompt_following as PF
from imgsynth.metrics import train_judge as TJ


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("data"))
    build.build_shapes(d, "r32_tiny", log=lambda m: None)
    return d


@pytest.fixture(scope="module")
def test_split(data_dir):
    return _data.read_split(data_dir, "r32_tiny", "test")


def test_fast_split_reader_matches_tfds_decoding(data_dir, test_split):
    import tensorflow_datasets as tfds
    source = tfds.builder_from_directory(_data.dataset_path(data_dir, "r32_tiny")).as_data_source("test")
    assert len(test_split.captions) == len(source) == 64
    for i in (0, 17, 63):
        r = source[i]
        np.testing.assert_array_equal(test_split.images[i], r["image"])
        assert test_split.captions[i] == r["caption"].decode()
        assert test_split.categories[i] == S.CATEGORIES[r["category"]]
        assert test_split.scenes[i] == S.Scene.from_record(r["objects"])
    assert _data.read_split(data_dir, "r32_tiny", "test", limit=5, with_images=False).images is None
    with pytest.raises(ValueError, match="not 'nope'"):
        _data.read_split(data_dir, "r32_tiny", "nope")


def test_target_encoding_round_trips_real_scenes_and_agrees_with_the_checker(test_split):
    scenes = test_split.scenes
    t = J.encode_scenes(scenes)
    assert t["cls"].shape == (len(scenes), 9)
    decoded = J.decode(t["cls"], np.maximum(t["color"], 0), np.maximum(t["size"], 0))
    assert J.scene_accuracy(decoded, scenes) == 1.0
    assert all(S.satisfies(s, c) for s, c in zip(decoded, test_split.captions))
    result = PF.prompt_following(decoded, test_split.captions, test_split.categories)
    assert result["accuracy"] == 1.0 and set(result["per_category"].values()) == {1.0}
    assert sum(result["num_per_category"].values()) == len(scenes)


def test_encoding_refuses_two_objects_in_one_cell():
    o = S.SceneObject("circle", "red", "small", 1, 1)
    with pytest.raises(ValueError, match="share cell"):
        J.encode_scenes([S.Scene((o, S.SceneObject("star", "blue", "large", 1, 1)))])


def test_cell_pooling_covers_each_cell_exactly_once():
    for size, resolution in [(16, 32), (8, 32), (32, 64), (8, 16)]:
        p = J._cell_pool_matrix(size, resolution / size, resolution)
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)  # an average over the cell's area
        np.testing.assert_allclose(p.sum(0), 3 / size, atol=1e-6)  # every pixel fully assigned


def test_prompt_following_drops_on_corrupted_scenes(test_split):
    def recolor(scene):
        objs = [S.SceneObject(o.shape, S.COLOR_NAMES[(S.COLOR_NAMES.index(o.color) + 1) % 6],
                              o.size, o.row, o.col) for o in scene.objects]
        return S.Scene(tuple(objs))

    n = len(test_split.scenes)
    empty = PF.prompt_following([S.Scene()] * n, test_split.captions, test_split.categories)
    assert empty["accuracy"] == 0.0
    recolored = PF.prompt_following([recolor(s) for s in test_split.scenes], test_split.captions,
                                    test_split.categories)
    assert 0.0 < recolored["accuracy"] < 1.0  # captions that name no colour still hold
    assert recolored["per_category"]["colors"] == 0.0
    ids = [S.CATEGORIES.index(c) for c in test_split.categories]
    assert PF.prompt_following(test_split.scenes, test_split.captions, ids)["accuracy"] == 1.0
    with pytest.raises(ValueError, match="one of each"):
        PF.prompt_following(test_split.scenes[:2], test_split.captions, test_split.categories)
    with pytest.raises(ValueError, match="not one of"):
        PF.prompt_following([S.Scene()], ["a circle"], ["none"])


def test_evaluation_prompts_are_balanced_and_seeded(data_dir):
    p = PF.evaluation_prompts(data_dir, "r32_tiny", num_prompts=13, seed=0)
    assert len(p) == 13 and len(set(p.indices)) == 13
    counts = [p.categories.count(c) for c in S.SCENE_CATEGORIES]
    assert counts == [3, 2, 2, 2, 2, 2]
    assert p == PF.evaluation_prompts(data_dir, "r32_tiny", num_prompts=13, seed=0)
    assert p != PF.evaluation_prompts(data_dir, "r32_tiny", num_prompts=13, seed=1)
    split = _data.read_split(data_dir, "r32_tiny", "test", with_images=False)
    assert all(split.captions[i] == c for i, c in zip(p.indices, p.captions))
    with pytest.raises(ValueError, match="requested"):
        PF.evaluation_prompts(data_dir, "r32_tiny", num_prompts=600)


def test_brief_judge_trains_saves_loads_and_reads(data_dir, test_split, capsys):
    with pytest.raises(FileNotFoundError, match=r"python -m imgsynth\.stages --config=\.\.\."):
        J.load_judge(data_dir, "r32_tiny")
    cfg = J.JudgeConfig(resolution=32, widths=(8, 16), hidden=8)
    trained = TJ.train_judge(data_dir, "r32_tiny", config=cfg, log=lambda m: None,
                             settings=TJ.TrainSettings(steps=40, per_step_examples=32, warmup_steps=5))
    info = json.load(open(os.path.join(J.judge_dir(data_dir, "r32_tiny"), J.INFO_FILE)))
    assert info["version"] == "1.0.0" and info["builder_config"] == "r32_tiny"
    assert info["format"] == J.FORMAT and 0 <= info["unreadable_real"] <= 1
    assert set(info["false_positive_per_corruption"]) == set(corruptions.CORRUPTIONS)
    assert info["false_positive"] == max(info["false_positive_per_corruption"].values())
    assert info["fd_real_floor"]["num"] == 64 and info["fd_real_floor"]["value"] > 0
    assert 0.0 <= info["ceiling"] <= 1.0 and set(info["ceiling_per_category"]) <= set(S.SCENE_CATEGORIES)
    judge = J.load_judge(data_dir, "r32_tiny")
    assert judge.ceiling == trained.ceiling
    images = test_split.images
    feats = judge.features(images)
    assert feats.shape == (len(images), cfg.feature_dim) and np.all(np.isfinite(feats))
    np.testing.assert_allclose(feats, trained.features(images), rtol=1e-5, atol=1e-6)
    scenes = judge.read_scenes(images[:5])
    assert len(scenes) == 5 and all(isinstance(s, S.Scene) for s in scenes)
    assert frechet.fd(feats, judge.features(images)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        judge.read_scenes(images.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[N, 32, 32, 3\]"):
        judge.features(images[:, :16])
    TJ.main(["--data_dir", data_dir, "--builder_config", "r32_tiny", "--min_ceiling", "0"])
    assert "already trained" in capsys.readouterr().out


def test_an_unreadable_cell_reads_as_no_scene(test_split):
    cfg = J.JudgeConfig(resolution=32, widths=(8, 16), hidden=8)
    model = J.JudgeNet(cfg, rngs=nnx.Rngs(0))
    model.cell_out.kernel.value = jnp.zeros_like(model.cell_out.kernel.value)
    bias = np.zeros(model.cell_out.bias.value.shape, np.float32)
    bias[1] = 10.0                                   # every cell: a circle (red, small)
    model.cell_out.bias.value = jnp.asarray(bias)
    judge = J.Judge(model)
    images = test_split.images[:4]
    scenes, unreadable = judge.read(images)
    assert not unreadable.any() and all(len(s.objects) == 9 for s in scenes)
    bias[J.UNREADABLE] = 20.0                        # now every cell is unreadable
    model.cell_out.bias.value = jnp.asarray(bias)
    scenes, unreadable = judge.read(images)
    assert unreadable.all() and all(s.objects == () for s in scenes)
    assert judge.read_scenes(images) == scenes
    result = PF.false_positive_rates(judge, _data.Split(images, test_split.captions[:4],
                                                        test_split.categories[:4],
                                                        test_split.scenes[:4]),
                                     corruptions.destroyed(images))
    assert result["false_positive"] == 0.0
    assert set(result["unreadable_per_corruption"].values()) == {1.0}


def test_destroyed_images_train_as_unreadable_in_every_cell(test_split):
    batch = {"images": test_split.images[:6], **{k: v[:6] for k, v in
                                                 J.encode_scenes(test_split.scenes).items()}}
    out = TJ.with_negatives(batch, 4, seed=[0, 1])
    assert out["images"].shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(out["images"][:6], batch["images"])
    assert (out["cls"][6:] == J.UNREADABLE).all() and (out["color"][6:] == -1).all()
    assert (out["size"][6:] == -1).all() and (out["cls"][:6] == batch["cls"]).all()
    np.testing.assert_array_equal(out["images"], TJ.with_negatives(batch, 4, seed=[0, 1])["images"])
    assert TJ.with_negatives(batch, 0, seed=0) is batch


def test_a_judge_of_an_older_format_is_never_loaded(data_dir, tmp_path):
    assert J.judge_dir(data_dir, "r32_tiny") == (_data.cache_dir(data_dir, "judges", "r32_tiny")
                                                 + f"-v{J.FORMAT}")
    cfg = J.JudgeConfig(resolution=32, widths=(8, 16), hidden=8)
    old = str(tmp_path / "old")
    J.Judge(J.JudgeNet(cfg, rngs=nnx.Rngs(0)), {"ceiling": 0.99}).save(old)
    info = json.load(open(os.path.join(old, J.INFO_FILE)))
    assert info["format"] == J.FORMAT
    J.load_judge_from(old)
    del info["format"]                               # as judges before the unreadable class
    json.dump(info, open(os.path.join(old, J.INFO_FILE), "w"))
    with pytest.raises(ValueError, match="format 1.*--force"):
        J.load_judge_from(old)


@pytest.mark.slow
def test_a_briefly_trained_judge_rejects_blank_and_noise(tmp_path):
    data_dir = str(tmp_path)
    build.build_shapes(data_dir, "r32_tiny", log=lambda m: None)
    cfg = J.JudgeConfig(resolution=32, widths=(16, 32), hidden=16)
    judge = TJ.train_judge(data_dir, "r32_tiny", config=cfg, log=lambda m: None,
                           settings=TJ.TrainSettings(steps=200, per_step_examples=64,
                                                     warmup_steps=10, learning_rate=3e-3,
                                                     negatives_per_step=16))
    seen = _data.read_split(data_dir, "r32_tiny", "train", limit=64)   # what it was taught
    assert judge.read(seen.images)[1].mean() <= 0.5
    for name in ("blank", "noise"):
        images = corruptions.CORRUPTIONS[name](seen.images, np.random.default_rng(0))
        scenes, unreadable = judge.read(images)
        if name == "noise":
            assert unreadable.mean() >= 0.9
        assert PF.prompt_following(scenes, seen.captions, seen.categories)["accuracy"] <= 0.02


def test_the_shipped_judge_reads_every_32px_shapes_dataset(data_dir, test_split, tmp_path):
    """The judge trained on r32 ships with the package; a generator config that asks for no judge
    training gets it copied into its dataset's cache, and it reads r32_tiny's test images."""
    from imgsynth import config as config_lib, stages
    assert J.shipped_judge("r32_tiny") and J.shipped_judge("r64_small") is None
    own = str(tmp_path / "data")      # a copy: the module's data_dir keeps no judge
    rel = os.path.relpath(_data.dataset_path(data_dir, "r32_tiny"), data_dir)
    shutil.copytree(os.path.join(data_dir, rel), os.path.join(own, rel))
    c = config_lib.default_config("flow", "runlocal")
    c.data.data_dir, c.data.builder_config = own, "r32_tiny"
    path = stages.judge(c)
    assert path == J.judge_dir(own, "r32_tiny")
    info = json.load(open(os.path.join(path, J.INFO_FILE)))
    assert info["builder_config"] == "r32" and info["shipped"].startswith("trained on r32")
    assert TJ.evaluate(J.load_judge_from(path), test_split)["ceiling"] >= 0.95


@pytest.mark.parametrize("paradigm", ["flow", "maskgit"])
def test_the_shipped_autoencoders_serve_runlocal_and_the_judge_reads_them(paradigm, data_dir,
                                                                          test_split, tmp_path):
    """A runlocal config that asks for no autoencoder training gets the default autoencoder of its
    kind copied from the package (no training), and the shipped judge reads its reconstructions of
    r32_tiny's test images about as well as the images themselves."""
    from imgsynth import config as config_lib, stages
    from imgsynth.metrics import instruments
    from imgsynth.models import autoencoder_files
    own = str(tmp_path / "data")
    rel = os.path.relpath(_data.dataset_path(data_dir, "r32_tiny"), data_dir)
    shutil.copytree(os.path.join(data_dir, rel), os.path.join(own, rel))
    c = config_lib.default_config(paradigm, "runlocal")
    c.cache_dir, c.data.data_dir, c.data.builder_config = str(tmp_path), own, "r32_tiny"
    path = stages.autoencoder(c)
    model, info = autoencoder_files.load(path, kind=c.autoencoder.kind)
    assert info["shipped"].startswith("trained on r32")
    assert info["steps"] * info["config"]["global_batch_size"] == 96_000   # the stage's length
    judge = J.load_judge_from(stages.judge(c))
    recon = instruments.reconstructions(model, test_split.images)
    assert PF.reconstruction_ceilings(judge, test_split, recon)[
        "autoencoder_prompt_following"] >= 0.9
    c.autoencoder.train_steps = 2                      # asks for a training: no shipped match
    assert autoencoder_files.shipped(stages.autoencoder_config(c)) is None
    assert stages.autoencoder_config(c).autoencoder.channels == 8
