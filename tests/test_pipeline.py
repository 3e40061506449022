"""The whole pipeline on tiny data: dataset → autoencoders → encoded latents/tokens → train →
evaluate, for every paradigm, from a config alone (what `runlocal` does on a fresh clone)."""
import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from fixtures.crash import killed_after_checkpoint
from imgsynth import config as config_lib, evaluate, io, stages, train, train_autoencoder
from imgsynth.models import autoencoder_files
from imgsynth.data import encode, pipeline
from imgsynth.metrics import corruptions

EVAL_SCHEMA = {"dataset", "settings", "weights", "ceilings", "unavailable", "inference", "timing",
               "samples_png", "samples_raw_png", "ema_sigma_rel", "ema_validation_loss",
               "above_ceiling"}
METRICS = {"prompt_following", "fd_judge", "fd_align", "kid", "alignment_score", "eval_loss"}


def tiny(paradigm, cache, steps=12):
    c = config_lib.default_config(paradigm, f"runlocal,steps={steps},global_batch_size=16")
    c.cache_dir = cache
    c.data.builder_config = "r32_tiny"
    c.autoencoder.fsq_levels = (4, 4, 4, 4)   # 256 codes, two factors of 16
    c.autoencoder.train_steps = 20
    c.instruments.judge_steps = c.instruments.alignment_steps = 20
    c.eval_examples, c.eval_every_steps, c.checkpoint_every_steps = 32, 6, 6
    c.log_every_steps = 2
    c.ema.snapshots = 4   # each is an orbax save (~2 CPU-s); 16 would snapshot every step here
    c.peak_flops_per_s = 1e11
    c.sampler.steps = 4 if paradigm != "ar" else 0
    return c


@pytest.mark.slow
def test_runlocal_flow_trains_checkpoints_and_evaluates(stage_cache, tmp_path):
    c = tiny("flow", stage_cache)
    row = train.train(c, str(tmp_path))                 # builds data, autoencoder, latents
    assert json.load(open(tmp_path / "status.json"))["status"] == "done"
    assert {"6", "12"} <= set(os.listdir(tmp_path / "checkpoints"))
    losses = [r["train/loss"] for r in map(json.loads, open(tmp_path / "metrics.jsonl"))
              if "train/loss" in r]
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    assert "eval/loss_ema" in row

    stages.prepare(c)                                   # judge and alignment model
    report = evaluate.evaluate(str(tmp_path), num_samples=12)
    assert set(report) == EVAL_SCHEMA
    for which in ("raw", "ema"):
        assert METRICS <= set(report["weights"][which])
        pf = report["weights"][which]["prompt_following"]
        assert 0.0 <= pf["overall"] <= 1.0 and len(pf) >= 2
        m = report["weights"][which]
        for value, lo, hi in [(m[k], m[f"{k}_lo"], m[f"{k}_hi"])
                              for k in ("alignment_score", "fd_align", "fd_judge")] + [
                (m["kid"]["mean"], m["kid"]["mean_lo"], m["kid"]["mean_hi"]),
                (pf["overall"], pf["overall_lo"], pf["overall_hi"])]:
            assert lo <= value <= hi
    timing = report["timing"]
    assert timing["start"] <= timing["called"] <= timing["end"] and timing["cores"] >= 1
    assert report["inference"]["flops_per_image"] > 0 and report["inference"]["images_per_s"] > 0
    assert os.path.isfile(tmp_path / report["samples_png"])
    assert report["dataset"] == "shapes r32_tiny" and "prompt_following" not in report["unavailable"]
    assert report["ceilings"]["fd_align_real_floor"] >= 0
    c = report["ceilings"]                              # what garbage is credited with
    destroyed = set(corruptions.CORRUPTIONS) | {"autoencoder_random_decodes"}
    for key in ("judge_false_positive", "alignment_false_positive"):
        assert set(c[f"{key}_per_corruption"]) == destroyed
        assert c[key] == max(c[f"{key}_per_corruption"].values()) and 0 <= c[key] <= 1
    assert 0 < c["alignment_retrieval_chance"] <= 1
    assert 0 <= report["weights"]["ema"]["judge_unreadable"] <= 1
    # The post-hoc EMA: the candidate with the lowest validation loss, and that loss.
    losses = report["ema_validation_loss"]
    candidates = json.load(open(tmp_path / "config.json"))["ema"]["candidates"]
    assert set(losses) == {f"{s:g}" for s in candidates}
    assert report["weights"]["ema"]["eval_loss"] == losses[f"{report['ema_sigma_rel']:g}"] == \
        min(losses.values())
    assert json.load(open(tmp_path / "eval.json")) == json.loads(json.dumps(report))


