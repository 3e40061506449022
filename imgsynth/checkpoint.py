"""Orbax checkpoints of the training state together with the grain iterator position.

Saving both in one step means a resumed run sees exactly the batches it would have seen. Orbax
writes each step to a temporary directory and renames it when complete; a checkpoint that still
fails to restore (a disk fault, a truncated file) is moved aside and the previous one is used.
"""
from __future__ import annotations

import functools
import logging
import os
import shutil
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from imgsynth import io


class Checkpointer:
    def __init__(self, directory: str, *, max_to_keep: int | None = 2, keep_steps=(),
                 read_only: bool = False):
        """Keeps the latest `max_to_keep` checkpoints (None: all) plus every step in
        `keep_steps` forever.

        `read_only`: another run's checkpoints (a fork reads its trunk's), never written or
        pruned from here."""
        _register_cpu_array_handler()
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            create=not read_only, read_only=read_only, enable_async_checkpointing=False,
            preservation_policy=policies.AnyPreservationPolicy([
                policies.LatestN(n=max_to_keep), policies.CustomSteps(sorted(set(keep_steps)))]))
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def has_step(self, step: int) -> bool:
        return step in self.manager.all_steps()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, data_iterator=None) -> None:
        """Saves `step`. A disk without room for the state's bytes is refused before writing (a
        disk within one checkpoint of full is full); one that fills during the save loses the
        half-written checkpoint. Both raise `io.DiskFull`, naming the folder and its free space."""
        needed = sum(x.nbytes for x in jax.tree.leaves(state) if hasattr(x, "nbytes"))
        if io.free_bytes(self.directory) < needed:
            raise io.DiskFull(self.directory, needed)
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        try:
            self.manager.save(step, args=ocp.args.Composite(**items), force=True)
            self.manager.wait_until_finished()
        except Exception as e:
            if not io.is_disk_full(e):
                raise
            self._remove_unfinished(step)
            raise io.DiskFull(self.directory, needed) from e

    def link_step(self, source_directory: str, step: int) -> None:
        """Another checkpoint directory's `step`, hard-linked in (copied where a link cannot cross
        file systems): a cooldown branch shares its trunk's EMA snapshots without a second copy of
        their bytes (a size-L trunk holds ~10 GB of them). Linked under a temporary name, then
        renamed, like a save; nothing here is ever rewritten in place, so sharing files is safe."""
        source = os.path.join(source_directory, str(step))
        temporary = os.path.join(self.directory, f".linking-{step}")
        shutil.rmtree(temporary, ignore_errors=True)
        try:
            shutil.copytree(source, temporary, copy_function=_link_or_copy)
            os.rename(temporary, os.path.join(self.directory, str(step)))
        except OSError as e:
            shutil.rmtree(temporary, ignore_errors=True)
            if io.is_disk_full(e):
                raise io.DiskFull(self.directory, _tree_bytes(source)) from e
            raise
        self.manager.reload()

    def _remove_unfinished(self, step: int) -> None:
        """The half-written checkpoint of `step` (orbax's temporary folder), gone."""
        for name in os.listdir(self.directory):
            if name.startswith(f"{step}.orbax-checkpoint-tmp"):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
        self.manager.reload()

    def restore(self, abstract_state: Any, data_iterator=None, step: int | None = None) -> Any:
        """Restores into the shardings of `abstract_state` (ShapeDtypeStructs with .sharding)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def restore_latest(self, abstract_state: Any, data_iterator, *, fallback: Any) -> tuple[int, Any]:
        """(step, state) of the newest checkpoint that restores cleanly, or (0, fallback).

        A checkpoint that fails is logged with the reason and moved to `<dir>.broken/<step>` (kept
        for inspection, out of the manager's way), and the next older one is tried.
        """
        position = data_iterator.get_state()
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                return step, self.restore(abstract_state, data_iterator, step)
            except Exception as e:   # noqa: BLE001 - any fault of one checkpoint
                logging.warning("checkpoint %d in %s does not restore (%s: %s); trying an older "
                                "one", step, self.directory, type(e).__name__, str(e)[:300])
                data_iterator.set_state(position)
                self._quarantine(step)
        return 0, fallback

    def _quarantine(self, step: int) -> None:
        broken = self.directory + ".broken"
        os.makedirs(broken, exist_ok=True)
        shutil.move(os.path.join(self.directory, str(step)), os.path.join(broken, str(step)))
        self.manager.reload()

    def close(self) -> None:
        self.manager.close()


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:   # another file system, or one without hard links
        shutil.copy2(source, destination)


def _tree_bytes(directory: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(directory) for f in files)


@functools.cache
def _register_cpu_array_handler() -> None:
    """Fake CPU devices share one memory: splitting replicated arrays across them for a parallel
    write only multiplies tiny device-to-host copies, so CPU saves write each array once."""
    if jax.default_backend() == "cpu":
        ocp.type_handlers.register_type_handler(
            jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)


def abstract(tree: Any) -> Any:
    """Shapes, dtypes and shardings of a live state: the restore target."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
