"""A trained autoencoder on disk: `weights.npz` (its EMA weights) and `autoencoder.json` (kind,
geometry, latent scale, validation metrics, and a hash of the weights).

The hash is the autoencoder's identity: encoded datasets record it and generator runs check it,
so latents are never decoded by another autoencoder than the one that made them.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
from flax import nnx

from imgsynth import io
from imgsynth.metrics import _weights
from imgsynth.models import autoencoder as ae_lib

WEIGHTS_FILE, INFO_FILE = "weights.npz", "autoencoder.json"


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
        _weights.write_npz(os.path.join(workdir, WEIGHTS_FILE), flat)
        io.write_json(os.path.join(workdir, INFO_FILE), info)
    return info


def load_info(workdir: str, kind: str | None = None) -> dict:
    """The info (config, hash, metrics) of the autoencoder trained in `workdir`, without its weights;
    clear errors if it is absent or of the wrong kind."""
    info_path = os.path.join(workdir, INFO_FILE)
    if not os.path.isfile(info_path):
        raise FileNotFoundError(f"no trained autoencoder in {workdir} ({INFO_FILE} missing); train "
                                "it with `python -m imgsynth.train_autoencoder --config=... "
                                f"--workdir={workdir}`")
    info = io.read_json(info_path)
    if kind is not None and info["kind"] != kind:
        raise ValueError(f"{workdir} holds a {info['kind']!r} autoencoder; this needs {kind!r}")
    return info


def load(workdir: str, kind: str | None = None) -> tuple[ae_lib.Autoencoder, dict]:
    """The trained (EMA) autoencoder of `workdir` and its info; clear errors if absent or wrong."""
    info = load_info(workdir, kind)
    # Built abstractly: initialising the weights eagerly only to overwrite them costs ~15 s of
    # per-shape compilation on CPU, paid by every evaluation.
    model = _weights.restore_state(
        lambda: ae_lib.build_autoencoder(info["config"]["autoencoder"], nnx.Rngs(0)),
        os.path.join(workdir, WEIGHTS_FILE), what=f"autoencoder in {workdir}")
    return model, info
