"""Prompt-following accuracy: the share of generated images whose read-back scene satisfies the
prompt, overall and per GenEval category, and the fixed set of prompts it is measured on; for
images that reconstruct known scenes (autoencoder round trips), which attribute the judge reads
wrongly (`attribute_accuracy`, `reconstruction_ceilings`); and for images that carry no scene,
how often the judge still credits the prompt (`false_positive_rates`).

A prompt is scored by `scene.satisfies` on the scene the judge reads from the image, so this
module is exact given the scenes; how far the judge itself is from exact is its ceiling
(judge.json), which must be reported next to every number computed here.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from imgsynth.data import scene as scene_lib
from imgsynth.data.scene import SCENE_CATEGORIES, Scene
from imgsynth.metrics import _data, frechet
from imgsynth.metrics.judge import encode_scenes, scene_accuracy


def _category_name(c) -> str:
    if isinstance(c, bytes):
        c = c.decode()
    if isinstance(c, (int, np.integer)):
        if not 0 <= int(c) < len(scene_lib.CATEGORIES):
            raise ValueError(f"category id {c} outside 0..{len(scene_lib.CATEGORIES) - 1}")
        c = scene_lib.CATEGORIES[int(c)]
    if c not in SCENE_CATEGORIES:
        raise ValueError(f"category {c!r} is not one of {SCENE_CATEGORIES}")
    return c


def prompt_following(scenes: Sequence[Scene], captions: Sequence[str],
                     categories: Sequence[str | int]) -> dict:
    """{'accuracy', 'per_category', 'num', 'num_per_category'} for scenes read from images.

    Categories are names or the dataset's ClassLabel ids; per-category entries appear for the
    categories present, in the dataset's order. A caption outside the grammar raises.
    """
    if not (len(scenes) == len(captions) == len(categories)):
        raise ValueError(f"{len(scenes)} scenes, {len(captions)} captions and {len(categories)} "
                         "categories: one of each per image")
    if not scenes:
        raise ValueError("no images to score")
    names = [_category_name(c) for c in categories]
    ok = np.array([scene_lib.satisfies(s, c.decode() if isinstance(c, bytes) else c)
                   for s, c in zip(scenes, captions)])
    per, counts = {}, {}
    for cat in SCENE_CATEGORIES:
        mask = np.array([n == cat for n in names])
        if mask.any():
            per[cat], counts[cat] = float(ok[mask].mean()), int(mask.sum())
    return {"accuracy": float(ok.mean()), "per_category": per, "num": len(ok),
            "num_per_category": counts}


def judge_prompt_following(judge, images, captions, categories) -> dict:
    """`prompt_following` on the scenes `judge` reads from `images`, with its ceiling attached."""
    result = prompt_following(judge.read_scenes(images), captions, categories)
    return {**result, "ceiling": judge.ceiling,
            "ceiling_per_category": judge.info.get("ceiling_per_category")}


@dataclasses.dataclass(frozen=True)
class EvalPrompts:
    """A fixed evaluation prompt set: caption, category and the test record it came from."""
    captions: tuple[str, ...]
    categories: tuple[str, ...]
    indices: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.captions)


def evaluation_prompts(data_dir: str, builder_config: str = "r32", num_prompts: int = 600,
                       seed: int = 0, split: str = "test") -> EvalPrompts:
    """`num_prompts` captions of `split`, balanced over the six categories, drawn with `seed`.

    The same arguments always give the same prompts in the same order (shuffled across
    categories, so any prefix stays close to balanced). When `num_prompts` is not a multiple of
    six, the first categories in the dataset's order get one prompt more.
    """
    if num_prompts < 1:
        raise ValueError(f"num_prompts={num_prompts} must be positive")
    records = _data.read_split(data_dir, builder_config, split, with_images=False)
    rng = np.random.default_rng(seed)
    k = len(SCENE_CATEGORIES)
    chosen = []
    for i, cat in enumerate(SCENE_CATEGORIES):
        want = num_prompts // k + (i < num_prompts % k)
        pool = [j for j, c in enumerate(records.categories) if c == cat]
        if len(pool) < want:
            raise ValueError(f"{split} split has {len(pool)} {cat!r} records; {want} requested")
        chosen += [int(j) for j in rng.choice(pool, size=want, replace=False)]
    chosen = [chosen[j] for j in rng.permutation(len(chosen))]
    return EvalPrompts(tuple(records.captions[j] for j in chosen),
                       tuple(records.categories[j] for j in chosen), tuple(chosen))


ATTRIBUTES = ("occupancy", "shape", "color", "size", "position", "count", "scene")


def attribute_accuracy(read: Sequence[Scene], truth: Sequence[Scene]) -> dict:
    """Per-attribute agreement of read-back scenes with the scenes the images were made from.

    Every scene has one slot per grid cell (`judge.encode_scenes`), so the attributes separate:
    - occupancy: share of cells (all of them) whose empty / occupied state is read right;
    - shape, color, size: share of cells occupied in both scenes whose attribute matches — a
      confusion, not a missed object;
    - position: share of images whose set of occupied cells is exact; count: whose object count is;
    - scene: share of images read back exactly (`judge.scene_accuracy`);
    - object_small / object_large: share of true objects of that size read back exactly (cell,
      shape, colour, size), so failures on small shapes show.
    Attributes with no cell to score (e.g. only empty scenes) are NaN.
    """
    if len(read) != len(truth):
        raise ValueError(f"{len(read)} read scenes for {len(truth)} true scenes")
    if not truth:
        raise ValueError("no scenes to compare")
    r, t = encode_scenes(list(read)), encode_scenes(list(truth))
    occ_r, occ_t = r["cls"] > 0, t["cls"] > 0
    both = occ_r & occ_t
    mean = lambda x, m: float(x[m].mean()) if m.any() else float("nan")  # noqa: E731
    exact = (r["cls"] == t["cls"]) & (r["color"] == t["color"]) & (r["size"] == t["size"])
    out = {"occupancy": float((occ_r == occ_t).mean()),
           "shape": mean(r["cls"] == t["cls"], both),
           "color": mean(r["color"] == t["color"], both),
           "size": mean(r["size"] == t["size"], both),
           "position": float((occ_r == occ_t).all(axis=1).mean()),
           "count": float((occ_r.sum(1) == occ_t.sum(1)).mean()),
           "scene": scene_accuracy(list(read), list(truth))}
    for k, name in enumerate(scene_lib.SIZES):
        out[f"object_{name}"] = mean(exact, occ_t & (t["size"] == k))
    out["num"] = len(truth)
    return out


def reconstruction_ceilings(judge, real: _data.Split, recon: np.ndarray) -> dict:
    """The judge on reconstructions `recon` (uint8) of the real images of `real`: prompt following,
    Fréchet distance of judge features to the real images, and per-attribute accuracy against the
    true scenes. Bounds every generator that works in that autoencoder's latent space."""
    if recon.shape != real.images.shape:
        raise ValueError(f"{recon.shape} reconstructions of {real.images.shape} real images")
    read = judge.read_scenes(recon)
    pf = prompt_following(read, real.captions, real.categories)
    return {"autoencoder_prompt_following": pf["accuracy"],
            "autoencoder_prompt_following_per_category": pf["per_category"],
            "autoencoder_fd_judge": frechet.fd(judge.features(recon), judge.features(real.images)),
            "autoencoder_attributes": attribute_accuracy(read, real.scenes)}


def false_positive_rates(judge, real: _data.Split, destroyed: dict[str, np.ndarray]) -> dict:
    """The judge on destroyed copies of the images of `real` (`corruptions`), each read against
    the caption of the image it was made from. No scene is left in them, so every satisfied
    prompt is a false positive; `false_positive` is the worst corruption's rate, the
    share a generator that draws such garbage would be credited with."""
    per, unreadable = {}, {}
    for name, images in destroyed.items():
        if images.shape[0] != len(real.captions):
            raise ValueError(f"{name}: {images.shape[0]} destroyed images for "
                             f"{len(real.captions)} captions")
        scenes, flags = judge.read(images)
        per[name] = prompt_following(scenes, real.captions, real.categories)["accuracy"]
        unreadable[name] = float(flags.mean())
    return {"false_positive": max(per.values()), "false_positive_per_corruption": per,
            "unreadable_per_corruption": unreadable}
