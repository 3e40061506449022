"""Scenes of coloured shapes, the captions that describe them, and the check that a scene obeys one.

A `Scene` is what the shapes dataset stores next to each image and what the judge network reads
back from a generated image; `satisfies(scene, caption)` is therefore the exact prompt-following
test. Captions come from one small grammar, so the parser here accepts every generated caption
and rejects anything else with a `CaptionError` (never a silent guess).

Semantics of a caption (GenEval-style, open world: objects the caption does not mention are
allowed):
  * "a/an X"                  — at least one object matching X;
  * "one/two/three/four Xs"   — exactly that many objects matching X;
  * "a X to the left of a Y"  — some X lies in a grid column left of some Y (right: column to the
    right; above/below: grid row above/below). Rows count from the top.
An object matches X when its shape is X's shape and its colour / size equal X's where X names one.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
PLURALS = {s: ("crosses" if s == "cross" else s + "s") for s in SHAPES}
COLORS: Mapping[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 160, 55),
    "blue": (35, 75, 215),
    "yellow": (240, 210, 25),
    "purple": (135, 50, 175),
    "orange": (245, 130, 15),
}
COLOR_NAMES = tuple(COLORS)
SIZES = ("small", "large")
GRID = 3  # the image is a GRID x GRID grid of cells; one object per cell at most
MAX_OBJECTS = 4
CATEGORIES = ("single_object", "two_objects", "counting", "colors", "position",
              "color_attribution", "none")  # 'none': real data without a scene
SCENE_CATEGORIES = CATEGORIES[:-1]
RELATIONS = {"left": "to the left of", "right": "to the right of", "above": "above",
             "below": "below"}
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4}
_NUMBER_WORDS = {n: w for w, n in NUMBERS.items()}
_PREFIXES = ("a photo of", "an image of", "a picture of", "there is", "there are")


class CaptionError(ValueError):
    """A caption outside the dataset's grammar."""


@dataclasses.dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: str
    row: int  # 0 = top
    col: int  # 0 = left

    def __post_init__(self):
        if self.shape not in SHAPES or self.color not in COLORS or self.size not in SIZES:
            raise ValueError(f"unknown attribute in {self}")
        if not (0 <= self.row < GRID and 0 <= self.col < GRID):
            raise ValueError(f"{self} lies outside the {GRID}x{GRID} grid")


@dataclasses.dataclass(frozen=True)
class Scene:
    """The objects of one image; the layout the dataset stores and the judge predicts."""
    objects: tuple[SceneObject, ...] = ()

    def to_record(self) -> dict[str, np.ndarray]:
        """Class ids per object, the layout of the TFDS `objects` feature."""
        obj = self.objects
        return {
            "shape": np.array([SHAPES.index(o.shape) for o in obj], np.int64),
            "color": np.array([COLOR_NAMES.index(o.color) for o in obj], np.int64),
            "size": np.array([SIZES.index(o.size) for o in obj], np.int64),
            "row": np.array([o.row for o in obj], np.int32),
            "col": np.array([o.col for o in obj], np.int32),
        }

    @classmethod
    def from_record(cls, objects: Mapping[str, Any]) -> Scene:
        """Inverse of `to_record`; accepts the decoded `objects` dict of a dataset record."""
        shape, color, size, row, col = (np.asarray(objects[k]).reshape(-1)
                                        for k in ("shape", "color", "size", "row", "col"))
        return cls(tuple(
            SceneObject(SHAPES[int(s)], COLOR_NAMES[int(c)], SIZES[int(z)], int(r), int(k))
            for s, c, z, r, k in zip(shape, color, size, row, col)))


# ---------------------------------------------------------------------------------------------
# Claims: what a caption asserts.

@dataclasses.dataclass(frozen=True)
class Description:
    """A noun phrase: a shape, optionally narrowed by colour and size."""
    shape: str
    color: str | None = None
    size: str | None = None

    def matches(self, o: SceneObject) -> bool:
        return (o.shape == self.shape and self.color in (None, o.color)
                and self.size in (None, o.size))

    def words(self, plural: bool = False) -> str:
        noun = PLURALS[self.shape] if plural else self.shape
        return " ".join(w for w in (self.size, self.color, noun) if w)


