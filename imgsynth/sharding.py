"""Mesh, logical-axis rules and sharded state creation.

Model code names its axes logically ('embed', 'mlp', ...); this module alone decides how those
names map onto the physical mesh ('data', 'fsdp', 'tensor'), so changing the parallelism of a run
is a config change, never a model change.
"""
from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from imgsynth import cli, config as config_lib, multihost

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axes. Batch is split over both data-parallel axes; weights are split over
# 'fsdp' along their model dimension and over 'tensor' along heads / MLP hidden / vocabulary.
LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("layers", None),
    ("seq", None),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("patch", None),
    ("conv_in", None),
    ("conv_out", None),
)


def mesh_shape(spec: Sequence[int], num_devices: int | None = None) -> tuple[int, ...]:
    """Resolves a ('data', 'fsdp', 'tensor') shape with at most one -1 against the device count."""
    num_devices = jax.device_count() if num_devices is None else num_devices
    spec = tuple(int(s) for s in spec)
    if len(spec) != len(MESH_AXES):
        raise ValueError(f"mesh shape {spec} must have {len(MESH_AXES)} entries for axes {MESH_AXES}")
    if spec.count(-1) > 1:
        raise ValueError(f"mesh shape {spec}: at most one axis may be -1")
    if any(s == 0 or s < -1 for s in spec):
        raise ValueError(f"mesh shape {spec}: sizes must be positive or -1")
    known = math.prod(s for s in spec if s != -1)
    if num_devices % known:
        raise ValueError(
            f"mesh shape {spec} does not divide the {num_devices} available devices; "
            f"choose sizes whose product divides {num_devices}")
    shape = tuple(num_devices // known if s == -1 else s for s in spec)
    if math.prod(shape) != num_devices:
        raise ValueError(
            f"mesh shape {spec} uses {math.prod(shape)} devices but {num_devices} are available; "
            "put -1 on one axis to fill the rest")
    return shape


def make_mesh(spec: Sequence[int] = (-1, 1, 1)) -> jax.sharding.Mesh:
    """A mesh with classic compiler-propagated (Auto) axes, so logical constraints just work."""
    shape = mesh_shape(spec)
    return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(shape))


