"""The one training loop, for every paradigm.

    python -m imgsynth.train --config=experiments/flow.py:size=S[,runlocal] --workdir=DIR

Sections: run files · mesh · input · model and optimizer · sharded state · update step ·
checkpoint · evals · loop. The loop looks up the paradigm module by `config.paradigm` and never
asks which one it runs.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import metric_writers, periodic_actions
from flax import nnx

from imgsynth import checkpoint as ckpt_lib
from imgsynth import config as config_lib
from imgsynth import optim, perf, registry, sharding, workdir as wd
from imgsynth.data import pipeline


class NonFiniteLoss(FloatingPointError):
    pass


def plan(config: ml_collections.ConfigDict):
    """Everything decided before compiling: paradigm, cost, steps, steps to keep. Errors early."""
    module = registry.paradigm_module(config)
    cost = module.model_cost(config)
    total_steps = config_lib.resolve_steps(config, cost.train_flops_per_example)
    flops_per_step = cost.train_flops_per_example * config.global_batch_size
    keep_steps = sorted({min(total_steps, math.floor(b / flops_per_step)) for b in config.keep_flops
                         if b >= flops_per_step})
    return module, cost, total_steps, keep_steps


def make_update(config, loss, graphdef, total_steps: int):
    """The state initialiser and the update step (AdamW, clipping, EMA) as pure functions.

    `loss(model, batch, rng) -> (value, metrics)`; the autoencoders reuse this with their own.
    """
    tx, lr_schedule = optim.make(config.optimizer, total_steps)
    base_key = jax.random.key(config.seed)

    def init_state(params):
        return {"params": params, "ema": jax.tree.map(jnp.copy, params), "opt": tx.init(params),
                "step": jnp.zeros((), jnp.int32)}

    def train_step(state, batch):
        rng = jax.random.fold_in(base_key, state["step"])   # resume-safe: a function of the step

        def loss_fn(params):
            return loss(nnx.merge(graphdef, params), batch, rng)

        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt = tx.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        ema = optax.incremental_update(params, state["ema"], 1.0 - config.ema_decay)
        metrics = {f"train/{k}": v for k, v in aux.items()}
        metrics["train/grad_norm"] = optax.global_norm(grads)
        metrics["train/lr"] = lr_schedule(state["step"])
        return {"params": params, "ema": ema, "opt": opt, "step": state["step"] + 1}, metrics

    return init_state, train_step


def paradigm_loss(module, config):
    return lambda model, batch, rng: module.loss(model, batch, rng, config)


def compile_only(config: ml_collections.ConfigDict) -> dict:
    """Lowers and compiles the update step for the configured mesh without creating any weights.

    Reports the memory the step needs per device, so a configuration that does not fit is found
    before a pod is paid for.
    """
    module, cost, total_steps, _ = plan(config)
    mesh = sharding.make_mesh(config.mesh)
    config_lib.validate(config, data_parallel=sharding.data_parallel_size(mesh),
                        tensor_parallel=mesh.shape["tensor"])
    with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.LOGICAL_RULES):
        graphdef, abstract_params = nnx.get_abstract_model(
            lambda: module.build(config, nnx.Rngs(config.seed)), mesh)
        init_state, train_step = make_update(config, paradigm_loss(module, config), graphdef, total_steps)
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
            abstract_state, abstract_batch).compile()
        compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    report = {"mesh": dict(mesh.shape), "devices": jax.device_count(), "compile_s": compile_s,
              "params_total": cost.params_total, "total_steps": total_steps}
    for field in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
                  "generated_code_size_in_bytes", "alias_size_in_bytes"):
        report[field] = getattr(mem, field, None) if mem is not None else None
    if mem is not None:
        report["peak_bytes_per_device"] = (mem.argument_size_in_bytes + mem.output_size_in_bytes
                                           + mem.temp_size_in_bytes - mem.alias_size_in_bytes)
    return report


def train(config: ml_collections.ConfigDict, workdir: str, sources=None) -> dict:
    """Trains (or resumes) the run in `workdir`; returns the last metrics row.

    `sources` (train, eval) overrides the configured data — tests use in-memory records.
    """
    # ---- Run files ---------------------------------------------------------------------------
    sharding.initialize_distributed()
    module, cost, total_steps, keep_steps = plan(config)
    if sources is None:
        from imgsynth import stages
        config = stages.pin_autoencoder(config)
    status = wd.read_status(workdir)
    if status["status"] == "done":
        logging.info("%s is already done (step %s); nothing to do", workdir, status.get("step"))
        print(f"{workdir}: run already done at step {status.get('step')}; nothing to do.")
        return {"step": status.get("step"), "already_done": True}

    # ---- Mesh --------------------------------------------------------------------------------
    mesh = sharding.make_mesh(config.mesh)
    config_lib.validate(config, data_parallel=sharding.data_parallel_size(mesh),
                        tensor_parallel=mesh.shape["tensor"])
    os.makedirs(workdir, exist_ok=True)
    config_resolved = ml_collections.ConfigDict(config.to_dict())
    config_resolved.total_steps = total_steps
    wd.write_config(workdir, config_resolved)
    wd.write_status(workdir, "running", step=0)

    # ---- Input -------------------------------------------------------------------------------
    if sources is None:
        sources = stages.generator_data(config)
    train_source, eval_source = sources
    train_iter = pipeline.train_iterator(train_source, global_batch_size=config.global_batch_size,
                                         seed=config.seed, mesh=mesh)

    # ---- Model, optimizer, sharded state, update step -----------------------------------------
    model = sharding.create_sharded(lambda: module.build(config, nnx.Rngs(config.seed)), mesh)
    graphdef, params = nnx.split(model)
    init_state, train_step = make_update(config, paradigm_loss(module, config), graphdef, total_steps)
    with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.LOGICAL_RULES):
        state = jax.jit(init_state)(params)
        state_shardings = jax.tree.map(lambda x: x.sharding, state)
        step_fn = jax.jit(train_step, donate_argnums=(0,),
                          in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                          out_shardings=(state_shardings, None))

    # ---- Checkpoint --------------------------------------------------------------------------
    checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                         max_to_keep=config.keep_checkpoints, keep_steps=keep_steps)
    log = wd.MetricsLog(workdir)
    start = checkpointer.latest_step() or 0
    if start:
        state = checkpointer.restore(ckpt_lib.abstract(state), train_iter)
        log.truncate_after(start)
        logging.info("resumed from step %d", start)
    else:
        log.write({"step": 0, "examples_seen": 0, "flops/train_cumulative": 0.0,
                   "n_params/all": cost.params_total, "n_params/embedding": cost.params_embedding,
                   "n_params/non_embedding": cost.params_nonembedding,
                   "flops/train_per_example": cost.train_flops_per_example,
                   "flops/train_per_step": cost.train_flops_per_example * config.global_batch_size,
                   **{f"flops/fwd_{k}_per_example": c.fwd_flops
                      for k, c in cost.components.items()}})

    # ---- Evals -------------------------------------------------------------------------------
    eval_stream = pipeline.eval_batches(
        eval_source, global_batch_size=config.global_batch_size, mesh=mesh,
        num_examples=min(config.eval_examples, len(eval_source)))

    def eval_step(params, batch, index):
        rng = jax.random.fold_in(jax.random.key(1234), index)   # fixed noise/masks per batch
        valid = batch.pop("valid")
        per_example = module.eval_loss(nnx.merge(graphdef, params), batch, rng, config)
        return {k: jnp.sum(v * valid) for k, v in per_example.items()}, jnp.sum(valid)

    with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.LOGICAL_RULES):
        eval_fn = jax.jit(eval_step)

    def evaluate(state) -> dict:
        """Deterministic evaluation losses of the raw and the EMA weights."""
        out = {}
        for which, suffix in (("params", ""), ("ema", "_ema")):
            sums, count = {}, 0.0
            for i, batch in enumerate(eval_stream):
                totals, n = jax.device_get(eval_fn(state[which], sharding.to_global(batch, mesh), i))
                sums = {k: sums.get(k, 0.0) + float(v) for k, v in totals.items()}
                count += float(n)
            out.update({f"eval/{k}{suffix}": v / count for k, v in sums.items()})
        return out

    # ---- Loop --------------------------------------------------------------------------------
    flops_per_step = cost.train_flops_per_example * config.global_batch_size
    peak = config.peak_flops_per_s or perf.job_peak(
        perf.measure_device_peak(getattr(jnp, config.model.dtype)))
    writer = metric_writers.create_default_writer(workdir, just_logging=not wd.is_writer())
    progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                               every_secs=30)
    stop = _StopFlag()
    window = _Window(start)
    pending, row = None, {"step": start}
    logging.info("training %s/%s for %d steps (%.3g FLOPs/step, peak %.3g FLOP/s)",
                 config.paradigm, config.size, total_steps, flops_per_step, peak)

    def finish(step, metrics) -> dict:
        """Fetches a step's metrics (the device has moved on) and turns them into a row."""
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not math.isfinite(metrics["train/loss"]):
            raise NonFiniteLoss(f"non-finite training loss ({metrics['train/loss']}) at step {step}")
        step_s = window.step_time(step)
        return {"step": step, "examples_seen": step * config.global_batch_size,
                "flops/train_cumulative": step * flops_per_step, **metrics,
                "perf/step_time_s": step_s, "perf/mfu": flops_per_step / step_s / peak,
                "perf/images_per_s": config.global_batch_size / step_s}

    def write(row):
        log.write(row)
        writer.write_scalars(row["step"], {k: v for k, v in row.items() if k != "step"})

    try:
        with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.LOGICAL_RULES):
            first = sharding.to_global(next(train_iter), mesh)
            compiled = step_fn.lower(state, first).compile()
            logging.info("compiled the update step; memory: %s", compiled.memory_analysis())
            window.restart(start)
            for step in range(start + 1, total_steps + 1):
                batch = first if step == start + 1 else sharding.to_global(next(train_iter), mesh)
                state, metrics = compiled(state, batch)
                progress(step)
                if pending is not None:   # the previous step's metrics: the host never stalls
                    row = finish(*pending)
                    if row["step"] % config.log_every_steps == 0:
                        write(row)
                        window.restart(row["step"])
                pending = (step, metrics)
                save = (step % config.checkpoint_every_steps == 0 or step in keep_steps
                        or step == total_steps or stop.requested)
                evaluate_now = (step % config.eval_every_steps == 0 or step in keep_steps
                                or step == total_steps)
                if save or evaluate_now:
                    row = finish(*pending)   # checked finite before anything is saved
                    pending = None
                    if evaluate_now:
                        row.update(evaluate(state))
                    write(row)
                    if save:
                        checkpointer.save(step, state, train_iter)
                        wd.write_status(workdir, "running", step=step)
                    window.restart(step)
                if stop.requested:
                    wd.write_status(workdir, "pending", reason=f"pre-empted at step {step}; "
                                    "run the same command again to resume", step=step)
                    return row
    except BaseException as e:
        wd.write_status(workdir, "failed", reason=f"{type(e).__name__}: {e}"[:2000],
                        step=row.get("step", start))
        raise
    finally:
        checkpointer.close()
        writer.flush()
        stop.restore()
    wd.write_status(workdir, "done", step=total_steps)
    return row


