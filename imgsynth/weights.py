"""Weight files (.npz) read into NNX modules and written from them, with a complete-coverage check.

A core module: models (CLIP's towers, the autoencoders' files) and metrics (Inception, the
trained instruments) read weights the same way, and neither layer imports the other for it.
The pretrained ports keep the original state_dict names in their weight files so a file can be
checked against the published checkpoint key by key. Loading is strict in both directions: a key
the model does not use and a model variable no key fills are both errors, so a wrong or
truncated file can never silently give a half-random network.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sys
import zipfile
from collections.abc import Callable, Iterable

import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from imgsynth import io as io_lib

Path = tuple
WEIGHTS_FILE = "weights.npz"
Converter = Callable[[str, np.ndarray], Iterable[tuple[Path, np.ndarray]] | None]


def read_npz(path: str | os.PathLike, *, what: str, how_to_get: str) -> dict[str, np.ndarray]:
    """All arrays of an .npz file; a missing path names the file and how to make it."""
    path = os.fspath(path) if path is not None else None
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"{what} weights not found at {path!r}. {how_to_get}")
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def shape_stand_ins(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Zero-stride arrays of the shapes an .npz holds, read from the member headers only: a
    weight file is checked against an architecture (`match_weights`) without loading it."""
    out = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            with archive.open(name) as f:
                version = np.lib.format.read_magic(f)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read(f)
            out[name.removesuffix(".npy")] = np.broadcast_to(np.zeros((), dtype), shape)
    return out


def match_weights(factory: Callable[[], nnx.Module], weights: dict[str, np.ndarray],
                  convert: Converter, *, ignore: Callable[[str], bool] = lambda k: False,
                  what: str = "model"):
    """Maps every file key onto the variables of an abstract `factory()` and checks coverage.

    `convert(key, array)` returns the (variable path, value) pairs a file key provides, or None
    if the key is not one the model knows. Shapes must match exactly. Returns the graph
    definition, the abstract state and {path: host array}; nothing is put on a device, so a
    full-size architecture can be checked against zero-stride stand-in arrays.
    """
    graphdef, state = nnx.split(nnx.eval_shape(factory))
    targets = traverse_util.flatten_dict(state.to_pure_dict())
    filled: dict[Path, np.ndarray] = {}
    unknown, bad_shapes, bad_paths = [], [], set()
    for key, array in weights.items():
        if ignore(key):
            continue
        pairs = convert(key, array)
        if pairs is None:
            unknown.append(key)
            continue
        for path, value in pairs:
            if path not in targets:
                unknown.append(key)
                break
            if tuple(value.shape) != tuple(targets[path].shape):
                bad_shapes.append(f"{key}: file {tuple(np.shape(array))} -> {tuple(value.shape)}, "
                                  f"model expects {tuple(targets[path].shape)}")
                bad_paths.add(path)
                continue
            filled[path] = value
    missing = sorted(".".join(map(str, p)) for p in targets
                     if p not in filled and p not in bad_paths)
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} keys the model does not use: {sorted(unknown)[:8]}")
    if bad_shapes:
        problems.append(f"{len(bad_shapes)} shape mismatches: {bad_shapes[:8]}")
    if missing:
        problems.append(f"{len(missing)} model variables no key fills: {missing[:8]}")
    if problems:
        raise ValueError(f"{what} weight file does not match the architecture: "
                         + "; ".join(problems))
    return graphdef, state, filled, targets


def load_into(factory: Callable[[], nnx.Module], weights: dict[str, np.ndarray],
              convert: Converter, *, ignore: Callable[[str], bool] = lambda k: False,
              what: str = "model") -> nnx.Module:
    """`factory()` with every variable filled from `weights` (see `match_weights`)."""
    graphdef, state, filled, targets = match_weights(factory, weights, convert, ignore=ignore,
                                                     what=what)
    values = {p: jnp.asarray(v, dtype=targets[p].dtype) for p, v in filled.items()}
    nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(values))
    return nnx.merge(graphdef, state)


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Writes an .npz atomically, so a reader never sees a half-written file."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    io_lib.atomic_write(path, buffer.getvalue())


def import_torch(kind: str):
    """PyTorch, which only converting a published checkpoint (`kind`: '.pt', '.pth') needs."""
    try:
        import torch
    except ImportError as e:
        raise SystemExit(f"converting a {kind} needs PyTorch (pip install torch) on the machine "
                         "that runs the conversion; imgsynth itself does not depend on it") from e
    return torch


def conversion_main(convert: Callable[[str, str], None], source: str, argv=None) -> None:
    """`python -m <module> --convert=CHECKPOINT --out=FILE.npz` of a pretrained model's port."""
    parser = argparse.ArgumentParser(description=f"Converts {source} to an .npz of its weights.")
    parser.add_argument("--convert", required=True, help=source)
    parser.add_argument("--out", required=True, help="output .npz")
    args = parser.parse_args(argv)
    convert(args.convert, args.out)
    print(f"wrote {args.out}", file=sys.stderr)


def state_npz_bytes(model: nnx.Module) -> bytes:
    """Every variable of a trained metric model as .npz bytes, keyed by 'a/b/0/kernel' paths."""
    flat = traverse_util.flatten_dict(nnx.state(model).to_pure_dict())
    buffer = io.BytesIO()
    np.savez(buffer, **{"/".join(map(str, k)): np.asarray(v) for k, v in flat.items()})
    return buffer.getvalue()


def restore_state(factory: Callable[[], nnx.Module], path: str, what: str) -> nnx.Module:
    """Inverse of `state_npz_bytes`, with the same strict coverage check as `load_into`."""
    weights = read_npz(path, what=what, how_to_get="")

    def convert(key, array):
        return [(tuple(int(p) if p.isdigit() else p for p in key.split("/")), array)]

    return load_into(factory, weights, convert, what=what)


def json_bytes(value) -> bytes:
    return (io_lib.json_text(value, indent=1) + "\n").encode()


def save_model(directory: str, model: nnx.Module, info_file: str, info: dict,
               extra: dict[str, bytes] | None = None) -> None:
    """A trained metric model's folder — weights.npz, `info_file` (what it was measured to be
    worth, plus its config) and `extra` files — renamed into place whole; process 0 writes."""
    if not io_lib.is_writer():
        return
    info = {**info, "config": dataclasses.asdict(model.cfg)}
    io_lib.write_dir(directory, {WEIGHTS_FILE: state_npz_bytes(model),
                                 info_file: json_bytes(info), **(extra or {})})


def load_model(directory: str, info_file: str, config_cls, net_cls, *, what: str):
    """Inverse of `save_model`: (`net_cls(config)` with the saved weights, info)."""
    info_path = os.path.join(directory, info_file)
    if not os.path.isfile(info_path):
        raise FileNotFoundError(f"no {what} at {directory} ({info_file} missing)")
    info = io_lib.read_json(info_path)
    config = config_cls(**{k: tuple(v) if isinstance(v, list) else v
                           for k, v in info["config"].items()})
    model = restore_state(lambda: net_cls(config, rngs=nnx.Rngs(0)),
                          os.path.join(directory, WEIGHTS_FILE), what)
    return model, info
