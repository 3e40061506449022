"""The judge: a small CNN that reads a shapes image back into its `Scene`.

The dataset puts at most one object in each cell of a GRID×GRID grid, so the judge has one slot
per cell and predicts, for each, empty, a shape or unreadable, colour and size. A judge that must
name a shape in every blob credits garbage with prompts nobody drew; so the cells' unreadable
probabilities combine (`log_readable`: cells independent, the image is readable when none is
unreadable) into an image verdict, learnt from real images destroyed beyond reading
(`corruptions.training_negatives`), and an image judged unreadable reads as no scene at all.
Count, positions and attributes then decode exactly (`decode`), and `scene.satisfies` turns a read-back scene into the
prompt-following verdict. Convolutional features are average-pooled over each cell's exact area
(cells need not align with pixels: 32 px / 3) and max-pooled over the feature pixels whose centre
lies in the cell; one small head shared by all cells reads each pooled vector, so every training
image teaches the head nine times.

The judge is trained once per dataset version by `python -m imgsynth.metrics.train_judge` and
cached at `<data_dir>/judges/<builder_config>-<version>-<fingerprint>-v<FORMAT>/` (`weights.npz`,
`judge.json` with the measured ceiling and false-positive rates); the one trained on r32 with the
default settings ships in `shipped/` and serves every 32 px shapes dataset (`shipped_judge`).
`features` (the per-cell hidden vectors, concatenated) feed `frechet.fd`.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from imgsynth import io, weights as weights_lib
from imgsynth.data import shapes
from imgsynth.data.images import to_float
from imgsynth.data.scene import COLOR_NAMES, GRID, SHAPES, SIZES, Scene, SceneObject
from imgsynth.metrics import _data
from imgsynth.models.layers import space_to_depth

CELLS = GRID * GRID
UNREADABLE = 1 + len(SHAPES)  # cell classes: 0 empty, 1 + shape id, then unreadable
NUM_CLASSES = UNREADABLE + 1
INFO_FILE = "judge.json"
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shipped",
                           "judge-shapes-32px")
# What a cached judge means; part of its cache key, so a judge trained to other rules is never
# loaded in its place. 2: the unreadable class.
FORMAT = 2


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    resolution: int = 32
    widths: tuple[int, ...] = (48, 96)  # one stage each; every stage after the first halves H, W
    hidden: int = 64  # per-cell hidden width; features have CELLS * hidden dimensions
    stem: int = 2  # space-to-depth factor before the first conv: full-res convs cost the most

    @property
    def feature_dim(self) -> int:
        return CELLS * self.hidden


def _cell_pool_matrix(size: int, stride: float, resolution: int) -> np.ndarray:
    """[GRID, size]: the fraction of grid cell r covered by feature pixel y, over the cell's area."""
    cell = resolution / GRID
    lo, hi = np.arange(size) * stride, (np.arange(size) + 1) * stride
    m = np.zeros((GRID, size), np.float32)
    for r in range(GRID):
        m[r] = np.clip(np.minimum(hi, (r + 1) * cell) - np.maximum(lo, r * cell), 0, None) / cell
    return m