@dataclasses.dataclass(frozen=True)
class CountClaim:
    what: Description
    count: int
    exact: bool  # numerals are exact; the article "a" means at least one

    def holds(self, scene: Scene) -> bool:
        n = sum(self.what.matches(o) for o in scene.objects)
        return n == self.count if self.exact else n >= self.count

    def __str__(self):
        return f"{'exactly' if self.exact else 'at least'} {self.count} {self.what.words()}"


@dataclasses.dataclass(frozen=True)
class RelationClaim:
    subject: Description
    relation: str  # a key of RELATIONS
    reference: Description

    def holds(self, scene: Scene) -> bool:
        return any(a is not b and self.subject.matches(a) and self.reference.matches(b)
                   and _related(a, self.relation, b)
                   for a in scene.objects for b in scene.objects)

    def __str__(self):
        return f"{self.subject.words()} {RELATIONS[self.relation]} {self.reference.words()}"


def _related(a: SceneObject, relation: str, b: SceneObject) -> bool:
    return {"left": a.col < b.col, "right": a.col > b.col,
            "above": a.row < b.row, "below": a.row > b.row}[relation]


Claim = CountClaim | RelationClaim


# ---------------------------------------------------------------------------------------------
# Parsing.

def parse_caption(caption: str) -> list[Claim]:
    """Caption → claims; raises CaptionError for text outside the grammar."""
    words = caption.lower().strip().rstrip(".").replace(",", " ").split()
    text = " ".join(words)
    for prefix in _PREFIXES:
        if text.startswith(prefix + " "):
            words = words[len(prefix.split()):]
            break
    pos, first = _parse_phrase(words, 0, caption)
    if pos == len(words):
        return [first]
    for key, phrase in RELATIONS.items():
        rel = phrase.split()
        if words[pos:pos + len(rel)] == rel:
            end, second = _parse_phrase(words, pos + len(rel), caption)
            if end != len(words):
                raise CaptionError(f"unexpected words after the relation in {caption!r}")
            if first.exact or second.exact or first.count != 1 or second.count != 1:
                raise CaptionError(f"relations take 'a X ... a Y' in {caption!r}")
            return [RelationClaim(first.what, key, second.what)]
    claims = [first]
    while pos < len(words):
        if words[pos] != "and":
            raise CaptionError(f"expected 'and' or a relation at {words[pos]!r} in {caption!r}")
        pos, claim = _parse_phrase(words, pos + 1, caption)
        claims.append(claim)
    return claims


def _parse_phrase(words: Sequence[str], pos: int, caption: str) -> tuple[int, CountClaim]:
    def word(i):
        return words[i] if i < len(words) else None

    det = word(pos)
    if det in ("a", "an"):
        count, exact = 1, False
    elif det in NUMBERS:
        count, exact = NUMBERS[det], True
    else:
        raise CaptionError(f"expected 'a', 'an' or a number word, got {det!r} in {caption!r}")
    pos += 1
    size = color = None
    if word(pos) in SIZES:
        size, pos = word(pos), pos + 1
    if word(pos) in COLORS:
        color, pos = word(pos), pos + 1
    noun = word(pos)
    plural = count > 1
    names = {PLURALS[s] if plural else s: s for s in SHAPES}
    if noun not in names:
        raise CaptionError(f"expected a {'plural' if plural else 'singular'} shape noun, "
                           f"got {noun!r} in {caption!r}")
    pos += 1
    if color is None and word(pos) == "that" and word(pos + 1) in ("is", "are") \
            and word(pos + 2) in COLORS:
        color, pos = word(pos + 2), pos + 3
    return pos, CountClaim(Description(names[noun], color, size), count, exact)


def failed_claims(scene: Scene, caption: str) -> list[str]:
    """The claims of `caption` that `scene` breaks, in words (empty when it satisfies them all)."""
    return [str(c) for c in parse_caption(caption) if not c.holds(scene)]


def satisfies(scene: Scene, caption: str) -> bool:
    return not failed_claims(scene, caption)


# ---------------------------------------------------------------------------------------------
# Sampling a scene and its caption.

def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def _np(d: Description) -> str:
    w = d.words()
    return f"{_article(w)} {w}"


def _random_description(rng: np.random.Generator, shape: str, p_color: float,
                        p_size: float) -> Description:
    color = COLOR_NAMES[rng.integers(len(COLOR_NAMES))] if rng.random() < p_color else None
    size = SIZES[rng.integers(len(SIZES))] if rng.random() < p_size else None
    return Description(shape, color, size)


