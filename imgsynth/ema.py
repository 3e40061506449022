"""Post-hoc EMA of a finished run: the average of any σ_rel rebuilt from the run's snapshots,
each scored by evaluation loss on the validation split, the best one chosen.

    python -m imgsynth.ema --workdir=RUN [--sigma_rel=0.02,0.05,0.1,0.2] [--json]

Training saved its two power-function profiles at `config.ema.snapshots` points
(`<run>/ema_snapshots`, `imgsynth.phema`); a cooldown branch holds its trunk's up to the fork.
The average of relative width σ_rel at the run's last step is the least-squares combination of
all of them (Karras et al. 2024, Algorithm 3). The losses come from the held-out records the
training curve uses (the encoded validation split; synthetic data: its held-out records), never
the images `imgsynth.evaluate` scores, so choosing σ_rel here does not tune on the test images.
`--sigma_rel` defaults to `config.ema.candidates`. With `--json` the last line of stdout is
`{"sigma_rel": {"<σ>": <loss>, ...}, "best": <σ>}`.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from imgsynth import checkpoint as ckpt_lib, cli, io, loop, phema, registry, sharding, stages
from imgsynth import train
from imgsynth.data import sources as sources_lib


def snapshots(workdir: str, config, abstract_params, last_step: int, *, last_only: bool = False
              ) -> tuple[list[int], Iterator[tuple]]:
    """(steps, averages): per step, one tree per `config.ema.sigma_rels`, on one device, restored
    one step at a time as the iterator is read (an L run's 32 snapshots, ~10 GB, never sit in
    memory together). The run must have one at `last_step`; `last_only` reads that one alone."""
    directory = os.path.join(workdir, loop.SNAPSHOTS)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{workdir} has no post-hoc EMA snapshots ({directory})")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    one = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                       abstract_params)
    abstract = tuple(one for _ in config.ema.sigma_rels)
    store = ckpt_lib.Checkpointer(directory, read_only=True)
    steps = store.all_steps()
    if last_step not in steps:
        store.close()
        raise FileNotFoundError(f"{workdir} has no EMA snapshot at its last step {last_step} "
                                f"(snapshots at {steps})")
    steps = [last_step] if last_only else steps

    def restore():
        try:
            for s in steps:
                yield store.restore(abstract, step=s)
        finally:
            store.close()
    return steps, restore()


def reconstruct(sigmas, steps: list[int], averages: Iterable, sigma_rels: Sequence[float],
                step: int) -> list:
    """The power-function averages of widths `sigma_rels` at `step`, one tree each, from the
    snapshots: at each of `steps`, one average per profile of `sigmas` (`averages`, read once, in
    order). Accumulated where the snapshots are restored (the GPU on one), in their dtype, as
    EDM2 does: float32 leaves a relative error near 1e-6 where the tolerance is 2 %."""
    in_t = np.repeat(np.float64(steps), len(sigmas))
    in_std = np.tile(np.float64(sigmas), len(steps))
    coefficients = phema.solve_coefficients(in_t, in_std, step, np.float64(sigma_rels))
    totals, row = None, 0
    for per_step in averages:
        for tree in per_step:   # the order of in_t, in_std
            if totals is None:
                totals = tuple(jax.tree.map(jnp.zeros_like, tree) for _ in sigma_rels)
            totals = _accumulate(totals, tree, jnp.asarray(coefficients[row], jnp.float32))
            row += 1
    if row != len(in_t):
        raise ValueError(f"{row} snapshot averages for {len(in_t)} coefficients")
    return list(totals)


@functools.partial(jax.jit, donate_argnums=0)
def _accumulate(totals: tuple, tree, coefficients):
    """totals[k] += coefficients[k] * tree, in place."""
    return tuple(jax.tree.map(lambda acc, x, c=c: acc + c.astype(acc.dtype) * x, total, tree)
                 for total, c in zip(totals, coefficients))


def score(workdir: str, sigma_rels=None) -> dict:
    """{'sigma_rel': {σ: validation loss}, 'best': σ, 'params': the best average, 'step'}."""
    if sigma_rels is not None:   # a bad value is refused before anything is loaded
        sigma_rels = phema.check_sigma_rels(sigma_rels, "--sigma_rel")
    config = stages.run_config(os.path.join(workdir, loop.CONFIG_FILE))
    if config.get("ema") is None:
        raise cli.UsageError(f"{workdir} tracked a fixed-decay EMA (ema_decay), not the "
                             "power-function profiles a post-hoc EMA needs")
    sigma_rels = sigma_rels or phema.check_sigma_rels(config.ema.candidates, "ema.candidates")
    if io.read_status(workdir)["status"] != "done":
        raise cli.UsageError(f"{workdir} is not done; finish training first")
    plan = registry.plan(config)
    module = plan.module
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: module.build(config, nnx.Rngs(0))))
    tracked = tuple(config.ema.sigma_rels)
    last_only = phema.all_tracked(sigma_rels, tracked)   # gpu_study's: the last snapshot alone
    steps, averages = snapshots(workdir, config, abstract, plan.total_steps, last_only=last_only)
    held_out = (sources_lib.synthetic(module, config)[1] if config.data.name == "synthetic"
                else stages.generator_sources(config)[1])
    mesh = sharding.one_device_mesh()
    losses_of = train.eval_losses(module, config, graphdef, held_out, names=("loss",))
    if last_only:
        (last,) = averages
        rebuilt = [last[tracked.index(s)] for s in sigma_rels]
    else:
        rebuilt = reconstruct(tracked, steps, averages, sigma_rels, plan.total_steps)
    losses, best = {}, None
    with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.LOGICAL_RULES):
        for sigma, params in zip(sigma_rels, rebuilt):
            losses[sigma] = losses_of(params, mesh)["eval/loss"]
            if best is None or losses[sigma] < losses[best[0]]:
                best = (sigma, params)
    return {"sigma_rel": losses, "best": best[0], "params": best[1], "step": plan.total_steps}


if __name__ == "__main__":
    from absl import flags

    _WORKDIR = flags.DEFINE_string("workdir", None, "A finished run directory.")
    _SIGMA_REL = flags.DEFINE_list("sigma_rel", [], "σ_rel values to rebuild and score "
                                   "(default: the run's config.ema.candidates).")
    _JSON = flags.DEFINE_bool("json", False, "End with one JSON line: the loss of each σ_rel "
                              "and the best.")
    flags.mark_flag_as_required("workdir")

    def main(argv):
        del argv
        with cli.usage_errors(FileNotFoundError):
            if not os.path.isfile(os.path.join(_WORKDIR.value, loop.CONFIG_FILE)):
                raise cli.UsageError(f"--workdir={_WORKDIR.value}: not a run directory")
            out = score(_WORKDIR.value, _SIGMA_REL.value or None)
        for sigma, loss in out["sigma_rel"].items():
            print(f"sigma_rel {sigma:g}: validation loss {loss:.6g}"
                  + ("  (best)" if sigma == out["best"] else ""))
        if _JSON.value:
            print(json.dumps({"sigma_rel": {f"{s:g}": v for s, v in out["sigma_rel"].items()},
                              "best": out["best"]}))
        sys.stdout.flush()

    cli.run_absl(main)