class JudgeNet(nnx.Module):
    """Conv stages → per-cell area pooling → shared per-cell MLP → class/colour/size logits."""

    def __init__(self, cfg: JudgeConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        if cfg.resolution % cfg.stem:
            raise ValueError(f"stem {cfg.stem} does not divide resolution {cfg.resolution}")
        convs, cin = [], 3 * cfg.stem * cfg.stem
        for i, w in enumerate(cfg.widths):
            convs.append(nnx.Conv(cin, w, (3, 3), strides=1 if i == 0 else 2, rngs=rngs))
            convs.append(nnx.Conv(w, w, (3, 3), rngs=rngs))
            cin = w
        self.convs = nnx.List(convs)
        self.cell_hidden = nnx.Linear(2 * cin, cfg.hidden, rngs=rngs)
        self.cell_out = nnx.Linear(cfg.hidden, NUM_CLASSES + len(COLOR_NAMES) + len(SIZES), rngs=rngs)

    def __call__(self, images_BHWC):
        """uint8 or [0, 255] float images → (logits [B, CELLS, 16], features [B, CELLS * hidden])."""
        x = space_to_depth(to_float(images_BHWC), self.cfg.stem)
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        b, size = x.shape[0], x.shape[1]
        p = _cell_pool_matrix(size, self.cfg.resolution / size, self.cfg.resolution)
        mean_BRCD = jnp.einsum("ry,cx,byxd->brcd", p, p, x)
        # Max over the feature pixels whose centre lies in the cell: detection of a small object
        # survives a max where an average over the whole cell dilutes it.
        owner = np.minimum(((np.arange(size) + 0.5) * GRID / size).astype(int), GRID - 1)
        spans = [(int(np.argmax(owner == r)), int(size - np.argmax(owner[::-1] == r)))
                 for r in range(GRID)]
        max_BND = jnp.stack([x[:, y0:y1, x0:x1].max(axis=(1, 2))
                             for y0, y1 in spans for x0, x1 in spans], axis=1)
        cells = jnp.concatenate([mean_BRCD.reshape(b, CELLS, -1), max_BND], axis=-1)
        h_BND = jax.nn.relu(self.cell_hidden(cells))
        return self.cell_out(h_BND), h_BND.reshape(b, -1)


def split_logits(logits_BNK):
    """→ (cell class [.., NUM_CLASSES], colour [.., 6], size [.., 2]) logits."""
    a, b = NUM_CLASSES, NUM_CLASSES + len(COLOR_NAMES)
    return logits_BNK[..., :a], logits_BNK[..., a:b], logits_BNK[..., b:]


def encode_scenes(scenes: list[Scene]) -> dict[str, np.ndarray]:
    """Per-cell targets [N, CELLS]: class (0 empty, 1 + shape id), colour and size (-1 if empty)."""
    cls = np.zeros((len(scenes), CELLS), np.int32)
    color = np.full((len(scenes), CELLS), -1, np.int32)
    size = np.full((len(scenes), CELLS), -1, np.int32)
    for i, scene in enumerate(scenes):
        for o in scene.objects:
            c = o.row * GRID + o.col
            if cls[i, c]:
                raise ValueError(f"two objects share cell ({o.row}, {o.col}) in {scene}")
            cls[i, c] = 1 + SHAPES.index(o.shape)
            color[i, c] = COLOR_NAMES.index(o.color)
            size[i, c] = SIZES.index(o.size)
    return {"cls": cls, "color": color, "size": size}


def decode(cls: np.ndarray, color: np.ndarray, size: np.ndarray) -> list[Scene]:
    """Inverse of `encode_scenes` on per-cell ids [N, CELLS]; an empty class means no object."""
    scenes = []
    for row_cls, row_color, row_size in zip(np.asarray(cls), np.asarray(color), np.asarray(size)):
        scenes.append(Scene(tuple(
            SceneObject(SHAPES[k - 1], COLOR_NAMES[row_color[c]], SIZES[row_size[c]],
                        *divmod(c, GRID))
            for c, k in enumerate(row_cls) if k > 0)))
    return scenes


def log_readable(cls_logits_BNK):
    """[B] log P(no cell is unreadable) = Σ_cells log(1 − p_cell(unreadable)).

    Destroyed images are labelled only as a whole: in a blurred or shuffled image some cells
    look exactly like a real empty cell, so the verdict needs one unreadable cell, not nine."""
    return (jax.nn.logsumexp(cls_logits_BNK[..., :UNREADABLE], -1)
            - jax.nn.logsumexp(cls_logits_BNK, -1)).sum(-1)


@nnx.jit
def _forward(model: JudgeNet, images):
    logits, feats = model(images)
    cls, color, size = split_logits(logits)
    return (jnp.argmax(cls[..., :UNREADABLE], -1), jnp.argmax(color, -1), jnp.argmax(size, -1),
            feats, log_readable(cls) < jnp.log(0.5))


class Judge:
    """A trained judge and what it was measured to be worth (`info`: ceiling, per category, ...)."""

    def __init__(self, model: JudgeNet, info: dict | None = None, batch_size: int = 256):
        self.model, self.info, self.batch_size = model, dict(info or {}), batch_size

    @property
    def config(self) -> JudgeConfig:
        return self.model.cfg

    @property
    def ceiling(self) -> float | None:
        """Prompt-following accuracy on real held-out images: the best a generator can score."""
        return self.info.get("ceiling")

    def _run(self, images):
        images = np.asarray(images)
        r = self.config.resolution
        if images.ndim != 4 or images.shape[1:] != (r, r, 3):
            raise ValueError(f"the judge reads [N, {r}, {r}, 3] images, got shape {images.shape}")
        if images.dtype != np.uint8:
            raise ValueError(f"the judge reads uint8 images in [0, 255], got {images.dtype}; "
                             "convert generated images with "
                             "np.clip(np.rint(x), 0, 255).astype(np.uint8)")
        outs = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            pad = self.batch_size - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, r, r, 3), np.uint8)])
            out = _forward(self.model, jnp.asarray(chunk))
            outs.append([np.asarray(o)[: self.batch_size - pad] for o in out])
        return [np.concatenate(parts) for parts in zip(*outs)]

    def read(self, images) -> tuple[list[Scene], np.ndarray]:
        """uint8 [N, H, W, 3] images → (the scene the judge sees in each, [N] bool: unreadable).

        An image more likely than not to hold an unreadable cell reads as the empty scene, which
        satisfies no prompt: a garbled cell could hide or fake the object a count or a relation
        depends on. Readable images read as the most likely readable class of each cell."""
        cls, color, size, _, unreadable = self._run(images)
        return decode(np.where(unreadable[:, None], 0, cls), color, size), unreadable

    def read_scenes(self, images) -> list[Scene]:
        """uint8 [N, H, W, 3] images → the scene the judge sees in each (`read`)."""
        return self.read(images)[0]

    def features(self, images) -> np.ndarray:
        """[N, CELLS * hidden] penultimate activations (float64): evaluation's `fd_judge` is
        `frechet.fd` between these of generated and real images."""
        return self._run(images)[3].astype(np.float64)

    def save(self, directory: str) -> None:
        """weights.npz + judge.json (with the `FORMAT` it was trained to), written to a temporary
        directory and renamed into place."""
        weights_lib.save_model(directory, self.model, INFO_FILE, {**self.info, "format": FORMAT})


