"""Pipeline stages a generator run needs, each built once and shared by every run that needs it.

    dataset → autoencoder (per kind) → encoded latents/tokens (+ frozen caption encoder states);
    dataset → alignment model, judge (datasets with scenes), label classifier (labelled data)

Every stage lives under `config.cache_dir` unless the config names a path, is skipped when its
output is complete, and builds to a temporary name before renaming, under a file lock, so several
processes (runs of a grid) may ask for it at once. `python -m imgsynth.stages --config=...`
prepares them all.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time

import ml_collections

from experiments import autoencoder as autoencoder_experiment
from imgsynth import io, train_autoencoder
from imgsynth.data import build, encode, pipeline, sources
from imgsynth.metrics import _data, alignment as alignment_lib, instruments as instruments_lib
from imgsynth.metrics import judge as judge_lib, labels as labels_lib, train_alignment, train_judge
from imgsynth.metrics import train_labels
from imgsynth.models import autoencoder_files, frozen_text
from imgsynth.paradigms import token_model


BAR_FILE = "quality_bar.json"


def _announce(stage: str, run_dir: str, total_steps: int) -> None:
    """Tells a launcher watching this preparation (`$IMGSYNTH_STAGE_PROGRESS` names the file)
    which stage trains now, where (its metrics.jsonl gives the step) and since when: its progress
    line shows the step / total and an ETA."""
    path = os.environ.get(io.STAGE_PROGRESS_ENV)
    if path:
        io.write_json(path, {"stage": stage, "run_dir": run_dir, "total_steps": int(total_steps),
                             "started": time.time()})


# ---- Paths ------------------------------------------------------------------------------------

def run_config(path: str) -> ml_collections.ConfigDict:
    """A run's config.json as a config: its duration is the optimizer steps it resolved to."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such run config")
    config = ml_collections.ConfigDict(io.read_json(path))
    config.total_flops = config.total_examples = None
    return config


def cache_root(config) -> str:
    return os.path.abspath(os.path.expanduser(config.cache_dir))


def data_config(config) -> ml_collections.ConfigDict:
    """`config.data` with `data_dir` defaulting to the shared cache."""
    data = ml_collections.ConfigDict(config.data.to_dict())
    data.data_dir = data.data_dir or os.path.join(cache_root(config), "data")
    return data


def autoencoder_config(config, *, build_data: bool = True) -> ml_collections.ConfigDict:
    """The autoencoder a generator run needs: experiments/autoencoder.py at the run's geometry.

    The generator config is the source of truth for what its FLOPs depend on (kind, downsample,
    latent channels, LFQ bits, FSQ levels); `autoencoder.train_steps` (if > 0) asks for a training
    of that length. Otherwise the default settings, where an autoencoder trained with them ships
    with the package for the run's data (`runlocal` too: it then trains nothing). Own data (a
    folder or TFDS dataset) gets the default architecture on every grid, `runlocal` included,
    trained for `own_data_steps` of its training split (checked against the quality bar by
    `prepare`); only the suite's own shapes variants without a shipped one get `runlocal`'s small
    smoke-test autoencoder. `build_data=False` (a dry run's estimate) builds nothing: data not
    built yet gets the shortest own-data length, `OWN_DATA_MIN_STEPS`.
    """
    a = config.autoencoder

    def settings(runlocal: bool) -> ml_collections.ConfigDict:
        arg = f"kind={a.kind},downsample={a.downsample},resolution={config.data.resolution}"
        ae = autoencoder_experiment.get_config(arg + (",runlocal" if runlocal else ""))
        ae.autoencoder.latent_channels, ae.autoencoder.lfq_bits = a.latent_channels, a.lfq_bits
        ae.autoencoder.fsq_levels = tuple(a.get("fsq_levels", ae.autoencoder.fsq_levels))
        ae.data = data_config(config)
        ae.cache_dir = config.cache_dir
        return ae

    runlocal = bool(config.get("runlocal"))
    if a.get("train_steps", 0):
        ae = settings(runlocal)
        ae.total_steps = a.train_steps
        return ae
    default = settings(False)
    if autoencoder_files.shipped(default):
        return default
    if config.data.name == "shapes":
        return settings(True) if runlocal else default
    if build_data:
        dataset(config)   # built first: its training split sets the length
    path = build.dataset_dir(data_config(config))
    built = build_data or (path is not None and build.is_complete(path))
    examples = len(pipeline.load_split(data_config(config), "train")) if built else 0
    default.total_steps = autoencoder_experiment.own_data_steps(examples,
                                                                default.global_batch_size)
    return default