def _realise(rng: np.random.Generator, d: Description, row: int, col: int) -> SceneObject:
    """An object matching `d`, with whatever `d` leaves open drawn at random."""
    return SceneObject(
        d.shape,
        d.color or COLOR_NAMES[rng.integers(len(COLOR_NAMES))],
        d.size or SIZES[rng.integers(len(SIZES))],
        row, col)


def _cells(rng: np.random.Generator, k: int) -> list[tuple[int, int]]:
    return [divmod(int(c), GRID) for c in rng.choice(GRID * GRID, size=k, replace=False)]


def _cell_pairs(relation: str) -> list[tuple[int, int]]:
    """Ordered pairs of distinct cells (as flat indices) whose objects stand in `relation`."""
    cell = [SceneObject("circle", "red", "small", *divmod(i, GRID)) for i in range(GRID * GRID)]
    return [(a, b) for a in range(GRID * GRID) for b in range(GRID * GRID)
            if a != b and _related(cell[a], relation, cell[b])]


_CELL_PAIRS = {relation: _cell_pairs(relation) for relation in RELATIONS}


def _with_prefix(rng: np.random.Generator, body: str, plural: bool = False) -> str:
    options = ["", "a photo of ", "an image of "] + (["there are "] if plural else ["there is "])
    return options[rng.integers(len(options))] + body


def sample_example(rng: np.random.Generator) -> tuple[Scene, str, str]:
    """A random (scene, caption, category); the scene satisfies the caption by construction."""
    category = SCENE_CATEGORIES[rng.integers(len(SCENE_CATEGORIES))]
    shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))]

    if category in ("single_object", "colors"):
        if category == "colors":
            d = Description(shapes[0], COLOR_NAMES[rng.integers(len(COLOR_NAMES))],
                            SIZES[rng.integers(2)] if rng.random() < 0.3 else None)
        else:
            d = _random_description(rng, shapes[0], 0.5, 0.5)
        (cell,) = _cells(rng, 1)
        objects = [_realise(rng, d, *cell)]
        if category == "colors" and d.size is None and rng.random() < 0.5:
            body = f"{_article(d.shape)} {d.shape} that is {d.color}"
        else:
            body = _np(d)
        caption = _with_prefix(rng, body)

    elif category in ("two_objects", "color_attribution"):
        if category == "color_attribution":
            c1, c2 = (COLOR_NAMES[i] for i in rng.choice(len(COLOR_NAMES), 2, replace=False))
            descs = [Description(shapes[0], c1), Description(shapes[1], c2)]
        else:
            descs = [_random_description(rng, s, 0.4, 0.3) for s in shapes[:2]]
        objects = [_realise(rng, d, *cell) for d, cell in zip(descs, _cells(rng, 2))]
        caption = _with_prefix(rng, f"{_np(descs[0])} and {_np(descs[1])}")

    elif category == "counting":
        n = int(rng.integers(2, MAX_OBJECTS + 1))
        d = _random_description(rng, shapes[0], 0.7, 0.3)
        extra = int(rng.integers(0, MAX_OBJECTS - n + 1)) if rng.random() < 0.5 else 0
        cells = _cells(rng, n + extra)
        objects = [_realise(rng, d, *c) for c in cells[:n]]
        objects += [_realise(rng, Description(shapes[1 + rng.integers(len(SHAPES) - 1)]), *c)
                    for c in cells[n:]]
        caption = _with_prefix(rng, f"{_NUMBER_WORDS[n]} {d.words(plural=True)}", plural=True)

    else:  # position
        relation = tuple(RELATIONS)[rng.integers(len(RELATIONS))]
        descs = [_random_description(rng, s, 0.6, 0.3) for s in shapes[:2]]
        pairs = _CELL_PAIRS[relation]
        a, b = pairs[rng.integers(len(pairs))]
        objects = [_realise(rng, descs[0], *divmod(a, GRID)),
                   _realise(rng, descs[1], *divmod(b, GRID))]
        body = f"{_np(descs[0])} {RELATIONS[relation]} {_np(descs[1])}"
        # The longest captions: a short prefix keeps every caption within 14 words, so with
        # bos and eos it fits the default text_max_len of 16.
        caption = ("there is " if rng.random() < 0.3 else "") + body

    order = rng.permutation(len(objects))  # stored order carries no hint of the caption order
    return Scene(tuple(objects[i] for i in order)), caption, category