@pytest.mark.slow
@pytest.mark.parametrize("paradigm", ["maskgit", "ar"])
def test_token_paradigms_end_to_end(stage_cache, tmp_path, paradigm):
    c = tiny(paradigm, stage_cache, steps=4)
    c.eval.weights = ("ema",) if paradigm == "ar" else ("raw", "ema")
    c.eval.raw_samples = 4   # MaskGIT's raw weights: the first 4 of the 8 prompts
    train.train(c, str(tmp_path))
    stages.prepare(c)
    report = evaluate.evaluate(str(tmp_path), num_samples=8)
    assert METRICS <= set(report["weights"]["ema"])
    matched = {"ema_matched"} if "raw" in c.eval.weights else set()
    assert set(report["weights"]) == set(c.eval.weights) | matched
    if matched:   # the EMA scored again on the raw weights' 4 prompts: a smaller sample
        ema, again = report["weights"]["ema"], report["weights"]["ema_matched"]
        assert report["settings"]["raw_samples"] == 4 and again["fd_align"] != ema["fd_align"]
        assert again["eval_loss"] == ema["eval_loss"] and METRICS <= set(again)
    assert ("samples_raw_png" in report) == ("raw" in c.eval.weights)
    config = json.load(open(tmp_path / "config.json"))
    config["eval"]["weights"] = ["raw"]                 # EMA is what the study reads: refused
    io.write_json(tmp_path / "config.json", config)
    with pytest.raises(ValueError, match=r"eval.weights=\('raw',\)"):
        evaluate.evaluate(str(tmp_path), num_samples=8)


def test_precompute_reads_back_as_direct_encoding(stage_cache):
    c = tiny("maskgit", stage_cache)
    path = stages.encoded(c)
    model, info = autoencoder_files.load(stages.autoencoder_dir(c), kind="fsq")
    source = encode.load_encoded(path, "validation", autoencoder_hash=info["hash"])
    data = stages.data_config(c)
    raw = pipeline.load_split(data, "validation")
    transform = pipeline.ModelInputs(pipeline.load_tokenizer(data), 32)
    for i in (0, 5):
        direct = transform(raw[i])
        tokens = np.asarray(model.encode_latents(jnp.asarray(direct["image"][None])))[0]
        np.testing.assert_array_equal(source[i]["tokens"], tokens)
        np.testing.assert_array_equal(source[i]["text_ids"], direct["text_ids"])
    with pytest.raises(ValueError, match="encoded by autoencoder"):
        encode.load_encoded(path, "train", autoencoder_hash="0" * 16)
    with pytest.raises(ValueError, match="holds a 'fsq' autoencoder"):
        autoencoder_files.load(stages.autoencoder_dir(c), kind="kl")