def autoencoder_dir(config) -> str:
    """The configured autoencoder workdir, or a cache path keyed by the autoencoder's config and the
    dataset's fingerprint — not the cache's location, so a moved or copied cache is reused. The
    dataset is built first when missing (its content is part of the key)."""
    if config.autoencoder.workdir:
        return os.path.abspath(os.path.expanduser(config.autoencoder.workdir))
    ae = autoencoder_config(config)
    key = ae.to_dict()
    key.pop("cache_dir", None)
    key["data"] = {k: v for k, v in key["data"].items() if k not in ("data_dir", "src")}
    key["dataset"] = dataset_fingerprint(config)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]
    name = f"{ae.autoencoder.kind}-f{ae.autoencoder.downsample}-{ae.data.builder_config}-{digest}"
    return os.path.join(cache_root(config), "autoencoders", name)


def dataset_fingerprint(config) -> str:
    """The built dataset's content hash ('' for a TFDS dataset: its name and version say it)."""
    path = dataset(config)
    return build.fingerprint(path) if path else ""


# ---- Stages -----------------------------------------------------------------------------------

def dataset(config) -> str:
    data = data_config(config)
    build.build_if_missing(data)
    return build.dataset_dir(data)


def autoencoder(config) -> str:
    """The run's autoencoder, trained (or copied from the package) if missing; its workdir."""
    path = autoencoder_dir(config)
    info_file = os.path.join(path, autoencoder_files.INFO_FILE)
    if not os.path.isfile(info_file):
        if config.autoencoder.workdir and not config.autoencoder.workdir.startswith(cache_root(config)):
            raise FileNotFoundError(f"autoencoder.workdir={path} holds no trained autoencoder")
        dataset(config)
        with io.FileLock(path):
            if not os.path.isfile(info_file):
                ae = autoencoder_config(config)
                shipped = not config.autoencoder.get("train_steps", 0) and \
                    autoencoder_files.shipped(ae)
                if shipped:
                    logging.info("autoencoder: the shipped one (%s) → %s", shipped, path)
                    autoencoder_files.install_shipped(shipped, path)
                else:
                    _announce(f"autoencoder {ae.autoencoder.kind}", path, ae.total_steps)
                    train_autoencoder.train(ae, path)
    # The weights are read where they are used (encoding, evaluation), not by each training run.
    autoencoder_files.check(path, kind=config.autoencoder.kind)
    return path


def encoded(config) -> str:
    """The dataset encoded by the run's autoencoder (and frozen caption encoder, if any), kept
    per (autoencoder, text encoder) identity."""
    text = frozen_text.identity(config)   # its errors before an autoencoder is trained
    path = autoencoder(config)
    data = data_config(config)
    out = encode.encoded_dir(path, data, text)
    with io.FileLock(out):
        if encode.is_complete(out, autoencoder_files.load_info(path)["hash"], text):
            return out
        model, info = autoencoder_files.load(path)
        return encode.encode(model, info, path, data,
                             text_encoder=frozen_text.load(config) if text else None)


def _judge_dir(data: _data.Dataset) -> str:
    return judge_lib.judge_dir(data.spec.data_dir, data.spec.shapes_config)


def judge(config, train: bool = True) -> str:
    """The dataset's judge (shapes only), trained once and cached next to the dataset (or copied
    from the package, `_instrument`)."""
    return _instrument(config, "judge", _judge_dir, judge_lib.INFO_FILE,
                       lambda d, **kw: train_judge.train_judge(d.spec.data_dir,
                                                               d.spec.shapes_config, **kw),
                       shipped=lambda d: judge_lib.shipped_judge(d.spec.shapes_config),
                       install=judge_lib.install_shipped, train=train)


