"""Prompt-following accuracy: the share of generated images whose read-back scene satisfies the
prompt, overall and per GenEval category, and the fixed set of prompts it is measured on.

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
from imgsynth.metrics import _data


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
