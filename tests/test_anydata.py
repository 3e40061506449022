"""Any captioned dataset end to end: a labelled image folder through build → a 2-run grid with
`--set` → evaluation → report; a mocked TFDS label dataset through the same stages in-process;
Inception FID and CLIP score through evaluate with tiny random weights; bad input refused."""
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from imgsynth import config as config_lib, evaluate, stages, train, weights as weights_lib
from imgsynth.data import build, folder
from imgsynth.metrics import _data, instruments
from launch import grid as grid_lib, study

pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
SCENE_METRICS = ("prompt_following", "fd_judge")
TINY = {"autoencoder.train_steps": 20, "instruments.alignment_steps": 20,
        "instruments.labels_steps": 20, "eval.num_samples": 8, "sampler.steps": 2,
        "global_batch_size": 8, "eval_examples": 8, "eval_every_steps": 4,
        "checkpoint_every_steps": 4, "log_every_steps": 2}


def make_folder(root, n=48, labels=True):
    """`n` 40-px images of a coloured square on noise, captioned, labelled by colour."""
    rng = np.random.default_rng(0)
    os.makedirs(root, exist_ok=True)
    lines = []
    for i in range(n):
        name = list(COLORS)[i % 3]
        img = rng.integers(0, 80, (40, 40, 3), dtype=np.uint8)
        x, y = rng.integers(2, 20, 2)
        img[y:y + 16, x:x + 16] = COLORS[name]
        Image.fromarray(img).save(os.path.join(root, f"{i:03d}.png"))
        line = {"file": f"{i:03d}.png", "caption": f"a {name} square"}
        if labels:
            line["label"] = name
        lines.append(line)
    with open(os.path.join(root, folder.CAPTIONS_FILE), "w") as f:
        f.write("\n".join(json.dumps(x) for x in lines))
    return str(root)


def _grid_file(tmp_path):
    path = tmp_path / "two.py"
    path.write_text("def sweep(add):\n"
                    "    for budget in (2e9, 4e9):\n"
                    "        add(paradigm='flow', size='T', budget=budget, runlocal=True)\n")
    return str(path)


def _sets(overrides):
    return [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]


@pytest.mark.slow
def test_folder_study_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv(grid_lib.OVERRIDES_ENV, "")   # restored after the test
    src = make_folder(tmp_path / "images")
    data_dir = str(tmp_path / "data")
    path = build.build_folder(data_dir, src, "squares", 32, validation_fraction=0.2,
                              test_fraction=0.25, log=lambda m: None)
    summary = json.load(open(os.path.join(path, build.SUMMARY_FILE)))
    assert summary["labels"] == ["blue", "green", "red"]
    assert set(summary["splits"]) == {"train", "validation", "test"}

    workdir = str(tmp_path / "study")
    sets = {"data.name": "folder", "data.folder_name": "squares", "data.data_dir": data_dir,
            "cache_dir": str(tmp_path / "cache"), **TINY}
    code = study.main(["--grid", _grid_file(tmp_path), "--workdir", workdir, "--parallel=1",
                       "--bootstrap=20", *_sets(sets)])
    assert code == 0
    for run in ("flow-T-2e+09", "flow-T-4e+09"):
        run_dir = os.path.join(workdir, "runs", run)
        report = json.load(open(os.path.join(run_dir, "eval.json")))
        assert report["dataset"] == "folder squares (32 px)"
        for which in ("raw", "ema"):
            m = report["weights"][which]
            assert 0 <= m["alignment_score"] <= 100 and m["fd_align"] >= 0
            assert np.isfinite(m["kid"]["mean"]) and 0 <= m["label_following"] <= 1
            assert not set(SCENE_METRICS) & set(m)
        assert set(SCENE_METRICS) | {"inception_fid", "clip_score"} <= set(report["unavailable"])
        assert "label_following" not in report["unavailable"]
        c = report["ceilings"]
        assert 0 <= c["label_classifier_accuracy"] <= 1 and c["fd_align_real_floor"] >= 0
        assert 0 <= c["alignment_false_positive"] <= 1 and "judge_false_positive" not in c
        assert os.path.isfile(os.path.join(run_dir, "samples_ema.png"))
        assert os.path.isfile(os.path.join(run_dir, "samples_raw.png"))
    progress = [json.load(open(os.path.join(workdir, "stages", f)))   # the launcher's line
                for f in os.listdir(os.path.join(workdir, "stages")) if f.endswith(".json")]
    assert {p["stage"] for p in progress} <= {"autoencoder kl", "alignment", "labels"}
    assert progress and all(p["total_steps"] == 20 for p in progress)
    html = open(os.path.join(workdir, "report", "report.html")).read()
    assert "Dataset: folder squares (32 px)" in html and "not evaluated yet" not in html
    assert "stores no scenes" in html


