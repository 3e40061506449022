"""Captions ↔ scenes: every generated caption holds for its scene, and mutations break it."""
import dataclasses

import numpy as np
import pytest

from imgsynth.data import render, scene as S
from imgsynth.data.scene import Scene, SceneObject


def _obj(shape, color, size="large", row=0, col=0):
    return SceneObject(shape, color, size, row, col)


def _examples(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    return [S.sample_example(rng) for _ in range(n)]


def test_every_generated_caption_holds_for_its_scene_in_every_category():
    seen = set()
    for scene, caption, category in _examples():
        assert S.satisfies(scene, caption), (caption, scene, S.failed_claims(scene, caption))
        assert 1 <= len(scene.objects) <= S.MAX_OBJECTS
        cells = [(o.row, o.col) for o in scene.objects]
        assert len(set(cells)) == len(cells), "objects must not share a cell"
        assert len(caption.split()) <= 14, caption  # fits text_max_len 16 with bos/eos
        seen.add(category)
    assert seen == set(S.SCENE_CATEGORIES)


def test_scene_record_round_trip():
    for scene, _, _ in _examples(200, seed=1):
        assert Scene.from_record(scene.to_record()) == scene
    assert Scene.from_record(Scene().to_record()) == Scene()


@pytest.mark.parametrize("caption,scene", [
    ("a red circle", Scene((_obj("circle", "red"),))),
    ("a photo of a small blue square", Scene((_obj("square", "blue", "small"),))),
    ("an image of a triangle that is green", Scene((_obj("triangle", "green"),))),
    ("there is a star and a purple cross", Scene((_obj("star", "red"),
                                                  _obj("cross", "purple", col=1)))),
    ("three green triangles", Scene(tuple(_obj("triangle", "green", col=c) for c in range(3)))),
    ("a yellow diamond to the left of a red circle",
     Scene((_obj("diamond", "yellow", col=0), _obj("circle", "red", row=2, col=1)))),
    ("there is a circle below an orange star",
     Scene((_obj("circle", "blue", row=2), _obj("star", "orange", row=1, col=2)))),
])
def test_hand_written_captions_hold(caption, scene):
    assert S.satisfies(scene, caption), S.failed_claims(scene, caption)


def _recolour(scene, i, color):
    objs = list(scene.objects)
    objs[i] = dataclasses.replace(objs[i], color=color)
    return Scene(tuple(objs))


def test_negatives_wrong_colour_count_relation_and_swapped_attributes():
    red_circle = _obj("circle", "red")
    assert not S.satisfies(Scene((_obj("circle", "blue"),)), "a red circle")
    assert not S.satisfies(Scene((_obj("square", "red"),)), "a red circle")
    assert not S.satisfies(Scene((_obj("circle", "red", "small"),)), "a large red circle")
    assert not S.satisfies(Scene(), "a red circle")

    three = Scene(tuple(_obj("triangle", "green", col=c) for c in range(3)))
    assert S.satisfies(three, "three green triangles")
    assert not S.satisfies(three, "two green triangles")  # numerals are exact
    assert not S.satisfies(three, "four green triangles")
    assert not S.satisfies(_recolour(three, 0, "blue"), "three green triangles")
    assert S.satisfies(three, "a green triangle")  # the article means at least one

    left = Scene((red_circle, _obj("square", "blue", col=2)))
    assert S.satisfies(left, "a red circle to the left of a blue square")
    assert not S.satisfies(left, "a red circle to the right of a blue square")
    assert not S.satisfies(left, "a red circle above a blue square")
    assert S.satisfies(left, "a blue square to the right of a red circle")

    attributed = Scene((red_circle, _obj("square", "blue", col=1)))
    assert S.satisfies(attributed, "a red circle and a blue square")
    swapped = Scene((_obj("circle", "blue"), _obj("square", "red", col=1)))
    failed = S.failed_claims(swapped, "a red circle and a blue square")
    assert failed == ["at least 1 red circle", "at least 1 blue square"]


def test_every_category_fails_when_its_scene_is_broken():
    """Empty scenes break every caption; one object fewer breaks a count; shifting every colour
    breaks captions that name colours; the mirrored relation breaks position captions."""
    colours = S.COLOR_NAMES
    flip = {"left": "right", "right": "left", "above": "below", "below": "above"}
    for scene, caption, category in _examples(600, seed=2):
        assert not S.satisfies(Scene(), caption), caption
        claims = S.parse_caption(caption)
        if category == "counting":
            (claim,) = claims
            first = next(o for o in scene.objects if claim.what.matches(o))
            fewer = Scene(tuple(o for o in scene.objects if o is not first))
            assert not S.satisfies(fewer, caption), (caption, fewer)
        descriptions = [d for c in claims
                        for d in ((c.subject, c.reference) if isinstance(c, S.RelationClaim)
                                  else (c.what,))]
        if any(d.color for d in descriptions):
            shifted = Scene(tuple(
                dataclasses.replace(o, color=colours[(colours.index(o.color) + 1) % len(colours)])
                for o in scene.objects))
            assert not S.satisfies(shifted, caption), (caption, shifted)
        if category == "position":
            (claim,) = claims
            mirrored = caption.replace(S.RELATIONS[claim.relation],
                                       S.RELATIONS[flip[claim.relation]])
            assert not S.satisfies(scene, mirrored), (caption, scene)


@pytest.mark.parametrize("bad", [
    "", "a", "red circle", "a red", "two red circle", "a circles", "a red circle or a square",
    "a red circle to the left of", "a circle next to a square", "five stars", "a pink circle",
])
def test_captions_outside_the_grammar_raise(bad):
    with pytest.raises(S.CaptionError):
        S.parse_caption(bad)


def test_render_is_deterministic_and_draws_the_objects():
    scene = Scene((_obj("square", "blue", "large", row=1, col=1),))
    a = render.render(scene, np.random.default_rng(5), 32)
    b = render.render(scene, np.random.default_rng(5), 32)
    assert a.dtype == np.uint8 and a.shape == (32, 32, 3)
    np.testing.assert_array_equal(a, b)
    centre = a[14:18, 14:18].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(centre, S.COLORS["blue"], atol=12)
    corner = a[:3, :3].reshape(-1, 3).mean(0)
    assert np.abs(corner - centre).max() > 80  # background stays clear of the object