def alignment(config, train: bool = True) -> str:
    """The dataset's contrastive image-caption model, trained once and cached like the judge."""
    return _instrument(config, "alignment", lambda d: d.instrument_dir("alignment"),
                       alignment_lib.INFO_FILE, train_alignment.train_alignment,
                       shipped=alignment_lib.shipped_alignment,
                       install=alignment_lib.install_shipped, train=train)


def labels(config) -> str:
    """The label classifier of a labelled dataset, trained once and cached like the judge."""
    return _instrument(config, "labels", lambda d: d.instrument_dir(labels_lib.KIND),
                       labels_lib.INFO_FILE, train_labels.train_labels)


def _instrument(config, what, directory, info_file, train_fn, *, shipped=None, install=None,
                train: bool = True) -> str:
    """Trains the instrument `what` once per dataset, or, unless `instruments.<what>_steps` asks
    for a training, copies the one that ships with the package where `shipped(dataset)` finds
    one that serves the data. Without `train`, only the copy: evaluation installs what ships."""
    dataset(config)
    data = _data.Dataset.of(data_config(config))
    path = directory(data)
    if not train and os.path.isfile(os.path.join(path, info_file)):
        return path
    with io.FileLock(path):
        if not os.path.isfile(os.path.join(path, info_file)):
            source = (shipped(data) if shipped and not config.instruments.get(f"{what}_steps", 0)
                      else None)
            if source:
                logging.info("%s: the shipped one (%s) → %s", what, source, path)
                install(path)
            elif train:
                settings = instrument_settings(config, what)
                _announce(what, path + "-training", settings.steps)
                train_fn(data, settings=settings, log=logging.info)
    return path