class _Window:
    """Average step time since the last restart (logging, evals and saves excluded)."""

    def __init__(self, step: int):
        self.restart(step)

    def restart(self, step: int) -> None:
        self.step, self.t = step, time.perf_counter()

    def step_time(self, step: int) -> float:
        return (time.perf_counter() - self.t) / max(step - self.step, 1)


class _StopFlag:
    """SIGTERM/SIGINT ask the loop to checkpoint and stop cleanly (pre-emption)."""

    def __init__(self):
        self.requested = False
        self._old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:   # not the main thread
                pass

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def main(argv) -> None:
    del argv
    logging.basicConfig(level=logging.INFO)
    try:
        if _COMPILE_ONLY.value:
            report = compile_only(_CONFIG.value)
            for k, v in report.items():
                print(f"{k:<32} {v}")
            print(json.dumps(report))
            return
        if not _WORKDIR.value:
            raise SystemExit("error: --workdir is required (unless --compile_only)")
        train(_CONFIG.value, _WORKDIR.value)
    except (config_lib.ConfigError, NonFiniteLoss) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file.")
    _WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; resumed if present).")
    _COMPILE_ONLY = flags.DEFINE_bool(
        "compile_only", False, "Only lower and compile the update step; print its memory needs.")
    flags.mark_flags_as_required(["config"])
    app.run(main)
