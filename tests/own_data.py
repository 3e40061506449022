"""A generated labelled image folder whose class is a shape, not a colour: the own-data fixture of
the tests and benchmarks. Blur, noise and shuffled patches keep an image's colours and destroy
its shape, so a destroyed image carries nothing of its class (its label is unreadable), as with
real photographs."""
import json
import os

import numpy as np
from PIL import Image, ImageDraw

from imgsynth.data import folder

SHAPES = ("square", "circle", "triangle", "diamond", "cross", "ring", "bar", "pillar", "frame",
          "wedge")


def _draw(draw: ImageDraw.ImageDraw, shape: str, x: int, y: int, s: int, fill) -> None:
    box = (x, y, x + s, y + s)
    t = max(s // 4, 3)
    if shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(x, y + s), (x + s, y + s), (x + s // 2, y)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(x + s // 2, y), (x + s, y + s // 2), (x + s // 2, y + s), (x, y + s // 2)],
                     fill=fill)
    elif shape == "cross":
        draw.rectangle((x + (s - t) // 2, y, x + (s + t) // 2, y + s), fill=fill)
        draw.rectangle((x, y + (s - t) // 2, x + s, y + (s + t) // 2), fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=t)
    elif shape == "bar":
        draw.rectangle((x, y + (s - t) // 2, x + s, y + (s + t) // 2), fill=fill)
    elif shape == "pillar":
        draw.rectangle((x + (s - t) // 2, y, x + (s + t) // 2, y + s), fill=fill)
    elif shape == "frame":
        draw.rectangle(box, outline=fill, width=t)
    else:   # wedge: the lower-left half of the box
        draw.polygon([(x, y), (x, y + s), (x + s, y + s)], fill=fill)


def make_shape_folder(root, n: int = 200, classes: int = 10, size: int = 40, seed: int = 0) -> str:
    """`n` `size`-px images of one shape (the label: `classes` of `SHAPES`, in turn) in a random
    bright colour on dark noise, captioned "a <colour-free> <shape>" and written with
    captions.jsonl as the README's own-data section asks."""
    if not 2 <= classes <= len(SHAPES):
        raise ValueError(f"classes must be in [2, {len(SHAPES)}], got {classes}")
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    lines = []
    for i in range(n):
        shape = SHAPES[i % classes]
        image = Image.fromarray(rng.integers(0, 60, (size, size, 3), dtype=np.uint8))
        s = int(rng.integers(size * 2 // 5, size * 3 // 5))
        x, y = (int(v) for v in rng.integers(1, size - s - 1, 2))
        colour = tuple(int(c) for c in rng.integers(120, 256, 3))
        _draw(ImageDraw.Draw(image), shape, x, y, s, colour)
        image.save(os.path.join(root, f"{i:04d}.png"))
        lines.append({"file": f"{i:04d}.png", "caption": f"a {shape}", "label": shape})
    with open(os.path.join(root, folder.CAPTIONS_FILE), "w") as f:
        f.write("\n".join(json.dumps(x) for x in lines))
    return str(root)
