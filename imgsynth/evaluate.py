"""Evaluation of a finished run: sample → decode → prompt following, fd_judge, KID, alignment.

    python -m imgsynth.evaluate --workdir=RUN [--num_samples=N --guidance=w --sampler_steps=K]

Samples from the final checkpoint with both the raw and the EMA weights, decodes with the run's
autoencoder, scores the images with the dataset's judge and alignment model, and writes
`eval.json` (every metric, the instruments' ceilings, evaluation losses, analytic inference FLOPs
per image, measured images/s and batch-1 latency, the settings used) and a sample grid PNG.
"""
from __future__ import annotations

import json
import logging
import os
import time
from io import BytesIO

import jax
import ml_collections
import numpy as np
from flax import nnx

from imgsynth import checkpoint as ckpt_lib, config as config_lib, io, loop, optim, registry, stages
from imgsynth.data import images as images_lib, pipeline
from imgsynth.metrics import alignment as alignment_lib, frechet
from imgsynth.metrics import prompt_following as pf

MAX_SAMPLE_BATCH = 64


def sample_batch(n: int) -> int:
    """The batch that splits `n` images most evenly in ceil(n / MAX_SAMPLE_BATCH) batches: 300
    images are 5 x 60, not 5 x 64 with 20 padded rows sampled for nothing."""
    return -(-n // -(-n // MAX_SAMPLE_BATCH))


class NotReady(RuntimeError):
    """The run or one of the instruments it needs is missing."""


def load_run(workdir: str):
    """(config, paradigm module, graphdef, {'params', 'ema'}, step) of a finished run.

    The weights are restored onto one device: evaluation samples batches that fit one
    accelerator (or the host) for every size this suite trains on CPU or single hosts.
    """
    config_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(config_path):
        raise NotReady(f"{workdir} is not a run directory (no config.json)")
    status = io.read_status(workdir)
    if status["status"] != "done":
        raise NotReady(f"{workdir} is not done (status {status['status']!r}, step "
                       f"{status.get('step')}); finish training before evaluating")
    config = ml_collections.ConfigDict(io.read_json(config_path))
    config.total_flops = config.total_examples = None   # config.json holds the resolved steps
    plan = registry.plan(config)
    module = plan.module
    graphdef, abstract_params = nnx.split(nnx.eval_shape(lambda: module.build(config, nnx.Rngs(0))))
    init_state, _ = optim.make_update(config, None, graphdef, plan.total_steps)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                            jax.eval_shape(init_state, abstract_params))
    checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
    state = checkpointer.restore(abstract)
    checkpointer.close()
    return config, module, graphdef, {"params": state["params"], "ema": state["ema"]}, int(state["step"])


def make_sampler(config, module, graphdef, decode):
    """One jitted captions → images function, shared by every call (one compile per shape)."""
    @jax.jit
    def fn(params, ids, mask, key):
        return decode(module.sample(nnx.merge(graphdef, params), ids, mask, key, config))
    return fn


def generate(sampler, params, text_ids, text_mask, seed: int) -> tuple[np.ndarray, list[float]]:
    """uint8 images for the captions in equal batches of `sample_batch`, and each batch's wall
    time (sampling, decoding and the copy to the host)."""
    batch = sample_batch(len(text_ids))
    out, seconds = [], []
    for start in range(0, len(text_ids), batch):
        ids, mask = text_ids[start:start + batch], text_mask[start:start + batch]
        pad = batch - len(ids)
        if pad:
            ids = np.concatenate([ids, np.repeat(ids[:1], pad, 0)])
            mask = np.concatenate([mask, np.repeat(mask[:1], pad, 0)])
        key = jax.random.fold_in(jax.random.key(seed), start)
        t0 = time.perf_counter()
        out.append(images_lib.to_uint8(sampler(params, ids, mask, key))[: batch - pad])
        seconds.append(time.perf_counter() - t0)
    return np.concatenate(out), seconds


def latency(sampler, params, text_ids, text_mask) -> float:
    """Seconds for one image at batch 1, after compilation."""
    ids, mask = text_ids[:1], text_mask[:1]
    jax.block_until_ready(sampler(params, ids, mask, jax.random.key(0)))
    t0 = time.perf_counter()
    jax.block_until_ready(sampler(params, ids, mask, jax.random.key(1)))
    return time.perf_counter() - t0