def _tiny_generator(cache, data):
    c = config_lib.default_config("flow", "runlocal,steps=4,global_batch_size=8")
    c.cache_dir = cache
    c.data.update(data)
    for key, value in TINY.items():
        if key != "global_batch_size":
            node, *path = key.split(".")
            (c[node] if path else c)[path[0] if path else node] = value
    return c


@pytest.mark.slow
def test_tfds_offline_label_dataset_is_evaluated(tmp_path, tfds_offline):
    data = {"name": "tfds", "tfds_name": "cifar10", "label_key": "label",
            "data_dir": str(tmp_path / "tfds"), "builder_config": ""}
    with tfds_offline(num_examples=24):
        c = _tiny_generator(str(tmp_path / "cache"), data)
        run = str(tmp_path / "run")
        train.train(c, run)
        stages.prepare(c)
        report = evaluate.evaluate(run)
    assert report["dataset"].startswith("tfds cifar10")
    assert report["settings"]["eval_split"] == "test"
    m = report["weights"]["ema"]
    assert 0 <= m["label_following"] <= 1 and m["fd_align"] >= 0 and "kid" in m
    assert set(SCENE_METRICS) <= set(report["unavailable"])
    assert 0 <= report["ceilings"]["label_classifier_accuracy"] <= 1


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """One finished tiny run on an unlabelled folder (shared by the evaluator tests)."""
    tmp = tmp_path_factory.mktemp("unlabelled")
    src = make_folder(tmp / "images", n=36, labels=False)
    data = {"name": "folder", "folder_name": "plain", "data_dir": str(tmp / "data"), "src": src}
    c = _tiny_generator(str(tmp / "cache"), data)
    run = str(tmp / "run")
    train.train(c, run)
    stages.prepare(c)
    return run


@pytest.mark.slow
def test_inception_and_clip_through_evaluate(folder_run, tmp_path):
    from test_metrics_clip import tiny_weights, write_tiny_vocab
    from test_metrics_inception import _random_weights
    write_tiny_vocab(tmp_path / "vocab.txt.gz")
    weights_lib.write_npz(tmp_path / "clip.npz", tiny_weights())
    weights_lib.write_npz(tmp_path / "inception.npz", _random_weights())
    report = evaluate.evaluate(folder_run, num_samples=4,
                               inception_weights=str(tmp_path / "inception.npz"),
                               clip_weights=str(tmp_path / "clip.npz"),
                               clip_vocab=str(tmp_path / "vocab.txt.gz"))
    for which in ("raw", "ema"):
        m = report["weights"][which]
        assert m["inception_fid"] > 0 and 0 <= m["clip_score"] <= 100
    assert not {"inception_fid", "clip_score"} & set(report["unavailable"])
    assert report["unavailable"]["label_following"] == instruments.NO_LABELS


