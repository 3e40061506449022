"""Pipeline stages a generator run needs, each built once and shared by every run that needs it.

    dataset → autoencoder (per kind) → encoded latents/tokens;  dataset → judge, alignment model

Every stage lives under `config.cache_dir` unless the config names a path, is skipped when its
output is complete, and builds to a temporary name before renaming, so several processes (runs
of a grid) may ask for it at once. `python -m imgsynth.stages --config=...` prepares them all.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os

import ml_collections
import numpy as np

from imgsynth import registry


def synthetic_records(config, n: int, seed: int) -> list[dict]:
    """Random records of exactly the shapes a paradigm trains on: for throughput runs and tests."""
    batch = registry.paradigm_module(config).example_batch(config, n, np.random.default_rng(seed))
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


# ---- Paths ------------------------------------------------------------------------------------

def cache_root(config) -> str:
    return os.path.abspath(os.path.expanduser(config.cache_dir))


def data_config(config) -> ml_collections.ConfigDict:
    """`config.data` with `data_dir` defaulting to the shared cache."""
    data = ml_collections.ConfigDict(config.data.to_dict())
    data.data_dir = data.data_dir or os.path.join(cache_root(config), "data")
    return data


def experiment(name: str):
    """A config file of the repository's experiments/ folder (the suite runs from a checkout)."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "experiments", f"{name}.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: run from a checkout of the repository "
                                "(pip install -e .)")
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def autoencoder_config(config) -> ml_collections.ConfigDict:
    """The autoencoder a generator run needs: experiments/autoencoder.py at the run's geometry.

    The generator config is the source of truth for what its FLOPs depend on (kind, downsample,
    latent channels, LFQ bits); `autoencoder.train_steps` (if > 0) sets the training length.
    """
    a = config.autoencoder
    arg = f"kind={a.kind},downsample={a.downsample},resolution={config.data.resolution}"
    ae = experiment("autoencoder").get_config(arg + (",runlocal" if config.get("runlocal") else ""))
    ae.autoencoder.latent_channels, ae.autoencoder.lfq_bits = a.latent_channels, a.lfq_bits
    ae.autoencoder.fsq_levels = tuple(a.get("fsq_levels", ae.autoencoder.fsq_levels))
    ae.data = data_config(config)
    ae.cache_dir = config.cache_dir
    if a.get("train_steps", 0):
        ae.total_steps = a.train_steps
    return ae


def autoencoder_dir(config) -> str:
    """The configured autoencoder workdir, or a cache path keyed by the autoencoder's config."""
    if config.autoencoder.workdir:
        return os.path.abspath(os.path.expanduser(config.autoencoder.workdir))
    ae = autoencoder_config(config)
    digest = hashlib.sha256(ae.to_json(sort_keys=True).encode()).hexdigest()[:10]
    name = f"{ae.autoencoder.kind}-f{ae.autoencoder.downsample}-{ae.data.builder_config}-{digest}"
    return os.path.join(cache_root(config), "autoencoders", name)


# ---- Stages -----------------------------------------------------------------------------------

def dataset(config) -> str:
    from imgsynth.data import build
    data = data_config(config)
    build.build_if_missing(data)
    return build.dataset_dir(data)


def autoencoder(config) -> str:
    """Trains the run's autoencoder if it is not trained yet; returns its workdir."""
    from imgsynth import train_autoencoder
    path = autoencoder_dir(config)
    if not os.path.isfile(os.path.join(path, train_autoencoder.INFO_FILE)):
        if config.autoencoder.workdir and not config.autoencoder.workdir.startswith(cache_root(config)):
            raise FileNotFoundError(f"autoencoder.workdir={path} holds no trained autoencoder")
        dataset(config)
        with _lock(path):
            if not os.path.isfile(os.path.join(path, train_autoencoder.INFO_FILE)):
                train_autoencoder.train(autoencoder_config(config), path)
    train_autoencoder.load(path, kind=config.autoencoder.kind)   # the right kind, readable
    return path


def encoded(config) -> str:
    from imgsynth.data import encode
    path = autoencoder(config)
    with _lock(encode.encoded_dir(path, data_config(config))):
        return encode.encode(path, data_config(config))


def judge(config) -> str:
    """The dataset's judge (shapes only), trained once and cached next to the dataset."""
    from imgsynth.metrics import judge as lib, train_judge as trainer
    return _instrument(config, "judge", lib.judge_dir, lib.INFO_FILE, trainer.train_judge,
                       trainer.TrainSettings)


def alignment(config) -> str:
    """The dataset's contrastive image-caption model, trained once and cached like the judge."""
    from imgsynth.metrics import alignment as lib, train_alignment as trainer
    return _instrument(config, "alignment", lib.alignment_dir, lib.INFO_FILE,
                       trainer.train_alignment, trainer.TrainSettings)


def _instrument(config, what, directory, info_file, train_fn, settings_cls) -> str:
    data = data_config(config)
    dataset(config)
    path = directory(data.data_dir, data.builder_config)
    with _lock(path):
        if not os.path.isfile(os.path.join(path, info_file)):
            train_fn(data.data_dir, data.builder_config,
                     settings=settings_cls(**_quick(config, what)), log=logging.info)
    return path