def evaluate(workdir: str, *, num_samples: int = config_lib.EVAL_SAMPLES,
             guidance: float | None = None, sampler_steps: int | None = None, seed: int = 0) -> dict:
    config, module, graphdef, weights, step = load_run(workdir)
    if guidance is not None:
        config.sampler.guidance = guidance
    if sampler_steps is not None:
        config.sampler.steps = sampler_steps
    instruments = stages.instruments(config)   # never trains: missing ones raise with the command
    judge, align, decode = instruments.judge, instruments.alignment, instruments.decode
    data_dir, builder_config = instruments.data_dir, instruments.builder_config

    prompts = pf.evaluation_prompts(data_dir, builder_config, num_prompts=num_samples, seed=seed)
    tokenizer = pipeline.load_tokenizer(stages.data_config(config))
    text_ids, text_mask = tokenizer.encode(list(prompts.captions))
    real = instruments.real_images(num_samples)

    sampler = make_sampler(config, module, graphdef, decode)
    feats_real = judge.features(real)
    results = {}
    for which in ("params", "ema"):   # the raw pass compiles the sampler; the EMA pass is timed
        images, seconds = generate(sampler, weights[which], text_ids, text_mask, seed)
        pf_result = pf.prompt_following(judge.read_scenes(images), prompts.captions, prompts.categories)
        feats_gen = judge.features(images)
        kid = frechet.kid(feats_gen, feats_real, subset_size=100, seed=seed)
        results["raw" if which == "params" else "ema"] = {
            "prompt_following": {"overall": pf_result["accuracy"], **pf_result["per_category"]},
            "fd_judge": frechet.fd(feats_gen, feats_real),
            "kid": {"mean": kid.mean, "std": kid.std},
            "alignment_score": alignment_lib.alignment_score(align, images, list(prompts.captions)),
            "images": images}

    rows = loop.MetricsLog(workdir).rows()
    last = next((r for r in reversed(rows) if "eval/loss" in r), {})
    results["raw"]["eval_loss"] = last.get("eval/loss")
    results["ema"]["eval_loss"] = last.get("eval/loss_ema")
    png = _sample_grid(workdir, results["ema"].pop("images"), prompts.captions)
    results["raw"].pop("images")

    # Throughput from the EMA pass's batches (compiled by the raw pass; padded rows are work too).
    batch = sample_batch(len(text_ids))
    speed = {"images_per_s": batch * len(seconds) / sum(seconds),
             "latency_s": latency(sampler, weights["ema"], text_ids, text_mask),
             "batch_size": batch}
    latent = jax.eval_shape(lambda p: module.sample(nnx.merge(graphdef, p), text_ids[:1],
                                                    text_mask[:1], jax.random.key(0), config),
                            weights["ema"])
    # The decoder is convolutional, unrolled: XLA's own count is exact enough here.
    decoder_flops = jax.jit(decode).lower(latent).cost_analysis()["flops"]
    report = {
        "settings": {"num_samples": num_samples, "guidance": config.sampler.guidance,
                     "sampler_steps": config.sampler.steps, "sampler": config.sampler.to_dict(),
                     "seed": seed, "checkpoint_step": step},
        "weights": results,
        "ceilings": instruments.ceilings(num_samples),
        "inference": {"flops_per_image": module.inference_flops(config),
                      "decoder_flops_per_image": decoder_flops, **speed},
        "samples_png": os.path.basename(png),
    }
    io.write_json(os.path.join(workdir, "eval.json"), report)
    return report


def _sample_grid(workdir: str, images: np.ndarray, captions, n: int = 16) -> str:
    """A grid of the first `n` EMA samples with their prompts (written atomically)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cols = 4
    rows = -(-min(n, len(images)) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.2, rows * 2.5))
    for ax, img, cap in zip(np.ravel(axes), images[:n], captions[:n]):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(cap, fontsize=6, wrap=True)
    for ax in np.ravel(axes):
        ax.axis("off")
    fig.tight_layout()
    path = os.path.join(workdir, "samples_ema.png")
    png = BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    io.atomic_write(path, png.getvalue())
    return path


if __name__ == "__main__":
    from absl import flags

    from imgsynth import cli

    _WORKDIR = flags.DEFINE_string("workdir", None, "A finished run directory.")
    _NUM = flags.DEFINE_integer("num_samples", config_lib.EVAL_SAMPLES,
                                "Generated images per weight set.")
    _GUIDANCE = flags.DEFINE_float("guidance", None, "Classifier-free guidance (default: config).")
    _STEPS = flags.DEFINE_integer("sampler_steps", None, "Sampler steps (default: config).")
    flags.mark_flag_as_required("workdir")

    def main(argv):
        del argv
        logging.basicConfig(level=logging.INFO)
        with cli.usage_errors(NotReady, FileNotFoundError, NotADirectoryError):
            report = evaluate(_WORKDIR.value, num_samples=_NUM.value, guidance=_GUIDANCE.value,
                              sampler_steps=_STEPS.value)
        print(json.dumps({k: report[k] for k in ("weights", "ceilings", "inference")}))

    cli.run_absl(main)
