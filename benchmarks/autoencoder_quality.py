"""Autoencoder quality for a fixed training time: PSNR, code usage, and the judge on reconstructions.

    python benchmarks/autoencoder_quality.py [--kind=all|kl|lfq|fsq|kl,fsq] [--minutes=10]
        [--set autoencoder.channels=64 --set optimizer.lr=1e-3 ...]

Trains each autoencoder of experiments/autoencoder.py with the suite's update step
(`imgsynth.optim.make_update`: AdamW, clipping, warm-up + cosine schedule, EMA) for `--minutes` of
training time, then evaluates the EMA weights on the validation split of the shapes dataset with
`imgsynth.train_autoencoder.evaluate` (PSNR from the mean squared error over the split, images in
[-1, 1]; KL, or the discrete kinds' code usage and perplexity), and on the test split with the
dataset's judge (trained first if missing): prompt following on the reconstructions
(`<kind>_judge_recon`, the ceiling of every generator in that latent space), the Fréchet distance
of their judge features to the real images' (`<kind>_fd_recon`) and per-attribute accuracy against
the true scenes (`<kind>_attributes`). `default_discrete` names the discrete kind the token
paradigms use by default.

The budget is CPU time: `--minutes=10` means ten CPU minutes (process time, all threads). On the
2-core machine that is at most 10 wall-clock minutes however the threads are used (XLA keeps about
1.3 cores busy on these small convolutions), and on a machine shared with other jobs the run still
gets the same computation. The step count that fills the budget is measured first (a short
calibration, like compilation not counted), so the learning-rate schedule runs to completion.
Throughput is reported per wall-clock second (depends on the machine's load) and per CPU second.
The final stdout line is JSON.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from experiments import autoencoder as ae_config, common  # noqa: E402
from imgsynth import io, train_autoencoder  # noqa: E402
from imgsynth.data import images as images_lib  # noqa: E402
from imgsynth.metrics import _data, judge as judge_lib, prompt_following  # noqa: E402
from imgsynth.models import autoencoder as ae_lib  # noqa: E402
from imgsynth.optim import make_update  # noqa: E402

CALIBRATION_STEPS = (5, 50)  # warm-up steps, then timed steps
CALIBRATION_MARGIN = 0.9


def load_images(config_data, split: str, n: int) -> np.ndarray:
    """The first `n` images of a split of the dataset (built if missing), uint8 (n, H, W, 3)."""
    from imgsynth.data import build, pipeline
    build.build_if_missing(config_data, log=print)
    source = pipeline.load_split(config_data, split)
    n = min(n, len(source))
    return np.stack([r["image"] for r in source.__getitems__(range(n))])


def _loss(model, batch, rng):
    return model.loss(images_lib.to_float(batch["image"]), rng)


def _compiled_step(config, graphdef, params, total_steps, example):
    init_state, train_step, inputs = make_update(config, _loss, graphdef, total_steps)
    state = jax.jit(init_state)(params)
    t0 = time.perf_counter()
    step = jax.jit(train_step, donate_argnums=(0,)).lower(state, example, inputs).compile()
    return state, lambda s, b: step(s, b, inputs), time.perf_counter() - t0


def train(config: ml_collections.ConfigDict, train_images: np.ndarray, minutes: float):
    """Trains for `minutes` of CPU time; returns the EMA model and throughput figures."""
    model = ae_lib.build_autoencoder(config.autoencoder, nnx.Rngs(config.seed))
    graphdef, params = nnx.split(model)
    batch = config.global_batch_size
    rng = np.random.default_rng(config.seed)

    def next_batch():
        return {"image": train_images[rng.integers(0, len(train_images), batch)]}

    # Calibration: CPU seconds per step on a throw-away state.
    state, step, compile_s = _compiled_step(config, graphdef, jax.tree.map(jnp.copy, params),
                                            10 ** 6, next_batch())
    warmup, timed = CALIBRATION_STEPS
    for i in range(warmup + timed):
        if i == warmup:
            t0 = time.process_time()
        state, metrics = step(state, next_batch())
        jax.block_until_ready(metrics)
    per_step = (time.process_time() - t0) / timed
    budget_s = 60.0 * minutes
    # CPU time per step drifts with the machine's load, so the schedule is planned for 90% of the
    # budget and the loop stops at the budget regardless (reporting the steps it made).
    total_steps = max(int(CALIBRATION_MARGIN * budget_s / per_step), 1)

    state, step, _ = _compiled_step(config, graphdef, params, total_steps, next_batch())
    start, start_cpu = time.perf_counter(), time.process_time()
    for i in range(1, total_steps + 1):
        state, metrics = step(state, next_batch())
        jax.block_until_ready(metrics)   # as in the calibration, and keeps the clock exact
        over = time.process_time() - start_cpu >= budget_s
        if i % config.log_every_steps == 0 or i == total_steps or over:
            metrics = jax.device_get(metrics)
            print(f"  step {i:5d}/{total_steps}  {time.process_time() - start_cpu:6.0f} CPU s"
                  f"  loss {metrics['train/loss']:.4f}  psnr {metrics['train/psnr']:.2f}",
                  flush=True)
        if over:
            break
    jax.block_until_ready(state)
    cpu_s, wall_s = time.process_time() - start_cpu, time.perf_counter() - start
    stats = {"steps": i, "planned_steps": total_steps, "cpu_minutes": cpu_s / 60.0,
             "wall_minutes": wall_s / 60.0, "compile_s": compile_s, "images_per_s": i * batch / wall_s,
             "images_per_cpu_s": i * batch / cpu_s, "load": os.getloadavg()[0],
             "n_params": sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))}
    return nnx.merge(graphdef, state["ema"]), stats


def _configs(kinds, config_arg: str, overrides: list[str]) -> dict:
    configs = {}
    for kind in kinds:
        config = ae_config.get_config(",".join(filter(None, [f"kind={kind}", config_arg])))
        for item in overrides:
            key, _, text = item.partition("=")
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text
            *parents, leaf = key.split(".")
            node = config
            for p in parents:
                node = node[p]
            if leaf not in node:
                raise KeyError(f"--set {key}: no such config key")
            node[leaf] = value
        configs[kind] = config
    return configs


def load_or_train_judge(data) -> judge_lib.Judge:
    """The dataset's judge as the suite caches it, trained once (default settings) if missing;
    waits under the suite's lock while another process trains it."""
    directory = judge_lib.judge_dir(data.data_dir, data.builder_config)
    with io.FileLock(directory):
        if not os.path.isfile(os.path.join(directory, judge_lib.INFO_FILE)):
            from imgsynth.metrics import train_judge
            train_judge.train_judge(data.data_dir, data.builder_config, log=print)
    return judge_lib.load_judge(data.data_dir, data.builder_config)