def instrument_settings(config, what: str):
    """How the instrument `what` of a run trains: `instruments.<what>_steps` steps when set
    (runlocal: 150), else its defaults."""
    settings_cls = train_judge.TrainSettings if what == "judge" else train_alignment.TrainSettings
    steps = config.instruments.get(f"{what}_steps", 0) or (150 if config.get("runlocal") else 0)
    return settings_cls(**({"steps": steps, "warmup_steps": min(100, max(steps // 10, 1))}
                           if steps else {}))


def prepare(config, *, evaluation: bool = True) -> dict:
    """Every stage a generator run (and, with `evaluation`, its evaluation) needs: the alignment
    model always, the judge where the data has scenes, the label classifier where it has labels."""
    if config.data.name == "synthetic":
        return {}
    out = {"dataset": dataset(config), "encoded": encoded(config)}
    if evaluation:
        data = _data.Dataset.of(data_config(config))
        todo = [("alignment", alignment, lambda: data.instrument_dir("alignment"))]
        if data.has_scenes:
            todo.append(("judge", judge, lambda: _judge_dir(data)))
        if data.label_names():
            todo.append(("labels", labels, lambda: data.instrument_dir(labels_lib.KIND)))
        # An instrument another preparer is training right now comes last: two preparers of a
        # grid then train one each instead of one waiting on the other's lock.
        todo.sort(key=lambda t: io.FileLock.held(t[2]()))
        for name, build_fn, _ in todo:
            out[name] = build_fn(config)
        out["autoencoder_bar"] = autoencoder_bar(config)
    return out


def autoencoder_bar(config) -> bool | None:
    """Whether the run's trained autoencoder meets the quality bar (`instruments.BAR`), measured
    once on its evaluation records with the dataset's instruments and kept beside it
    (`quality_bar.json`); a warning line names what falls short. None for the shapes data (its
    autoencoders ship, documented; a test variant's is a smoke-test stand-in) or one the config
    asked for by length (`autoencoder.train_steps`)."""
    if config.data.name == "shapes" or config.autoencoder.get("train_steps", 0):
        return None
    path = autoencoder_dir(config)
    info = autoencoder_files.load_info(path)
    data = _data.Dataset.of(data_config(config))
    result = io.read_json(os.path.join(path, BAR_FILE))
    if result is None or result.get("dataset_key") != data.key:
        n = len(data.read(data.eval_split(), limit=1000, with_images=False).captions)
        inst = instruments_lib.load(path, config.autoencoder.kind, data)
        result = {**inst.quality_bar(n), "dataset_key": data.key, "steps": info.get("steps"),
                  "evaluation_records": n}
        io.write_json(os.path.join(path, BAR_FILE), result)
    if not result["met"]:
        short = ", ".join(f"{k} {result['measured'][k]:.3g} (bar {v:g})"
                          for k, v in result["bar"].items() if not result["passed"][k])
        logging.warning("autoencoder %s at %s misses its quality bar after %s steps (the cap of "
                        "experiments/autoencoder.own_data_steps): %s; its samples will carry its "
                        "artefacts. Train it longer: --set autoencoder.train_steps=N",
                        config.autoencoder.kind, path, result["steps"], short)
    return result["met"]


def pin(config) -> ml_collections.ConfigDict:
    """A copy of `config` whose `autoencoder.workdir` names the exact autoencoder it will use and
    whose `text.hash` names its frozen caption encoder (files checked here, before any work).

    Written into the run's config.json, so evaluation decodes with the autoencoder that made the
    training latents even if experiments/autoencoder.py changes later, and encodes its prompts
    with the very text encoder the run trained on (a resumed run with other weights is refused).
    """
    pinned = ml_collections.ConfigDict(config.to_dict())
    if config.data.name != "synthetic":
        pinned.text.hash = frozen_text.identity(config)
        pinned.autoencoder.workdir = autoencoder_dir(config)
    return pinned


def generator_sources(config):
    """(train, eval) sources of the encoded records the run trains on (built when missing)."""
    path = encoded(config)   # also checks that the autoencoder is trained and loads
    info = autoencoder_files.load_info(autoencoder_dir(config), kind=config.autoencoder.kind)
    if info.get("codebook_size"):   # tokens of another codebook than the config's are refused
        token_model.check_tokenizer(config, info)
    return sources.encoded(path, info["hash"], frozen_text.identity(config))


def caption_inputs(config, captions) -> tuple:
    """What the run's generator takes for `captions` (ids or states, and the mask), computed as
    the encode stage stored them for training: the data tokenizer's ids, or the frozen encoder's
    states."""
    if frozen_text.is_frozen(config):
        return frozen_text.load(config)(captions)
    return pipeline.load_tokenizer(data_config(config)).encode(list(captions))


def instruments(config, external: instruments_lib.External | None = None
                ) -> instruments_lib.Instruments:
    """Loads what evaluating a run of `config` needs. It never trains, but copies in what ships
    with the package (the judge, the alignment model) when missing: a run trained alone
    (`imgsynth.train`) is evaluated without a preparation step where nothing needs training."""
    data = _data.Dataset.of(data_config(config))
    alignment(config, train=False)
    if data.has_scenes:
        judge(config, train=False)
    return instruments_lib.load(autoencoder_dir(config), config.autoencoder.kind, data, external)


if __name__ == "__main__":
    import sys

    from absl import flags
    from ml_collections import config_flags

    from imgsynth import cli, registry

    # --config=RUN/config.json (what a missing stage names) is a trained run's own config;
    # otherwise a config file, with --config.a.b=v overrides.
    _RUN = any(a.startswith("--config=") and a.endswith(".json") for a in sys.argv[1:])
    _CONFIG = (flags.DEFINE_string("config", None, "A run's config.json.") if _RUN else
               config_flags.DEFINE_config_file("config", None, "A generator run config."))

    def main(argv):
        del argv
        logging.basicConfig(level=logging.INFO)
        with cli.usage_errors(KeyError, ValueError, FileNotFoundError):
            config = run_config(_CONFIG.value) if _RUN else _CONFIG.value
            registry.plan(config)   # unknown size or paradigm, a bad budget
        print(json.dumps(prepare(config), indent=2))

    cli.run_absl(main)