def one_device_mesh() -> jax.sharding.Mesh:
    """The mesh of this process's first device: for weights restored onto one device."""
    return jax.sharding.Mesh(np.array(jax.local_devices()[:1]).reshape((1,) * len(MESH_AXES)),
                             MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def data_parallel_size(mesh: jax.sharding.Mesh) -> int:
    """Devices the global batch is split over."""
    return mesh.shape["data"] * mesh.shape["fsdp"]


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Leading (batch) dimension split over 'data' and 'fsdp', the rest replicated."""
    return NamedSharding(mesh, P(("data", "fsdp")))


def to_global(batch: Any, mesh: jax.sharding.Mesh) -> Any:
    """Host-local numpy batch (this process's share) → global arrays sharded along the batch.

    The input pipeline gives process p the elements p, p + P, p + 2P, ... of each global batch,
    while the devices of process p hold a contiguous range of rows. With several processes the
    rows are put back into single-process order on the devices (one small all-to-all of the
    input batch), because noise and masks are drawn by row: a run then computes the same losses
    whatever the number of hosts.
    """
    sharding = batch_sharding(mesh)
    out = jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)
    if jax.process_count() == 1:
        return out
    rows = {x.shape[0] for x in jax.tree.leaves(out)}
    if len(rows) != 1:
        raise ValueError(f"batch leaves disagree on the number of rows: {sorted(rows)}")
    return _strided_to_canonical(sharding, rows.pop())(out)


@functools.lru_cache(maxsize=16)
def _strided_to_canonical(sharding: NamedSharding, global_rows: int) -> Callable[[Any], Any]:
    """A jitted row permutation: global row of (process p, local row j) → row j·P + p."""
    owner = {}   # global row -> (process, position among that process's rows)
    per_process: dict[int, list[int]] = {}
    for device, index in sharding.devices_indices_map((global_rows,)).items():
        start, stop, _ = index[0].indices(global_rows)
        per_process.setdefault(device.process_index, []).extend(range(start, stop))
    processes = sorted(per_process)
    for p in processes:
        for j, row in enumerate(sorted(set(per_process[p]))):
            owner[(processes.index(p), j)] = row
    count = len(processes)
    perm = np.array([owner[(c % count, c // count)] for c in range(global_rows)])
    return jax.jit(lambda tree: jax.tree.map(lambda x: x[perm], tree), out_shardings=sharding)


def create_sharded(build: Callable[[], nnx.Module], mesh: jax.sharding.Mesh,
                   rules=LOGICAL_RULES) -> nnx.Module:
    """Builds a module whose state is created directly in its final sharding.

    One jitted init constrains every parameter to the sharding its logical axes name, so no host
    ever holds the full model, and the model's Python runs once (a training process's start-up).
    """
    with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        @nnx.jit
        def init():
            model = build()
            state = nnx.state(model)
            specs = nnx.get_partition_spec(state)
            nnx.update(model, jax.lax.with_sharding_constraint(state, specs))
            return model

        return init()


def initialize_distributed() -> None:
    """Joins a multi-process job when the environment describes one; a single host is a no-op.

    TPU-VM workers and SLURM tasks are auto-detected by `jax.distributed.initialize()`; a manual
    job sets IMGSYNTH_COORDINATOR, IMGSYNTH_NUM_PROCESSES and IMGSYNTH_PROCESS_ID. TPU VMs made by
    `gcloud` describe their pod in metadata, not in the environment: IMGSYNTH_DISTRIBUTED=auto
    (set by the launcher on every worker) asks for auto-detection. The timeouts (a lost peer,
    start-up) are `imgsynth.multihost`'s. A process that cannot join is refused in one line.
    """
    if jax.distributed.is_initialized():
        return
    env = os.environ
    if "IMGSYNTH_COORDINATOR" in env:
        if env.get("JAX_PLATFORMS", "") == "cpu":
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        try:
            described = (env["IMGSYNTH_COORDINATOR"], int(env["IMGSYNTH_NUM_PROCESSES"]),
                         int(env["IMGSYNTH_PROCESS_ID"]))
        except (KeyError, ValueError) as e:
            raise config_lib.ConfigError(
                "IMGSYNTH_COORDINATOR needs IMGSYNTH_NUM_PROCESSES and IMGSYNTH_PROCESS_ID as "
                f"whole numbers ({type(e).__name__}: {e})") from None
        arguments = multihost.initialize_arguments(*described)
    elif env.get("IMGSYNTH_DISTRIBUTED") == "auto" or (
            any(k in env for k in ("SLURM_NTASKS", "TPU_WORKER_HOSTNAMES",
                                   "MEGASCALE_COORDINATOR_ADDRESS"))
            and int(env.get("SLURM_NTASKS", "2")) > 1):
        arguments = multihost.initialize_arguments()
    else:
        return
    try:
        jax.distributed.initialize(**arguments)
    except (RuntimeError, ValueError) as e:   # unreachable coordinator, a taken process id
        where = arguments.get("coordinator_address", "the detected coordinator")
        raise config_lib.ConfigError(
            f"could not join the job at {where} as process {arguments.get('process_id', '?')} "
            f"within {arguments['initialization_timeout']} s: {cli.message(e)[:300]}") from e
    multihost.check_job()
    logging.info("joined distributed job: process %d of %d, %d global devices",
                 jax.process_index(), jax.process_count(), jax.device_count())


def logical_spec(names: Sequence[str | None]) -> P:
    """Logical axis names → PartitionSpec under the active rules (unknown names are errors)."""
    from flax.core import spmd as core_spmd
    rules = dict(core_spmd.get_logical_axis_rules() or LOGICAL_RULES)
    missing = [n for n in names if n is not None and n not in rules]
    if missing:
        raise KeyError(f"logical axes {missing} have no rule in the logical-axis rules table")
    return P(*(rules[n] if n is not None else None for n in names))


def constrain(x: jax.Array, *names: str | None) -> jax.Array:
    """Pins an activation's sharding by logical names; a no-op outside a mesh (single device)."""
    if jax.sharding.get_abstract_mesh().empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_spec(names))
