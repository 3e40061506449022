"""Stage 1 of the study: train a KL or LFQ autoencoder, the latent space the generators work in.

    python -m imgsynth.train_autoencoder --config=experiments/autoencoder.py:kind=kl[,runlocal] \\
        --workdir=DIR

Shares the main loop's machinery (sharded state, AdamW + EMA update, orbax checkpoints with the
data iterator, resume, status.json, metrics.jsonl, TensorBoard). When training ends, the KL latent
scale is fitted on training images with the EMA weights, and `autoencoder.json` records the
kind, geometry, scale, validation metrics and a hash of the final weights — the identity that
encoded datasets and generator runs check.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from clu import metric_writers
from flax import nnx

from imgsynth import checkpoint as ckpt_lib, sharding, workdir as wd
from imgsynth.data import build, pipeline
from imgsynth.metrics import _weights
from imgsynth.models import autoencoder as ae_lib
from imgsynth.train import make_update

WEIGHTS_FILE, INFO_FILE = "weights.npz", "autoencoder.json"


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
    info_path = os.path.join(workdir, INFO_FILE)
    if wd.read_status(workdir)["status"] == "done" and os.path.isfile(info_path):
        print(f"{workdir}: autoencoder already trained; nothing to do.")
        return wd.read_json(info_path)
    ae_lib.build_autoencoder(config.autoencoder, nnx.Rngs(0)).latent_shape(config.data.resolution)
    if not config.data.data_dir:
        config.data.data_dir = os.path.join(os.path.expanduser(config.cache_dir), "data")
    mesh = sharding.make_mesh(config.get("mesh", (-1, 1, 1)))
    data_parallel = sharding.data_parallel_size(mesh)
    if config.global_batch_size % data_parallel:
        raise ValueError(f"global_batch_size={config.global_batch_size} does not divide over "
                         f"{data_parallel} data-parallel devices")
    build.build_if_missing(config.data)
    os.makedirs(workdir, exist_ok=True)
    wd.write_config(workdir, config)
    wd.write_status(workdir, "running", step=0)

    train_source, to_image = _images(config, "train")
    train_iter = pipeline.train_iterator(train_source, global_batch_size=config.global_batch_size,
                                         seed=config.seed, transform=to_image, mesh=mesh)
    model = sharding.create_sharded(
        lambda: ae_lib.build_autoencoder(config.autoencoder, nnx.Rngs(config.seed)), mesh)
    graphdef, params = nnx.split(model)
    init_state, train_step = make_update(config, _loss, graphdef, config.total_steps)
    with jax.set_mesh(mesh):
        state = jax.jit(init_state)(params)
        shardings = jax.tree.map(lambda x: x.sharding, state)
        step_fn = jax.jit(train_step, donate_argnums=(0,),
                          in_shardings=(shardings, sharding.batch_sharding(mesh)),
                          out_shardings=(shardings, None))

    checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=1)
    log = wd.MetricsLog(workdir)
    writer = metric_writers.create_default_writer(workdir, just_logging=not wd.is_writer())
    start = checkpointer.latest_step() or 0
    if start:
        state = checkpointer.restore(ckpt_lib.abstract(state), train_iter)
        log.truncate_after(start)
    try:
        with jax.set_mesh(mesh):
            for step in range(start + 1, config.total_steps + 1):
                state, metrics = step_fn(state, sharding.to_global(next(train_iter), mesh))
                last = step == config.total_steps
                if step % config.log_every_steps == 0 or last:
                    row = {"step": step, "examples_seen": step * config.global_batch_size,
                           **{k: float(v) for k, v in jax.device_get(metrics).items()}}
                    if not np.isfinite(row["train/loss"]):
                        raise FloatingPointError(f"non-finite loss at step {step}")
                    log.write(row)
                    writer.write_scalars(step, {k: v for k, v in row.items() if k != "step"})
                if step % config.get("checkpoint_every_steps", 500) == 0 or last:
                    checkpointer.save(step, state, train_iter)
                    wd.write_status(workdir, "running", step=step)
        ema = nnx.merge(graphdef, jax.device_get(state["ema"]))
        info = _finish(config, ema, workdir)
        log.write({"step": config.total_steps, **{f"eval/{k}": v for k, v in info["validation"].items()
                                                  if isinstance(v, (int, float))}})
    except BaseException as e:
        wd.write_status(workdir, "failed", reason=f"{type(e).__name__}: {e}"[:2000])
        raise
    finally:
        checkpointer.close()
        writer.flush()
    wd.write_status(workdir, "done", step=config.total_steps)
    return info


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
    flat = {"/".join(map(str, k)): np.asarray(v.get_value())
            for k, v in nnx.to_flat_state(nnx.state(model))}
    if wd.is_writer():
        _weights.write_npz(os.path.join(workdir, WEIGHTS_FILE), flat)
    digest = hashlib.sha256()
    for k in sorted(flat):
        digest.update(k.encode() + flat[k].tobytes())
    info = {"kind": model.kind, "downsample": model.downsample,
            "latent_shape": list(model.latent_shape(config.data.resolution)),
            "codebook_size": model.codebook_size,
            "scale_factor": float(model.scale_factor.get_value()) if model.kind == "kl" else None,
            "hash": digest.hexdigest()[:16], "validation": validation,
            "config": json.loads(config.to_json_best_effort()), "steps": config.total_steps}
    if wd.is_writer():
        wd.write_json(os.path.join(workdir, INFO_FILE), info)
    return info


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
    if not wd.is_writer():
        return
    from PIL import Image
    recon = np.asarray(nnx.jit(lambda m, x: m.decode(m.encode(x)))(model, jnp.asarray(images)))
    to8 = lambda x: np.clip(np.rint((x + 1) * 127.5), 0, 255).astype(np.uint8)  # noqa: E731
    grid = np.concatenate([np.concatenate(list(to8(images)), 1), np.concatenate(list(to8(recon)), 1)], 0)
    tmp = path + ".tmp.png"
    Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.NEAREST).save(tmp)
    os.replace(tmp, path)


def load_info(workdir: str, kind: str | None = None) -> dict:
    """The info (config, hash, metrics) of the autoencoder trained in `workdir`, without its weights;
    clear errors if it is absent or of the wrong kind."""
    info_path = os.path.join(workdir, INFO_FILE)
    if not os.path.isfile(info_path):
        raise FileNotFoundError(f"no trained autoencoder in {workdir} ({INFO_FILE} missing); train "
                                "it with `python -m imgsynth.train_autoencoder --config=... "
                                f"--workdir={workdir}`")
    info = wd.read_json(info_path)
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


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "Autoencoder config file.")
    _WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and results.")
    flags.mark_flags_as_required(["config", "workdir"])

    def main(argv):
        del argv
        logging.basicConfig(level=logging.INFO)
        info = train(_CONFIG.value, _WORKDIR.value)
        print(json.dumps({k: info[k] for k in ("kind", "hash", "validation")}))

    app.run(main)
