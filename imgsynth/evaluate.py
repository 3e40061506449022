"""Evaluation of a finished run on any captioned dataset: sample → decode → metrics.

    python -m imgsynth.evaluate --workdir=RUN [--num_samples=N --guidance=w --sampler_steps=K]
        [--inception_weights=inception_fid.npz] [--clip_weights=clip.npz --clip_vocab=VOCAB.gz]

Samples from the final checkpoint with the EMA weights and, unless `config.eval.weights` is
`("ema",)`, the raw ones on the first `config.eval.raw_samples` of the same prompts (0: all) with
the same noise, for the EMA comparison; decodes with the run's autoencoder and writes the sample
grids (`samples_ema.png`, `samples_raw.png`) before any metric. Where the raw weights saw fewer
prompts, the EMA's images of those prompts are scored again as `ema_matched`: a Fréchet distance
grows as its sample shrinks, so the comparison is made at equal size.
Then scores the images: alignment score, fd_align and KID (the dataset's own contrastive model)
always; prompt following and fd_judge where the data stores scenes (shapes); label following
where it has labels; Inception FID and CLIP score when their weights are given (flags or
`config.eval`). `eval.json` holds every metric, the instruments' ceilings and real-vs-real floors,
`unavailable` (each metric the dataset or setup cannot support, with the reason), evaluation
losses, analytic inference FLOPs per image, measured images/s and batch-1 latency, the settings
and the evaluation's own timing. Every metric carries its 95% interval over the evaluated images
as `<name>_lo` and `<name>_hi` beside it (`imgsynth.metrics.intervals`). The EMA weights are the
post-hoc average of the σ_rel in `config.ema.candidates` with the lowest validation loss
(`imgsynth.ema`), recorded as `ema_sigma_rel` with every candidate's loss; a run that tracked a
fixed-decay average (`ema_decay`) is evaluated with that.
"""
from __future__ import annotations

import json
import logging
import os
import time
from io import BytesIO

import jax
import numpy as np
from flax import nnx

from imgsynth import checkpoint as ckpt_lib, cli, config as config_lib, io, loop, optim, perf
from imgsynth import ema as ema_lib, registry, stages
from imgsynth.data import images as images_lib
from imgsynth.metrics import _data, alignment as alignment_lib, clip_score, frechet, inception
from imgsynth.metrics import instruments as instruments_lib, intervals, prompt_following as pf

MAX_SAMPLE_BATCH = 64
WEIGHT_SETS = {"raw": "params", "ema": "ema"}   # eval.json's name → the train state's


