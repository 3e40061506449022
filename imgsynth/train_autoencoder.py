"""Stage 1 of the study: train a KL or LFQ autoencoder, the latent space the generators work in.

    python -m imgsynth.train_autoencoder --config=experiments/autoencoder.py:kind=kl[,runlocal] \\
        --workdir=DIR

Trains through the one engine (`imgsynth.loop`: sharded state, AdamW + EMA, checkpoints with the
data iterator, resume, status.json, metrics.jsonl). When training ends, the KL latent scale is
fitted on training images with the EMA weights, and `autoencoder.json` records the kind,
geometry, scale, validation metrics and a hash of the final weights — the identity that encoded
datasets and generator runs check (`imgsynth.models.autoencoder_files`).
"""
from __future__ import annotations

import json
import logging
import os
from io import BytesIO

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from imgsynth import io, loop
from imgsynth.data import build, images as images_lib, pipeline
from imgsynth.models import autoencoder as ae_lib, autoencoder_files


def _images(config, split: str):
    """The split's source and a transform to {'image': float32 HWC in [-1, 1]}."""
    tokenizer = pipeline.load_tokenizer(config.data)
    transform = pipeline.ModelInputs(tokenizer, config.data.resolution)
    source = pipeline.load_split(config.data, split)
    return source, lambda r: {"image": transform(r)["image"]}


def _loss(model, batch, rng):
    return model.loss(batch["image"], rng)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (or resumes) the autoencoder in `workdir`; returns its info (autoencoder.json)."""
    info_path = os.path.join(workdir, autoencoder_files.INFO_FILE)
    if io.read_status(workdir)["status"] == "done" and os.path.isfile(info_path):
        print(f"{workdir}: autoencoder already trained; nothing to do.")
        return io.read_json(info_path)
    ae_lib.build_autoencoder(config.autoencoder, nnx.Rngs(0)).latent_shape(config.data.resolution)
    if not config.data.data_dir:
        config.data.data_dir = os.path.join(os.path.expanduser(config.cache_dir), "data")
    build.build_if_missing(config.data)
    infos = []

    def train_iter():
        source, to_image = _images(config, "train")
        return pipeline.train_iterator(source, global_batch_size=config.global_batch_size,
                                       seed=config.seed, transform=to_image)

    def finish(state, graphdef) -> dict:
        infos.append(_finish(config, nnx.merge(graphdef, jax.device_get(state["ema"])), workdir))
        return {f"eval/{k}": v for k, v in infos[-1]["validation"].items()
                if isinstance(v, (int, float))}

    loop.run(config, workdir, loop.Task(
        name=f"autoencoder/{config.autoencoder.kind}",
        build=lambda: ae_lib.build_autoencoder(config.autoencoder, nnx.Rngs(config.seed)),
        loss=_loss, train_iter=train_iter, total_steps=config.total_steps, finish=finish))
    return infos[-1] if infos else io.read_json(info_path)


def _finish(config, model: ae_lib.Autoencoder, workdir: str) -> dict:
    """Fits the KL scale, measures validation metrics, saves the EMA weights and their identity."""
    train_source, to_image = _images(config, "train")
    n_fit = min(len(train_source), 2048)
    images = [to_image(train_source[i])["image"] for i in range(n_fit)]
    if model.kind == "kl":
        model.fit_scale_factor(np.stack(images[i:i + 256]) for i in range(0, n_fit, 256))
    val_source, _ = _images(config, "validation")
    n_val = min(len(val_source), config.eval_examples)
    val = np.stack([to_image(val_source[i])["image"] for i in range(n_val)])
    validation = evaluate(model, val)
    _recon_png(model, val[:8], os.path.join(workdir, "reconstructions.png"))
    return autoencoder_files.save(
        model, workdir, latent_shape=list(model.latent_shape(config.data.resolution)),
        validation=validation, config=json.loads(config.to_json_best_effort()),
        steps=config.total_steps)


def evaluate(model: ae_lib.Autoencoder, images: np.ndarray, batch: int = 256) -> dict:
    """PSNR and MSE of reconstructions; KL (KL) or code usage and perplexity (LFQ, FSQ)."""
    encode = nnx.jit(lambda m, x: m.encode(x))
    decode = nnx.jit(lambda m, z: m.decode(z))
    mse, codes, kls = [], [], []
    for i in range(0, len(images), batch):
        x = jnp.asarray(images[i:i + batch])
        z = encode(model, x)
        mse.append(np.mean(np.square(np.asarray(decode(model, z)) - images[i:i + batch]), axis=(1, 2, 3)))
        if model.codebook_size:
            codes.append(np.asarray(z).reshape(-1))
        else:
            kls.append(float(ae_lib.gaussian_kl(*model.posterior(x))))
    mse_all = float(np.mean(np.concatenate(mse)))
    out = {"mse": mse_all, "psnr": float(ae_lib.psnr(jnp.asarray(mse_all)))}
    if model.codebook_size:
        out.update(ae_lib.code_usage(np.concatenate(codes), model.codebook_size))
    else:
        out["kl"] = float(np.mean(kls))
    return out


def _recon_png(model, images: np.ndarray, path: str) -> None:
    """Originals (top) against reconstructions (bottom)."""
    if not io.is_writer():
        return
    from PIL import Image
    recon = np.asarray(nnx.jit(lambda m, x: m.decode(m.encode(x)))(model, jnp.asarray(images)))
    to8 = images_lib.to_uint8
    grid = np.concatenate([np.concatenate(list(to8(images)), 1), np.concatenate(list(to8(recon)), 1)], 0)
    png = BytesIO()
    Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.NEAREST).save(png, "PNG")
    io.atomic_write(path, png.getvalue())


if __name__ == "__main__":
    from absl import flags
    from ml_collections import config_flags

    from imgsynth import cli
    from imgsynth.data.spec import DataSpec

    _CONFIG = config_flags.DEFINE_config_file("config", None, "Autoencoder config file.")
    _WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and results.")
    flags.mark_flags_as_required(["config", "workdir"])

    def main(argv):
        del argv
        logging.basicConfig(level=logging.INFO)
        data = _CONFIG.value.data
        with cli.usage_errors(KeyError, ValueError):   # the data spec before anything is built
            DataSpec.of({**data.to_dict(), "data_dir": data.data_dir or _CONFIG.value.cache_dir})
        info = train(_CONFIG.value, _WORKDIR.value)
        print(json.dumps({k: info[k] for k in ("kind", "hash", "validation")}))

    cli.run_absl(main)