def judge_ceilings(model, judge, test: _data.Split, batch: int = 250) -> dict:
    """`prompt_following.reconstruction_ceilings` of the model's round trips of `test`."""
    roundtrip = nnx.jit(lambda m, x: m.decode(m.encode(x)))
    recon = np.concatenate([
        images_lib.to_uint8(roundtrip(model, jnp.asarray(images_lib.to_float(
            test.images[i:i + batch]))))
        for i in range(0, len(test.images), batch)])
    return prompt_following.reconstruction_ceilings(judge, test, recon)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", default="all",
                        help="'all' (every kind), or kinds separated by commas: kl,lfq,fsq")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--config_arg", default="", help="argument of experiments/autoencoder.py")
    parser.add_argument("--data_dir", default="",
                        help="where the shapes dataset is (built there if missing); default: "
                             "config.data.data_dir, else <cache_dir>/data")
    parser.add_argument("--num_train", type=int, default=100_000)
    parser.add_argument("--num_validation", type=int, default=5_000)
    parser.add_argument("--num_test", type=int, default=5_000,
                        help="test images the judge reads back after the round trip")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. autoencoder.channels=64 (repeatable)")
    args = parser.parse_args()
    kinds = ae_config.KINDS if args.kind == "all" else tuple(args.kind.split(","))
    bad = [k for k in kinds if k not in ae_config.KINDS]
    if bad:
        raise SystemExit(f"--kind: {bad} not among {ae_config.KINDS}")
    configs = _configs(kinds, args.config_arg, args.set)

    data = configs[kinds[0]].data
    data.data_dir = args.data_dir or data.data_dir or os.path.join(
        os.path.expanduser(configs[kinds[0]].cache_dir), "data")
    t0 = time.perf_counter()
    train_images = load_images(data, "train", args.num_train)
    val_images = images_lib.to_float(load_images(data, "validation", args.num_validation))
    test = _data.read_split(data.data_dir, data.builder_config, "test", limit=args.num_test)
    print(f"data: {len(train_images)} train / {len(val_images)} validation / {len(test.images)} "
          f"test images of {data.data_dir} ({data.builder_config}) "
          f"({time.perf_counter() - t0:.0f}s)", flush=True)
    judge = None   # loaded after the first training: it may still be training elsewhere

    rows, result = [], {}
    for kind in kinds:
        config = configs[kind]
        print(f"[{kind}] {config.autoencoder.to_dict()}  batch {config.global_batch_size}  "
              f"lr {config.optimizer.lr}", flush=True)
        model, stats = train(config, train_images, args.minutes)
        metrics = train_autoencoder.evaluate(model, val_images)
        judge = judge or load_or_train_judge(data)
        metrics.update(judge_ceilings(model, judge, test))
        attrs = metrics["autoencoder_attributes"]
        print(f"[{kind}] judge on reconstructions {metrics['autoencoder_prompt_following']:.4f}, "
              f"FD {metrics['autoencoder_fd_judge']:.2f}, attributes "
              + " ".join(f"{k} {v:.3f}" for k, v in attrs.items() if k != "num"), flush=True)
        rows.append((kind, stats, metrics))
        result[f"{kind}_psnr"] = round(metrics["psnr"], 3)
        result[f"{kind}_mse"] = metrics["mse"]
        result[f"{kind}_judge_recon"] = round(metrics["autoencoder_prompt_following"], 4)
        result[f"{kind}_fd_recon"] = round(metrics["autoencoder_fd_judge"], 3)
        result[f"{kind}_attributes"] = {k: round(v, 4) for k, v in attrs.items()}
        if kind == "kl":
            result["kl_kl"] = metrics["kl"]
        else:
            result.update({f"{kind}_code_usage": metrics["code_usage"],
                           f"{kind}_perplexity": metrics["perplexity"],
                           f"{kind}_codebook_size": model.codebook_size})
        result.update({f"{kind}_train_minutes": round(stats["cpu_minutes"], 2),
                       f"{kind}_wall_minutes": round(stats["wall_minutes"], 2),
                       f"{kind}_steps": stats["steps"],
                       f"{kind}_planned_steps": stats["planned_steps"],
                       f"{kind}_images_per_s": round(stats["images_per_s"], 1),
                       f"{kind}_images_per_cpu_s": round(stats["images_per_cpu_s"], 1),
                       f"{kind}_n_params": stats["n_params"]})
    result["load_average"] = round(max(stats["load"] for _, stats, _ in rows), 2)
    result["judge_ceiling"] = judge.ceiling
    result["default_discrete"] = common.TOKENIZER["kind"]

    print(f"\n{'kind':5} {'params':>9} {'steps':>6} {'CPU min':>7} {'wall min':>8} {'img/s':>6} "
          f"{'img/CPU-s':>9} {'PSNR':>6} {'MSE':>9} {'judge':>6} {'FD':>7}  extra")
    for kind, stats, m in rows:
        extra = (f"KL {m['kl']:.3f}" if kind == "kl" else
                 f"usage {100 * m['code_usage']:.1f}%  perplexity {m['perplexity']:.0f}")
        print(f"{kind:5} {stats['n_params']:9d} {stats['steps']:6d} {stats['cpu_minutes']:7.1f} "
              f"{stats['wall_minutes']:8.1f} {stats['images_per_s']:6.0f} "
              f"{stats['images_per_cpu_s']:9.0f} {m['psnr']:6.2f} {m['mse']:9.2e} "
              f"{m['autoencoder_prompt_following']:6.3f} {m['autoencoder_fd_judge']:7.2f}  {extra}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
