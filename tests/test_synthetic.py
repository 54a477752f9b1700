"""Generated scenes: deterministic, masks exactly where things are drawn, texts that name what they mean."""
import dataclasses
import warnings
from collections import Counter

import numpy as np
import pytest

from unilseg.data.synthetic import (
    GRANULARITIES,
    OBJECT_COLORS,
    Target,
    generate_scene,
    instructions,
    make_sample,
    render,
    target_mask,
)
from unilseg.data.synthetic.scene import Part, SceneConfig
from unilseg.model.tokenizer import encode, tokenize

SCENES = range(40)


def _scene(i):
    scene = generate_scene(7, i)
    image, labels = render(scene)
    return scene, image, labels


def test_deterministic_in_seed_index_and_draw():
    a, b = make_sample(3, 11, draw=2), make_sample(3, 11, draw=2)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.text == b.text
    assert a.image.shape == (192, 192, 3) and a.image.dtype == np.uint8 and a.mask.dtype == bool
    assert not np.array_equal(make_sample(4, 11).image, a.image)
    assert not np.array_equal(make_sample(3, 12).image, a.image)
    texts = {make_sample(3, 11, draw=d).text for d in range(12)}
    assert len(texts) > 3  # each pass draws another instruction for the same scene
    assert make_sample(3, 11, config=SceneConfig(size=96)).image.shape == (96, 96, 3)


def test_masks_are_exactly_where_each_part_is_drawn():
    """Recolouring one part in the scene description changes exactly the pixels of its mask."""
    checked = 0
    for i in range(8):
        scene, image, labels = _scene(i)
        for k, obj in enumerate(scene.objects):
            for j, part in enumerate(obj.parts):
                recoloured = dataclasses.replace(scene, objects=list(scene.objects))
                new_part = Part(part.name, [dataclasses.replace(s, color=(255, 0, 255)) for s in part.shapes])
                parts = list(obj.parts)
                parts[j] = new_part
                recoloured.objects[k] = dataclasses.replace(obj, parts=parts)
                changed = (render(recoloured)[0] != image).any(axis=2)
                if part.name:
                    mask = target_mask(scene, labels, Target((k,), part.name))
                else:  # an object without parts (ball, sun) is its own single surface
                    mask = target_mask(scene, labels, Target((k,)))
                assert mask.any() and np.array_equal(changed, mask)
                checked += 1
    assert checked > 40


def test_parts_objects_groups_and_stuff_are_consistent():
    kinds_seen = Counter()
    for i in SCENES:
        scene, image, labels = _scene(i)
        objects = [target_mask(scene, labels, Target((k,))) for k in range(len(scene.objects))]
        for k, obj in enumerate(scene.objects):
            kinds_seen[obj.kind] += 1
            parts = [target_mask(scene, labels, Target((k,), p.name)) for p in obj.parts if p.name]
            for p in parts:
                assert not (p & ~objects[k]).any()  # every part lies inside its object
            if parts:
                assert np.array_equal(np.logical_or.reduce(parts), objects[k])  # and together they cover it
            x0, y0, x1, y1 = obj.box
            assert not objects[k][:y0].any() and not objects[k][y1:].any()
            assert not objects[k][:, :x0].any() and not objects[k][:, x1:].any()
        for a in range(len(objects)):
            for b in range(a):
                assert not (objects[a] & objects[b]).any()
        sky, ground, background = (target_mask(scene, labels, Target(stuff=s)) for s in ("sky", "ground", "background"))
        everything = np.logical_or.reduce([sky, ground, *objects])
        assert everything.all() and np.array_equal(background, sky | ground) and not (sky & ground).any()
        for alternatives in instructions(scene, labels)["group"]:
            inst = alternatives[0]
            members = inst.target.objects
            union = np.logical_or.reduce(
                [target_mask(scene, labels, Target((k,), inst.target.part)) for k in members]
            )
            assert np.array_equal(target_mask(scene, labels, inst.target), union)
            words = inst.text.split()
            if "thing" in words or "things" in words or "objects" in words:
                color = words[1] if words[0] == "every" else words[-2]
                assert {scene.objects[k].color for k in members} == {color}
                assert members == tuple(k for k, o in enumerate(scene.objects) if o.color == color)
    assert set(kinds_seen) == {"house", "tree", "car", "ball", "sun"}


