"""A trained autoencoder on disk: `weights.npz` (its EMA weights) and `autoencoder.json` (kind,
geometry, latent scale, validation metrics, and a hash of the weights).

The hash is the autoencoder's identity: encoded datasets record it and generator runs check it,
so latents are never decoded by another autoencoder than the one that made them.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
from flax import nnx

from imgsynth import cli, io, weights as weights_lib
from imgsynth.data import shapes
from imgsynth.models import autoencoder as ae_lib

WEIGHTS_FILE, INFO_FILE = "weights.npz", "autoencoder.json"
# Autoencoders trained on the embedded shapes data with the default settings of
# experiments/autoencoder.py (`python -m imgsynth.train_autoencoder`, 6,000 steps of 16 images,
# ~20 CPU-minutes each), so a quickstart or a `runlocal` run decodes readable images without
# training one.
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shipped")
# Settings that do not change the trained weights (of the data: only its name and resolution
# matter, the shipped file's dataset version says the rest).
_NOT_WEIGHTS = ("cache_dir", "runlocal", "log_every_steps", "eval_examples")


def flat_weights(model: ae_lib.Autoencoder) -> dict[str, np.ndarray]:
    return {"/".join(map(str, k)): np.asarray(v.get_value())
            for k, v in nnx.to_flat_state(nnx.state(model))}


def weights_hash(flat: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for k in sorted(flat):
        digest.update(k.encode() + flat[k].tobytes())
    return digest.hexdigest()[:16]


def save(model: ae_lib.Autoencoder, workdir: str, **info) -> dict:
    """Writes the weights, then the info (its presence marks a complete autoencoder); returns the
    info with the weights' hash."""
    flat = flat_weights(model)
    info = {"kind": model.kind, "downsample": model.downsample, "codebook_size": model.codebook_size,
            "scale_factor": float(model.scale_factor.get_value()) if model.kind == "kl" else None,
            "hash": weights_hash(flat), **info}
    if io.is_writer():
        weights_lib.write_npz(os.path.join(workdir, WEIGHTS_FILE), flat)
        io.write_json(os.path.join(workdir, INFO_FILE), info)
    return info


def _weights_settings(config: dict) -> dict:
    config = json.loads(io.json_text(config))   # tuples as lists, as in a JSON file
    data = {k: config.get("data", {}).get(k) for k in ("name", "resolution")}
    return {**{k: v for k, v in config.items() if k not in _NOT_WEIGHTS}, "data": data}


def shipped(config) -> str | None:
    """The shipped autoencoder trained with exactly the settings of `config` (an autoencoder
    config) on data of its kind, if any. Every shapes builder config of one resolution draws its
    scenes from the same generator and differs only in split sizes, so the one trained on r32
    serves r32_small and r32_tiny too."""
    want = _weights_settings(config.to_dict())
    if want["data"].get("name") != "shapes" or not os.path.isdir(SHIPPED_DIR):
        return None
    for name in sorted(os.listdir(SHIPPED_DIR)):
        info = io.read_json(os.path.join(SHIPPED_DIR, name, INFO_FILE), {})
        if (info.get("dataset_version") == shapes.VERSION
                and _weights_settings(info.get("config", {})) == want):
            return os.path.join(SHIPPED_DIR, name)
    return None


def install_shipped(source: str, workdir: str) -> None:
    """Copies the shipped autoencoder `source` into `workdir`, its info saying where it came from."""
    info = load_info(source)
    io.install_shipped(source, workdir, INFO_FILE, {
        **info, "shipped": f"trained on {info['config']['data']['builder_config']}, shipped with "
                           "the package"})


def load_info(workdir: str, kind: str | None = None) -> dict:
    """The info (config, hash, metrics) of the autoencoder trained in `workdir`, without its weights;
    clear errors if it is absent or of the wrong kind."""
    info_path = os.path.join(workdir, INFO_FILE)
    if not os.path.isfile(info_path):
        raise cli.MissingStage(f"no trained autoencoder in {workdir} ({INFO_FILE} missing)")
    info = io.read_json(info_path)
    if kind is not None and info["kind"] != kind:
        raise ValueError(f"{workdir} holds a {info['kind']!r} autoencoder; this needs {kind!r}")
    return info


def check(workdir: str, kind: str | None = None) -> dict:
    """`load_info`, and the weights file present, without reading it: what a process that trains
    on the encoded data checks (reading the weights costs ~0.5 s a process)."""
    info = load_info(workdir, kind)
    if not os.path.isfile(os.path.join(workdir, WEIGHTS_FILE)):
        raise FileNotFoundError(f"{workdir} holds no autoencoder weights ({WEIGHTS_FILE} missing)")
    return info


def load(workdir: str, kind: str | None = None) -> tuple[ae_lib.Autoencoder, dict]:
    """The trained (EMA) autoencoder of `workdir` and its info; clear errors if absent or wrong."""
    info = load_info(workdir, kind)
    # Built abstractly: initialising the weights eagerly only to overwrite them costs ~15 s of
    # per-shape compilation on CPU, paid by every evaluation.
    model = weights_lib.restore_state(
        lambda: ae_lib.build_autoencoder(info["config"]["autoencoder"], nnx.Rngs(0)),
        os.path.join(workdir, WEIGHTS_FILE), what=f"autoencoder in {workdir}")
    return model, info