def _quick(config, what: str) -> dict:
    """Instrument training length: `instruments.<what>_steps` when set (runlocal: short)."""
    steps = config.instruments[f"{what}_steps"] or (150 if config.get("runlocal") else 0)
    return {"steps": steps, "warmup_steps": min(100, max(steps // 10, 1))} if steps else {}


def prepare(config, *, evaluation: bool = True) -> dict:
    """Every stage a generator run (and, with `evaluation`, its evaluation) needs."""
    if config.data.name == "synthetic":
        return {}
    out = {"dataset": dataset(config), "encoded": encoded(config)}
    if evaluation and config.data.name == "shapes":
        from imgsynth.metrics import alignment as alignment_lib, judge as judge_lib
        data = data_config(config)
        todo = [("judge", judge, judge_lib.judge_dir),
                ("alignment", alignment, alignment_lib.alignment_dir)]
        # An instrument another preparer is training right now comes last: two preparers of a
        # grid then train one each instead of one waiting on the other's lock.
        todo.sort(key=lambda t: _lock.held(t[2](data.data_dir, data.builder_config)))
        for name, build_fn, _ in todo:
            out[name] = build_fn(config)
    return out


def pin_autoencoder(config) -> ml_collections.ConfigDict:
    """A copy of `config` whose `autoencoder.workdir` names the exact autoencoder it will use.

    Written into the run's config.json, so evaluation decodes with the autoencoder that made the
    training latents even if experiments/autoencoder.py changes later.
    """
    pinned = ml_collections.ConfigDict(config.to_dict())
    if config.data.name != "synthetic":
        pinned.autoencoder.workdir = autoencoder_dir(config)
    return pinned


def generator_data(config):
    """(train, eval) random-access sources of the records the paradigm trains on."""
    if config.data.name == "synthetic":
        n = config.data.synthetic_examples
        return (synthetic_records(config, n, config.seed),
                synthetic_records(config, max(n // 8, config.global_batch_size), config.seed + 1))
    from imgsynth import train_autoencoder
    from imgsynth.data import encode
    path = encoded(config)   # also checks that the autoencoder is trained and loads
    info = train_autoencoder.load_info(autoencoder_dir(config), kind=config.autoencoder.kind)
    if info.get("codebook_size"):   # tokens of another codebook than the config's are refused
        from imgsynth.paradigms import token_model
        token_model.check_tokenizer(config, info)
    return tuple(encode.load_encoded(path, split, autoencoder_hash=info["hash"])
                 for split in ("train", "validation"))


# ---- Evaluation instruments -------------------------------------------------------------------

@dataclasses.dataclass
class Instruments:
    """What evaluating a run needs: its decoder, the judge, the alignment model, real images."""
    autoencoder: object
    autoencoder_info: dict
    autoencoder_dir: str
    judge: object
    alignment: object
    data_dir: str
    builder_config: str

    def decode(self, latents):
        return self.autoencoder.decode_latents(latents)

    def real_images(self, n: int) -> np.ndarray:
        from imgsynth.metrics import _data
        return _data.read_split(self.data_dir, self.builder_config, "test", limit=n).images

    def autoencoder_ceilings(self, n: int) -> dict:
        """The judge on autoencoder reconstructions of real test images: the best a generator in
        this latent space can score, with per-attribute accuracy. Computed once per (autoencoder,
        dataset) and cached."""
        from imgsynth.metrics import _data, prompt_following
        path = os.path.join(self.autoencoder_dir, f"ceilings-v2-{self.builder_config}-{n}.json")
        if os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
        import jax
        real = _data.read_split(self.data_dir, self.builder_config, "test", limit=n)
        roundtrip = jax.jit(lambda x: self.decode(self.autoencoder.encode_latents(x)))
        recon = np.concatenate([
            prompt_following.to_uint8(roundtrip(real.images[i:i + 256] / 127.5 - 1.0))
            for i in range(0, len(real.images), 256)])
        out = prompt_following.reconstruction_ceilings(self.judge, real, recon)
        from imgsynth import workdir as wd
        wd.write_json(path, out)
        return out

    def ceilings(self, n: int) -> dict:
        return {**self.autoencoder_ceilings(n),
                "judge_prompt_following": self.judge.ceiling,
                "judge_fd_real_floor": (self.judge.info.get("fd_real_floor") or {}).get("value"),
                "alignment_retrieval_accuracy": self.alignment.retrieval_accuracy,
                "autoencoder_psnr": self.autoencoder_info["validation"].get("psnr")}


def instruments(config) -> Instruments:
    """Loads (never trains) the instruments; a clear error names the command that makes each."""
    from imgsynth import train_autoencoder
    from imgsynth.metrics import alignment as alignment_lib, judge as judge_lib
    if config.data.name != "shapes":
        raise NotImplementedError(
            f"data.name={config.data.name!r}: the judge-based metrics need the shapes dataset's "
            "scenes; evaluate real data with the Inception FID / CLIP evaluators")
    data = data_config(config)
    model, info = train_autoencoder.load(autoencoder_dir(config), kind=config.autoencoder.kind)
    return Instruments(model, info, autoencoder_dir(config),
                       judge_lib.load_judge(data.data_dir, data.builder_config),
                       alignment_lib.load_alignment(data.data_dir, data.builder_config),
                       data.data_dir, data.builder_config)


class _lock:
    """An exclusive file lock beside `path`, so concurrent runs build a stage once."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = self.file(path)

    @staticmethod
    def file(path: str) -> str:
        return os.path.abspath(path) + ".lock"

    @classmethod
    def held(cls, path: str) -> bool:
        """Whether another process holds the lock of `path` at this moment."""
        import fcntl
        lock = cls.file(path)
        if not os.path.exists(lock):
            return False
        with open(lock) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
        return False

    def __enter__(self):
        import fcntl
        self.f = open(self.path, "w")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        import fcntl
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


if __name__ == "__main__":
    from absl import app
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "A generator run config.")

    def main(argv):
        del argv
        logging.basicConfig(level=logging.INFO)
        print(json.dumps(prepare(_CONFIG.value), indent=2))

    app.run(main)