def _dominant_color(image, mask):
    pixels = image[mask].astype(float)
    names = list(OBJECT_COLORS)
    ref = np.array([OBJECT_COLORS[n] for n in names], float)
    nearest = np.argmin(((pixels[:, None, :] - ref[None]) ** 2).sum(-1), axis=1)
    return names[np.bincount(nearest, minlength=len(names)).argmax()]


def test_object_texts_name_their_target():
    """Kind, colour and left/right words agree with what is in the picture."""
    checked = Counter()
    for i in SCENES:
        scene, image, labels = _scene(i)
        for alternatives in instructions(scene, labels)["object"] + instructions(scene, labels)["part"]:
            for inst in alternatives:
                (k,) = inst.target.objects
                obj = scene.objects[k]
                phrase = inst.text.split(" of ", 1)[1] if inst.granularity == "part" else inst.text
                words = phrase.split()
                assert obj.kind in words
                before = words[: words.index(obj.kind)]
                colors = [w for w in before if w in OBJECT_COLORS]
                if colors and obj.kind != "sun":
                    whole = target_mask(scene, labels, Target((k,)))
                    surface = whole & ~np.isin(labels, _non_body_labels(scene, k))
                    assert _dominant_color(image, surface) == colors[0] == obj.color
                    checked["color"] += 1
                tail = " ".join(words[words.index(obj.kind) + 1:])
                if tail in ("on the left", "on the right"):
                    rivals = [o for o in scene.objects if o.kind == obj.kind and (not colors or o.color == colors[0])]
                    xs = [o.center_x for o in rivals]
                    assert obj.center_x == (min(xs) if tail == "on the left" else max(xs))
                    checked["position"] += 1
                checked[inst.granularity] += 1
    assert checked["color"] > 20 and checked["position"] > 5 and checked["part"] > 20


def _non_body_labels(scene, k):
    """Labels of the parts that do not carry the object's colour (roof, door, windows, wheels, trunk)."""
    from unilseg.data.synthetic.scene import FIRST_SHAPE, label_table

    coloured = {"wall", "crown", "body", ""}
    return [lab for lab, (i, j) in enumerate(label_table(scene), start=FIRST_SHAPE)
            if i == k and scene.objects[i].parts[j].name not in coloured]


def test_every_granularity_and_texts_fit_the_tokenizer():
    counts = Counter()
    texts = set()
    for i in range(60):
        s = make_sample(0, i)
        counts[s.granularity] += 1
        texts.add(s.text)
        assert s.mask.any()
    assert set(counts) == set(GRANULARITIES) and min(counts.values()) >= 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tokenize warns when a text is cut
        tokenize(sorted(texts))
    assert max(len(encode(t)) for t in texts) <= 15


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_a_granularity_can_be_requested(granularity):
    s = make_sample(1, 5, granularity=granularity)
    assert s.granularity == granularity


def test_granularity_weights_steer_training_draws():
    weighted = Counter(make_sample(2, i, weights={"object": 1, "part": 1, "group": 0, "stuff": 0}).granularity
                       for i in range(60))
    assert set(weighted) <= {"object", "part"} and min(weighted.values()) >= 15


def test_bad_granularity_weights_are_refused():
    from unilseg.data.sources import train_dataset
    from unilseg.errors import UnilsegError
    from unilseg.model.spec import InferenceSpec

    with pytest.raises(UnilsegError, match="granularity_weights"):
        train_dataset("synthetic:4:0", InferenceSpec(size=64), granularity_weights={"objects": 1})