def test_autoencoder_weights_must_cover_the_model(stage_cache, tmp_path):
    c = tiny("maskgit", stage_cache)
    src = stages.autoencoder(c)
    broken = tmp_path / "ae"
    shutil.copytree(src, broken)
    with np.load(broken / autoencoder_files.WEIGHTS_FILE) as f:
        weights = {k: f[k] for k in f.files}
    weights.pop(sorted(weights)[0])
    np.savez(broken / autoencoder_files.WEIGHTS_FILE, **weights)
    with pytest.raises(ValueError, match="1 model variables no key fills"):
        autoencoder_files.load(str(broken))
    os.remove(broken / autoencoder_files.WEIGHTS_FILE)   # checked before a run trains on it
    c.autoencoder.workdir = str(broken)
    with pytest.raises(FileNotFoundError, match="holds no autoencoder weights"):
        stages.autoencoder(c)


def test_stage_lock_is_seen_by_other_preparers(tmp_path):
    path = str(tmp_path / "judges" / "r32")
    assert not io.FileLock.held(path)
    with io.FileLock(path):
        assert io.FileLock.held(path)
    assert not io.FileLock.held(path)


def test_sample_batches_split_evenly():
    assert [evaluate.sample_batch(n) for n in (12, 64, 65, 128, 300)] == [12, 64, 33, 64, 60]


def test_a_prefix_of_the_prompts_gets_the_same_noise():
    """The raw weights sample the first eval.raw_samples prompts at the EMA's batch: each prompt
    draws what it drew in the full pass, so the two weight sets differ by their weights alone."""
    import jax

    def sampler(params, ids, mask, key):   # "images": the noise of each row, shifted by params
        return jax.random.uniform(key, (len(ids), 2, 2, 3), minval=-1.0) * 0.5 + params
    ids, mask = np.arange(300)[:, None], np.ones((300, 1), bool)
    full, _ = evaluate.generate(sampler, 0.0, ids, mask, seed=3)
    for n in (120, 150, 7):
        prefix, _ = evaluate.generate(sampler, 0.0, ids[:n], mask[:n], seed=3, batch=60)
        np.testing.assert_array_equal(prefix, full[:n])
    other, _ = evaluate.generate(sampler, 0.0, ids[:100], mask[:100], seed=3)   # batch 50
    assert not np.array_equal(other, full[:100])


@pytest.mark.parametrize("settings, num_samples, counts", [
    ({}, None, {"raw": 300, "ema": 300}),
    ({"num_samples": 300, "raw_samples": 120}, None, {"raw": 120, "ema": 300}),
    ({"num_samples": 300, "raw_samples": 120}, 50, {"raw": 50, "ema": 50}),   # --num_samples=50
    ({"num_samples": 50, "raw_samples": 0, "weights": ("ema",)}, None, {"ema": 50}),
])
def test_eval_sample_counts(settings, num_samples, counts):
    assert config_lib.eval_samples(settings, num_samples) == counts


def test_negative_raw_samples_are_refused():
    with pytest.raises(config_lib.ConfigError, match="eval.raw_samples=-1: choose how many"):
        config_lib.eval_samples({"num_samples": 300, "raw_samples": -1})


def test_evaluate_refuses_unfinished_runs(tmp_path):
    with pytest.raises(evaluate.NotReady, match="not a run directory"):
        evaluate.load_run(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "status.json").write_text(json.dumps({"status": "running", "step": 3}))
    with pytest.raises(evaluate.NotReady, match="not done"):
        evaluate.load_run(str(tmp_path))


@pytest.mark.slow
def test_autoencoder_resumes_after_a_crash(stage_cache, tmp_path, monkeypatch):
    c = stages.autoencoder_config(tiny("flow", stage_cache))
    c.total_steps, c.checkpoint_every_steps, c.eval_examples = 4, 2, 16
    straight = train_autoencoder.train(c, str(tmp_path / "a"))
    with killed_after_checkpoint(monkeypatch, 2):
        train_autoencoder.train(c, str(tmp_path / "b"))
    resumed = train_autoencoder.train(c, str(tmp_path / "b"))
    assert resumed["hash"] == straight["hash"]          # identical final weights
    with pytest.raises(FileNotFoundError, match="no trained autoencoder"):
        autoencoder_files.load(str(tmp_path / "missing"))