def sample_batch(n: int) -> int:
    """The batch that splits `n` images most evenly in ceil(n / MAX_SAMPLE_BATCH) batches: 300
    images are 5 x 60, not 5 x 64 with 20 padded rows sampled for nothing."""
    return -(-n // -(-n // MAX_SAMPLE_BATCH))


class NotReady(RuntimeError):
    """The run or one of the instruments it needs is missing."""


def load_run(workdir: str):
    """(config, paradigm module, graphdef, {'params', 'ema'}, step) of a finished run; 'ema' is
    the tuple of power-function profiles it tracked (a fixed-decay average: its one tree).

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
    config = stages.run_config(config_path)
    plan = registry.plan(config)
    module = plan.module
    graphdef, abstract_params = nnx.split(nnx.eval_shape(lambda: module.build(config, nnx.Rngs(0))))
    init_state, _, _ = optim.make_update(config, None, graphdef, plan.total_steps)
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


def generate(sampler, params, text_ids, text_mask, seed: int, batch: int | None = None
             ) -> tuple[np.ndarray, list[float]]:
    """uint8 images for the captions in equal batches of `batch` (default `sample_batch`), and
    each batch's wall time (sampling, decoding and the copy to the host). A caption's noise
    depends on its index and the batch alone, so a prefix of the captions sampled at the same
    batch gets the same noise."""
    batch = batch or sample_batch(len(text_ids))
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


def evaluate(workdir: str, *, num_samples: int | None = None, guidance: float | None = None,
             sampler_steps: int | None = None, seed: int = 0, inception_weights: str = "",
             clip_weights: str = "", clip_vocab: str = "") -> dict:
    """Evaluates a finished run (see the module docstring); settings not given come from
    `config.eval` where the run's config has them."""
    called = time.time()
    config, module, graphdef, weights, step = load_run(workdir)
    loop.use_compilation_cache(config)
    settings = config.get("eval") or {}
    num_samples = num_samples or settings.get("num_samples") or config_lib.EVAL_SAMPLES
    if guidance is not None:
        config.sampler.guidance = guidance
    if sampler_steps is not None:
        config.sampler.steps = sampler_steps
    asked = tuple(settings.get("weights") or WEIGHT_SETS)
    if "ema" not in asked or not set(asked) <= set(WEIGHT_SETS):
        raise ValueError(f"eval.weights={asked}: choose ('raw', 'ema') or ('ema',)")
    chosen = [key for key in WEIGHT_SETS if key in asked]   # EMA last: its pass is timed
    counts = config_lib.eval_samples(settings, num_samples)
    # Everything that can refuse the evaluation does so before sampling.
    dataset = _data.Dataset.of(stages.data_config(config))
    real = instruments_lib.evaluation_records(dataset, num_samples)
    external = instruments_lib.load_external(
        inception_weights or settings.get("inception_weights", ""),
        clip_weights or settings.get("clip_weights", ""),
        clip_vocab or settings.get("clip_vocab", ""))
    try:   # never trains; copies in what ships; a missing stage names the run's command
        instruments = stages.instruments(config, external)
    except cli.MissingStage as e:
        raise e.for_config(os.path.join(workdir, "config.json")) from None
    if dataset.has_scenes:
        prompts = pf.evaluation_prompts(dataset.spec.data_dir, dataset.spec.shapes_config,
                                        num_prompts=num_samples, seed=seed)
        captions, categories, labels = list(prompts.captions), prompts.categories, None
    else:
        captions, categories, labels = real.captions, None, real.labels
    posthoc = ema_lib.score(workdir) if config.get("ema") is not None else None
    if posthoc:   # chosen on the validation split, never on the images scored below
        weights["ema"] = posthoc["params"]
    decode = instruments.autoencoder.decode_latents
    text_ids, text_mask = stages.caption_inputs(config, captions)   # a frozen encoder's on the fly

    sampler = make_sampler(config, module, graphdef, decode)
    batch = sample_batch(len(text_ids))
    # Compiled ahead for the batch shape, so every timed pass measures sampling alone.
    compiled = sampler.lower(weights["ema"], text_ids[:batch], text_mask[:batch],
                             jax.random.key(seed)).compile()
    images = {}
    for key in chosen:   # the raw weights on a prefix of the prompts, with the EMA's noise
        n = counts[key]
        images[key], seconds = generate(compiled, weights[WEIGHT_SETS[key]], text_ids[:n],
                                        text_mask[:n], seed, batch)
    png = _sample_grid(workdir, images["ema"], captions, "samples_ema.png")
    raw_png = "raw" in images and _sample_grid(workdir, images["raw"], captions, "samples_raw.png")

    reference = _reference_features(instruments, real.images)
    sets = dict(images)
    if len(images.get("raw", images["ema"])) < num_samples:
        sets["ema_matched"] = images["ema"][:len(images["raw"])]
    results = {key: _metrics(instruments, imgs, captions[:len(imgs)],
                             None if categories is None else categories[:len(imgs)],
                             None if labels is None else labels[:len(imgs)], reference, seed)
               for key, imgs in sets.items()}

    rows = loop.MetricsLog(workdir).rows()
    last = next((r for r in reversed(rows) if "eval/loss" in r), {})
    for key in chosen:
        results[key]["eval_loss"] = last.get("eval/loss" + ("_ema" if key == "ema" else ""))
    if posthoc:
        results["ema"]["eval_loss"] = posthoc["sigma_rel"][posthoc["best"]]
    if "ema_matched" in results:
        results["ema_matched"]["eval_loss"] = results["ema"]["eval_loss"]

    # Throughput from the EMA pass's batches (padded rows are work too).
    speed = {"images_per_s": batch * len(seconds) / sum(seconds),
             "latency_s": latency(sampler, weights["ema"], text_ids, text_mask),
             "batch_size": batch}
    latent = jax.eval_shape(lambda p: module.sample(nnx.merge(graphdef, p), text_ids[:1],
                                                    text_mask[:1], jax.random.key(0), config),
                            weights["ema"])
    # The decoder is convolutional, unrolled: XLA's own count is exact enough here.
    decoder_flops = jax.jit(decode).lower(latent).cost_analysis()["flops"]
    report = {
        "dataset": dataset.name,
        "settings": {"num_samples": num_samples, "raw_samples": counts.get("raw"),
                     "guidance": config.sampler.guidance,
                     "sampler_steps": config.sampler.steps, "sampler": config.sampler.to_dict(),
                     "seed": seed, "checkpoint_step": step,
                     "eval_split": dataset.eval_split()},
        "weights": results,
        **({"ema_sigma_rel": posthoc["best"], "ema_validation_loss": {
            f"{s:g}": v for s, v in posthoc["sigma_rel"].items()}} if posthoc else {}),
        "ceilings": instruments.ceilings(real.images),
        "unavailable": instruments.unavailable,
        "inference": {"flops_per_image": module.inference_flops(config),
                      "decoder_flops_per_image": decoder_flops, **speed},
        "samples_png": os.path.basename(png),
        **({"samples_raw_png": os.path.basename(raw_png)} if raw_png else {}),
        # What this evaluation cost (benchmarks/study_efficiency.py): `start` is the process's
        # start (the launcher's evaluations are processes of their own), `called` this call's.
        "timing": {"start": perf.process_start(), "called": called, "end": time.time(),
                   "cores": perf.cores()},
    }
    report["above_ceiling"] = above_ceiling(results, report["ceilings"])
    io.write_json(os.path.join(workdir, "eval.json"), report)
    return report


# Scores no generator can beat in its autoencoder's latent space: (metric, its ceiling).
RECONSTRUCTION_CEILINGS = (("label_following", "autoencoder_label_following"),
                           ("alignment_score", "autoencoder_alignment_score"),
                           ("prompt_following/overall", "autoencoder_prompt_following"))


def above_ceiling(results: dict, ceilings: dict) -> dict:
    """{"<weights>/<metric>": value, interval and ceiling} for each score whose whole 95%
    interval lies above the same metric on the autoencoder's reconstructions of real images: an
    instrument crediting what the generator cannot have drawn (garbage read as a class or a
    caption), flagged in eval.json, the log and the report, never a result."""
    out = {}
    for weights, metrics in results.items():
        for name, ceiling_key in RECONSTRUCTION_CEILINGS:
            group, _, leaf = name.rpartition("/")
            tree = metrics.get(group, {}) if group else metrics
            value, lo = tree.get(leaf), tree.get(f"{leaf}_lo")
            ceiling = ceilings.get(ceiling_key)
            if None not in (value, lo, ceiling) and lo > ceiling:
                out[f"{weights}/{name}"] = {"value": value, "lo": lo, "hi": tree.get(f"{leaf}_hi"),
                                            "ceiling": ceiling}
                logging.warning("%s/%s %.3g [%.3g, %.3g] is above its autoencoder's "
                                "reconstruction ceiling %.3g: the instrument credits what the "
                                "generator cannot draw", weights, name, value, lo,
                                tree.get(f"{leaf}_hi"), ceiling)
    return out


def _reference_features(instruments, real_images) -> dict:
    """Features of the real evaluation images for every distance the instruments support."""
    out = {"align": instruments.alignment.image_features(real_images)}
    if instruments.judge is not None:
        out["judge"] = instruments.judge.features(real_images)
    if instruments.inception is not None:
        out["inception"] = inception.inception_features(instruments.inception, real_images,
                                                        batch_size=_inception_batch(real_images))
    return out


def _inception_batch(images) -> int:
    """At most 50 (pytorch-fid's batch), never padding a small set up to it."""
    return max(1, min(50, len(images)))


def _metrics(instruments, images, captions, categories, labels, reference, seed) -> dict:
    """Every supported metric of one generated set (prompts in `captions`), each with its 95%
    interval over the images as `<name>_lo`/`<name>_hi` beside it (`metrics.intervals`)."""
    feats = instruments.alignment.image_features(images)
    kid = frechet.kid(feats, reference["align"], subset_size=100, seed=seed)
    scores = alignment_lib.alignment_scores(instruments.alignment, images, captions)
    out, kid_out = {}, {"std": kid.std}
    _mean(out, "alignment_score", scores, seed)
    _distance(out, "fd_align", feats, reference["align"], seed)
    intervals.add(kid_out, "mean", kid.mean, intervals.kid_interval(
        kid.mean, feats, reference["align"], seed=seed, name="kid"))
    out["kid"] = kid_out
    if instruments.judge is not None:
        judge = instruments.judge
        scenes, unreadable = judge.read(images)
        result = pf.prompt_following(scenes, captions, categories)
        # Each image scored alone by the same function: the scores the interval resamples.
        ok = np.array([pf.prompt_following([s], [c], [k])["accuracy"]
                       for s, c, k in zip(scenes, captions, categories)])
        names = np.array([str(k) for k in categories])
        following = {}
        intervals.add(following, "overall", result["accuracy"], intervals.mean_interval(
            ok, seed=seed, name="prompt_following", strata=names))
        for category, value in result["per_category"].items():
            intervals.add(following, category, value, intervals.mean_interval(
                ok[names == category], seed=seed, name=f"prompt_following/{category}"))
        out["prompt_following"] = following
        out["judge_unreadable"] = float(unreadable.mean())
        _distance(out, "fd_judge", judge.features(images), reference["judge"], seed)
    if instruments.labels is not None:
        _mean(out, "label_following", instruments.labels.correct(images, labels), seed)
    if instruments.inception is not None:
        _distance(out, "inception_fid", inception.inception_features(
            instruments.inception, images, batch_size=_inception_batch(images)),
            reference["inception"], seed)
    if instruments.clip is not None:
        model, clip_tokenizer = instruments.clip
        _mean(out, "clip_score", clip_score.clip_scores(model, clip_tokenizer, images, captions),
              seed)
    return out


def _mean(out: dict, name: str, scores, seed: int) -> None:
    intervals.add(out, name, np.mean(scores), intervals.mean_interval(scores, seed=seed, name=name))


def _distance(out: dict, name: str, feats, reference, seed: int) -> None:
    value = frechet.fd(feats, reference)
    intervals.add(out, name, value, intervals.fd_interval(value, feats, reference, seed=seed,
                                                          name=name))


def _sample_grid(workdir: str, images: np.ndarray, captions, name: str, n: int = 16) -> str:
    """A grid of the first `n` samples with their prompts (written atomically)."""
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
    path = os.path.join(workdir, name)
    png = BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    io.atomic_write(path, png.getvalue())
    return path


if __name__ == "__main__":
    from absl import flags

    _WORKDIR = flags.DEFINE_string("workdir", None, "A finished run directory.")
    _NUM = flags.DEFINE_integer("num_samples", None, "Generated images per weight set (default: "
                                f"config eval.num_samples, else {config_lib.EVAL_SAMPLES}).")
    _GUIDANCE = flags.DEFINE_float("guidance", None, "Classifier-free guidance (default: config).")
    _STEPS = flags.DEFINE_integer("sampler_steps", None, "Sampler steps (default: config).")
    _INCEPTION = flags.DEFINE_string(
        "inception_weights", "", "Converted pytorch-fid Inception .npz: adds Inception FID "
        "(default: config eval.inception_weights).")
    _CLIP = flags.DEFINE_string("clip_weights", "", "Converted OpenAI CLIP .npz: adds the CLIP "
                                "score (default: config eval.clip_weights).")
    _CLIP_VOCAB = flags.DEFINE_string("clip_vocab", "", "CLIP's bpe_simple_vocab_16e6.txt.gz "
                                      "(default: config eval.clip_vocab).")
    flags.mark_flag_as_required("workdir")

    def main(argv):
        del argv
        logging.basicConfig(level=logging.INFO)
        with cli.usage_errors(NotReady, FileNotFoundError, NotADirectoryError, ValueError):
            report = evaluate(_WORKDIR.value, num_samples=_NUM.value, guidance=_GUIDANCE.value,
                              sampler_steps=_STEPS.value, inception_weights=_INCEPTION.value,
                              clip_weights=_CLIP.value, clip_vocab=_CLIP_VOCAB.value)
        print(json.dumps({k: report[k] for k in ("dataset", "weights", "ceilings", "unavailable",
                                                 "inference")}))

    cli.run_absl(main)
