"""Train a generator: the entry point that turns a run config into a task for the engine.

    python -m imgsynth.train --config=experiments/flow.py:size=S[,runlocal] --workdir=DIR

The paradigm module named by `config.paradigm` supplies the model, loss and evaluation loss; the
stages supply the encoded training data; `imgsynth.loop` trains. Nothing here asks which paradigm
it runs.
"""
from __future__ import annotations

import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from imgsynth import cli, config as config_lib, io, loop, optim, phema, registry, sharding
from imgsynth import stages
from imgsynth.data import pipeline, sources as sources_lib
from imgsynth.models import transformer
from imgsynth.paradigms import base

NonFiniteLoss = loop.NonFiniteLoss


def paradigm_loss(module, config):
    return lambda model, batch, rng: module.loss(model, batch, rng, config)


def task(config: ml_collections.ConfigDict, sources, plan: registry.Plan | None = None,
         fork: tuple[str, int] | None = None) -> loop.Task:
    """The engine's task for a generator run on `sources` = (train, eval) random-access records;
    `fork` = (trunk run directory, step) for a cooldown branch (see `fork_source`)."""
    plan = plan or registry.plan(config)
    module, cost = plan.module, plan.cost
    train_source, eval_source = sources
    eval_fn = None

    def train_iter():
        return pipeline.train_iterator(train_source, global_batch_size=config.global_batch_size,
                                       seed=config.seed)

    def evaluate(state, graphdef, mesh) -> dict:
        """Deterministic evaluation losses of the raw weights and the average of the curve."""
        nonlocal eval_fn
        eval_fn = eval_fn or eval_losses(module, config, graphdef, eval_source)
        return {**eval_fn(state["params"], mesh),
                **{f"{k}_ema": v for k, v in eval_fn(optim.curve_average(state), mesh).items()}}

    first_row = {"examples_seen": 0, "flops/train_cumulative": 0.0,
                 "n_params/all": cost.params_total, "n_params/embedding": cost.params_embedding,
                 "n_params/non_embedding": cost.params_nonembedding,
                 "flops/train_per_example": cost.train_flops_per_example,
                 "flops/train_per_step": plan.flops_per_step,
                 **{f"flops/fwd_{k}_per_example": c.fwd_flops for k, c in cost.components.items()},
                 **{f"flops/frozen_fwd_{k}_per_example": c.fwd_flops   # not training compute
                    for k, c in cost.frozen.items()}}
    return loop.Task(
        name=f"{config.paradigm}/{config.size}",
        build=lambda: module.build(config, nnx.Rngs(config.seed)),
        loss=paradigm_loss(module, config), train_iter=train_iter, total_steps=plan.total_steps,
        keep_steps=plan.keep_steps, flops_per_step=plan.flops_per_step, first_row=first_row,
        evaluate=None if config.get("fork_budgets") else evaluate,   # a trunk: not a result
        fork=fork, snapshot_steps=snapshot_steps(config, plan.total_steps))


def check_ema(config: ml_collections.ConfigDict, total_steps: int) -> None:
    """The post-hoc EMA's settings, refused with one line before anything is built."""
    if config.get("ema") is not None:
        optim.power_exponents(config)
        phema.check_sigma_rels(config.ema.candidates, "ema.candidates")
        snapshot_steps(config, total_steps)


def snapshot_steps(config: ml_collections.ConfigDict, total_steps: int) -> tuple[int, ...]:
    """Where a run saves its power-function profiles (`config.ema.snapshots` points)."""
    return phema.snapshot_steps(total_steps, config.ema.snapshots) if config.get("ema") else ()