@pytest.mark.slow
def test_bad_input_is_refused_before_sampling(folder_run, tmp_path):
    samples = os.path.join(folder_run, "samples_ema.png")
    before = os.path.getmtime(samples) if os.path.exists(samples) else None
    with pytest.raises(ValueError, match="evaluation asks for 500 samples but its test split"):
        evaluate.evaluate(folder_run, num_samples=500)
    from test_metrics_clip import tiny_weights, write_tiny_vocab
    write_tiny_vocab(tmp_path / "vocab.txt.gz")
    broken = tiny_weights()
    broken.pop("visual.proj")
    weights_lib.write_npz(tmp_path / "clip.npz", broken)
    with pytest.raises(ValueError, match=r"clip\.npz: CLIP weight file does not match"):
        evaluate.evaluate(folder_run, num_samples=4, clip_weights=str(tmp_path / "clip.npz"),
                          clip_vocab=str(tmp_path / "vocab.txt.gz"))
    after = os.path.getmtime(samples) if os.path.exists(samples) else None
    assert before == after   # nothing was sampled


@pytest.mark.slow
def test_a_missing_stage_names_the_stages_command_of_the_run(folder_run, tmp_path):
    """Evaluation trains nothing: without the folder's alignment model it stops before sampling,
    naming `python -m imgsynth.stages --config=<run>/config.json`, and that command prepares it."""
    import shutil
    import subprocess
    import sys

    from imgsynth import cli
    config_json = os.path.join(folder_run, "config.json")
    config = stages.run_config(config_json)
    aligned = _data_of(config).instrument_dir("alignment")
    shutil.move(aligned, tmp_path / "kept")
    samples = os.path.join(folder_run, "samples_ema.png")
    before = os.path.getmtime(samples) if os.path.exists(samples) else None
    with pytest.raises(cli.MissingStage) as missing:
        evaluate.evaluate(folder_run, num_samples=4)
    assert str(missing.value).endswith(
        f"prepare the run's stages with `python -m imgsynth.stages --config={config_json}`")
    assert (os.path.getmtime(samples) if os.path.exists(samples) else None) == before
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [grid_lib.REPO_ROOT, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "imgsynth.stages", f"--config={config_json}"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert os.path.isfile(os.path.join(aligned, "alignment.json")), done.stdout[-2000:]


def _data_of(config):
    return _data.Dataset.of(stages.data_config(config))


def test_folder_labels_are_all_or_nothing_and_splits_must_fit(tmp_path):
    src = make_folder(tmp_path / "images", n=6)
    lines = open(os.path.join(src, folder.CAPTIONS_FILE)).read().splitlines()
    entry = json.loads(lines[2])
    del entry["label"]
    lines[2] = json.dumps(entry)
    open(os.path.join(src, folder.CAPTIONS_FILE), "w").write("\n".join(lines))
    with pytest.raises(ValueError, match=r"captions.jsonl: field 'label' is missing for 1 of 6 "
                                         r"captioned images \(first: 002.png\)"):
        folder.scan(src)
    items = [(f"{i}.png", "c", "") for i in range(2)]
    with pytest.raises(ValueError, match="2 usable images cannot fill a test split of 1"):
        folder.split_files(items, 0.4, 0.4)
    splits = folder.split_files([(f"{i}.png", "c", "") for i in range(20)], 0.1, 0.25)
    assert {k: len(v) for k, v in splits.items()} == {"train": 13, "validation": 2, "test": 5}


def test_set_overrides_reach_every_run(tmp_path, monkeypatch):
    monkeypatch.setenv(grid_lib.OVERRIDES_ENV, "")   # restored after the test
    from launch import __main__ as launch_main
    args = launch_main.parser().parse_args(["--grid", _grid_file(tmp_path), "--set",
                                            "data.name=folder", "--set", "eval.num_samples=24"])
    assert args.set == ["data.name=folder", "eval.num_samples=24"]
    grid = grid_lib.load(args.grid)
    assert all(r.config.data.name == "folder" and r.config.eval.num_samples == 24
               for r in grid.runs)
    monkeypatch.setenv(grid_lib.OVERRIDES_ENV, json.dumps({"data.nmae": "x"}))
    with pytest.raises(grid_lib.GridError, match="did you mean data.name"):
        grid_lib.load(args.grid)
    with pytest.raises(SystemExit):
        launch_main.parser().parse_args(["--grid", "x", "--set", "novalue"])