def judge_dir(data_dir: str, builder_config: str = "r32") -> str:
    return _data.cache_dir(data_dir, "judges", builder_config, revision=f"v{FORMAT}")


def shipped_judge(builder_config: str) -> str | None:
    """The judge that ships with the package for the embedded shapes data at this resolution, if
    any. Every builder config of one resolution draws its scenes from the same generator and
    differs only in split sizes, so the judge trained once on all of r32 (the default settings,
    16 CPU-minutes) reads r32_small and r32_tiny as well: a quickstart need not train one."""
    info = io.read_json(os.path.join(SHIPPED_DIR, INFO_FILE), {})
    fits = (info.get("format") == FORMAT and info.get("version") == shapes.VERSION
            and info.get("config", {}).get("resolution") == _data.resolution_of(builder_config))
    return SHIPPED_DIR if fits else None


def install_shipped(directory: str) -> None:
    """Copies the shipped judge into a dataset's cache `directory`, its judge.json saying where
    it came from."""
    info = io.read_json(os.path.join(SHIPPED_DIR, INFO_FILE), {})
    io.install_shipped(SHIPPED_DIR, directory, INFO_FILE, {
        **info, "shipped": f"trained on {info['builder_config']}, shipped with the package"})


def load_judge_from(directory: str) -> Judge:
    info = io.read_json(os.path.join(directory, INFO_FILE), {})
    if info and info.get("format") != FORMAT:
        raise ValueError(f"the judge at {directory} was trained to format {info.get('format', 1)}, "
                         f"this version reads format {FORMAT} (with an unreadable class); retrain "
                         "it with `python -m imgsynth.metrics.train_judge --force`")
    return Judge(*weights_lib.load_model(directory, INFO_FILE, JudgeConfig, JudgeNet, what="judge"))


def load_judge(data_dir: str, builder_config: str = "r32") -> Judge:
    """The cached judge of a shapes dataset; says how to make it when there is none."""
    return load_judge_from(_data.trained_dir(data_dir, "judges", builder_config,
                                             info_file=INFO_FILE, what="judge",
                                             revision=f"v{FORMAT}"))


def scene_accuracy(scenes: list[Scene], truth: list[Scene]) -> float:
    """Share of images whose whole scene is read back exactly (stricter than prompt following)."""
    key = lambda s: sorted(dataclasses.astuple(o) for o in s.objects)  # noqa: E731
    return float(np.mean([key(a) == key(b) for a, b in zip(scenes, truth)]))