def eval_losses(module, config: ml_collections.ConfigDict, graphdef, eval_source,
                names: tuple[str, ...] | None = None):
    """`fn(params, mesh) -> {'eval/<name>': mean}`: the paradigm's evaluation losses over the
    first `config.eval_examples` of `eval_source`, with fixed noise and masks per batch (so two
    sets of weights are compared on the same draws). `names` keeps those losses alone: XLA drops
    the work only the others need (MaskGIT's per-ratio diagnostics are three of its four passes)."""
    def eval_step(params, batch, index):
        rng = jax.random.fold_in(jax.random.key(1234), index)   # fixed noise/masks per batch
        valid = batch.pop("valid")
        per_example = module.eval_loss(nnx.merge(graphdef, params), batch, rng, config)
        return {k: jnp.sum(v * valid) for k, v in per_example.items()
                if names is None or k in names}, jnp.sum(valid)
    step = jax.jit(eval_step)

    def fn(params, mesh) -> dict:
        stream = pipeline.eval_batches(eval_source, global_batch_size=config.global_batch_size,
                                       mesh=mesh,
                                       num_examples=min(config.eval_examples, len(eval_source)))
        sums, count = {}, 0.0
        for i, batch in enumerate(stream):
            totals, n = jax.device_get(step(params, sharding.to_global(batch, mesh), i))
            sums = {k: sums.get(k, 0.0) + float(v) for k, v in totals.items()}
            count += float(n)
        return {f"eval/{k}": v / count for k, v in sums.items()}
    return fn


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (or resumes) the run in `workdir`; returns the last metrics row."""
    sharding.initialize_distributed()
    plan = registry.plan(config)   # config errors before anything is built or written
    check_ema(config, plan.total_steps)
    transformer.check_compute_dtype(base.dtype(config))
    config = stages.pin(config)
    loop.check_config(workdir, resolved(config, plan))
    done = loop.finished(workdir)
    if done:
        return done
    fork = fork_source(resolved(config, plan), workdir)   # a branch's errors before any work
    sources = (sources_lib.synthetic(plan.module, config) if config.data.name == "synthetic"
               else stages.generator_sources(config))   # may train the autoencoder first
    built = config   # config.json keeps "auto"; the model is built with the policy it chose
    if config.model.remat == "auto":
        built = with_remat(config, choose_remat(config, plan, device_memory_limit())[0])
    return loop.run(resolved(config, plan), workdir, task(built, sources, plan, fork))


# Keys in which a cooldown branch may differ from its trunk: the schedule's end and the grid's
# bookkeeping. The learning rates up to the fork are compared separately, value by value.
FORK_FREE_KEYS = (*config_lib.DURATION_KEYS, "optimizer.schedule", "keep_flops", "fork_budgets",
                  "fork_from", "grid.budget")


def fork_source(config: ml_collections.ConfigDict, workdir: str) -> tuple[str, int] | None:
    """(trunk run directory, step) of a branch (`config.fork_from`), None for any other run.

    `fork_from.workdir` is the trunk's run directory, relative to this run's `workdir` when not
    absolute (a grid names its sibling: `../flow-S-trunk`). A branch that has not forked yet is
    refused with one line, before anything is built, for a trunk that is missing, differs in
    anything but the schedule's end, has other learning rates up to the fork, is shorter than
    the fork, or lacks that checkpoint.
    """
    fork = config.get("fork_from")
    if fork is None or not fork.workdir:
        return None
    trunk = os.path.normpath(os.path.join(workdir, fork.workdir))
    own = os.path.join(workdir, "checkpoints")
    if os.path.isdir(own) and os.listdir(own):
        return trunk, fork.step        # forked before: it resumes from its own checkpoints
    old = io.read_json(os.path.join(trunk, loop.CONFIG_FILE))
    if old is None:
        raise config_lib.ConfigError(f"fork_from: no run in {trunk} (no {loop.CONFIG_FILE}); "
                                     "train the trunk first")
    new = json.loads(config.to_json_best_effort(sort_keys=True))
    mine, theirs = _flat(new), _flat(old)
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k)
                    and not any(k == f or k.startswith(f + ".") for f in FORK_FREE_KEYS))
    if differ:
        raise config_lib.ConfigError(f"fork_from: the trunk {trunk} differs from this run in "
                                     f"{differ}; a branch may change only the schedule's end")
    if fork.step > old["total_steps"]:
        raise config_lib.ConfigError(f"fork_from.step={fork.step} is beyond the trunk's "
                                     f"{old['total_steps']} steps ({trunk})")
    steps = np.arange(fork.step)
    ours = np.asarray(optim.schedule(config.optimizer, config.total_steps)(steps))
    trunk_opt = ml_collections.ConfigDict(old["optimizer"])
    trunks = np.asarray(optim.schedule(trunk_opt, old["total_steps"])(steps))
    if not np.array_equal(ours, trunks):
        first = int(np.argmax(ours != trunks))
        raise config_lib.ConfigError(
            f"fork_from: the trunk's learning rate differs from this run's before the fork (step "
            f"{first}: {trunks[first]:.3g} vs {ours[first]:.3g}); same warm-up and peak needed")
    if not os.path.isdir(os.path.join(trunk, "checkpoints", str(fork.step))):
        status = io.read_status(trunk)
        raise config_lib.ConfigError(
            f"fork_from: {trunk} has no checkpoint at step {fork.step} yet (trunk {status['status']}"
            f" at step {status.get('step', 0)})")
    return trunk, fork.step


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resolved(config, plan: registry.Plan) -> ml_collections.ConfigDict:
    """The config as written to config.json: with the optimizer steps its duration came to."""
    out = ml_collections.ConfigDict(config.to_dict())
    out.total_steps = plan.total_steps
    return out


def compile_only(config: ml_collections.ConfigDict, memory_limit: int | None = None) -> dict:
    """Lowers and compiles the update step for the configured mesh without creating any weights.

    Reports the memory the step needs per device, so a configuration that does not fit is found
    before a pod is paid for. With `model.remat=auto` it compiles every rematerialisation policy,
    reports each one's memory and the one training would choose for `memory_limit` bytes per
    device (this device's own limit when None).
    """
    plan = registry.plan(config)
    remat = config.model.remat
    if remat == "auto":
        limit = memory_limit or device_memory_limit()
        remat, peaks = choose_remat(config, plan, limit, every=True)
        report = {"remat": remat, "memory_limit_bytes": limit,
                  "remat_peak_bytes_per_device": peaks}
    else:
        report = {"remat": remat}
    return {**compile_step(with_remat(config, remat), plan), **report}


def compile_step(config: ml_collections.ConfigDict, plan: registry.Plan) -> dict:
    """Compiles the update step from abstract shapes (no weights) and reports its memory."""
    module = plan.module
    mesh = sharding.make_mesh(config.mesh)
    config_lib.validate(config, data_parallel=sharding.data_parallel_size(mesh),
                        tensor_parallel=mesh.shape["tensor"])
    with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.LOGICAL_RULES):
        graphdef, abstract_params = nnx.get_abstract_model(
            lambda: module.build(config, nnx.Rngs(config.seed)), mesh)
        init_state, train_step, inputs = optim.make_update(
            config, paradigm_loss(module, config), graphdef, plan.total_steps)
        state_shardings = jax.jit(init_state).lower(abstract_params).compile().output_shardings
        abstract_state = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            jax.eval_shape(init_state, abstract_params), state_shardings)
        example = module.example_batch(config, config.global_batch_size, np.random.default_rng(0))
        batch_sharding = sharding.batch_sharding(mesh)
        abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding)
                          for k, v in example.items()}
        t0 = time.perf_counter()
        compiled = jax.jit(train_step, donate_argnums=(0,),
                           out_shardings=(state_shardings, None)).lower(
            abstract_state, abstract_batch, inputs).compile()
        compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    report = {"mesh": dict(mesh.shape), "devices": jax.device_count(), "compile_s": compile_s,
              "params_total": plan.cost.params_total, "total_steps": plan.total_steps}
    for field in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
                  "generated_code_size_in_bytes", "alias_size_in_bytes"):
        report[field] = getattr(mem, field, None) if mem is not None else None
    if mem is not None:
        report["peak_bytes_per_device"] = (mem.argument_size_in_bytes + mem.output_size_in_bytes
                                           + mem.temp_size_in_bytes - mem.alias_size_in_bytes)
    return report


# Share of a device's memory limit the compiled step may ask for: the rest absorbs the
# allocator's fragmentation and the buffers outside the step (a batch in flight, metrics).
FIT_FRACTION = 0.9


def with_remat(config: ml_collections.ConfigDict, remat: str) -> ml_collections.ConfigDict:
    out = ml_collections.ConfigDict(config.to_dict())
    out.model.remat = remat
    return out


def device_memory_limit(device=None) -> int:
    """Bytes one device may hold: the allocator's limit on an accelerator, else (a CPU) the
    host's physical memory shared among its local devices."""
    device = device or jax.local_devices()[0]
    stats = device.memory_stats() or {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // jax.local_device_count()


def choose_remat(config: ml_collections.ConfigDict, plan: registry.Plan, memory_limit: int, *,
                 every: bool = False, compile_fn=None) -> tuple[str, dict[str, int | None]]:
    """The least rematerialisation (in `transformer.REMAT_POLICIES` order) whose compiled update
    step needs at most FIT_FRACTION of `memory_limit` bytes per device, and the peak bytes of each
    policy compiled (all of them with `every`). Decided from XLA's memory analysis of the compiled
    program, before any weights exist; a step that fits under no policy is a config error."""
    compile_fn = compile_fn or compile_step
    peaks, choice = {}, None
    for remat in transformer.REMAT_POLICIES:
        if choice is not None and not every:
            break
        peaks[remat] = compile_fn(with_remat(config, remat), plan).get("peak_bytes_per_device")
        fits = peaks[remat] is None or peaks[remat] <= FIT_FRACTION * memory_limit
        if choice is None and fits:
            choice = remat
    if choice is None:
        raise config_lib.ConfigError(
            f"model.remat=auto: the update step needs {peaks['full'] / 2**30:.1f} GiB per device "
            f"even with full rematerialisation, more than {FIT_FRACTION:.0%} of the device's "
            f"{memory_limit / 2**30:.1f} GiB; lower global_batch_size or shard the model (mesh)")
    logging.info("model.remat=auto: %s (peak GiB per device: %s)", choice,
                 {k: None if v is None else round(v / 2**30, 2) for k, v in peaks.items()})
    return choice, peaks


def main(argv) -> None:
    del argv
    logging.basicConfig(level=logging.INFO)
    with cli.usage_errors(KeyError, ValueError):   # unknown size or paradigm, a bad budget
        registry.plan(_CONFIG.value)
    if _COMPILE_ONLY.value:
        report = compile_only(_CONFIG.value, int(_DEVICE_MEMORY_GB.value * 2**30) or None)
        for k, v in report.items():
            print(f"{k:<32} {v}")
        print(json.dumps(report))
        return
    if not _WORKDIR.value:
        raise cli.UsageError("--workdir is required (unless --compile_only)")
    try:
        train(_CONFIG.value, _WORKDIR.value)
    except NonFiniteLoss as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    from absl import flags
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file.")
    _WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; resumed if present).")
    _COMPILE_ONLY = flags.DEFINE_bool(
        "compile_only", False, "Only lower and compile the update step; print its memory needs.")
    _DEVICE_MEMORY_GB = flags.DEFINE_float(
        "device_memory_gb", 0.0, "--compile_only with model.remat=auto: the memory (GiB) one "
        "device may hold, e.g. 133 for an H200 at XLA_PYTHON_CLIENT_MEM_FRACTION=0.95; 0: this "
        "device's own")
    flags.mark_flags_as_required(["config"])
    cli.run_absl(main)
