"""Instructions at every granularity for a generated scene, each naming exactly one target.

Object phrases follow how people disambiguate: the kind alone when it is unique, else a
colour, a size or position among the candidates left ("the small red car", "the tree
on the left"), or a relation to another unambiguous object ("the ball below the sun").
A phrase is kept only if exactly one object satisfies it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from unilseg.data.synthetic.scene import FIRST_SHAPE, GROUND, KIND_COLORS, SKY, Scene, SceneObject, label_table

GRANULARITIES = ("object", "part", "group", "stuff")
NO_TARGET = "no-target"  # the granularity of a sample whose instruction names nothing in its scene
PLURALS = {"house": "houses", "tree": "trees", "car": "cars", "ball": "balls", "sun": "suns"}
# Part groups worth naming ("all the wheels"): part name -> plural.
PART_GROUPS = {"roof": "roofs", "door": "doors", "windows": "windows", "trunk": "trunks", "wheels": "wheels"}
STUFF = {"sky": ("the sky",), "ground": ("the ground",), "background": ("the background",)}
# No-target instructions name these: kinds and stuff no scene ever holds, and the parts of each drawn kind.
FOREIGN_KINDS = {"boat": "boats", "dog": "dogs", "bird": "birds", "person": "people", "chair": "chairs",
                 "bicycle": "bicycles", "horse": "horses", "bench": "benches"}
FOREIGN_STUFF = ("the sea", "the snow", "the road", "the river", "the clouds")  # not "grass": the ground may look it
KIND_PARTS = {"house": ("roof", "wall", "door", "windows"), "tree": ("trunk", "crown"),
              "car": ("body", "windows", "wheels")}
MIN_PART_PIXELS = 80  # smaller parts are a few stride-4 logits wide: no instruction names them
MAX_WORDS = 12  # CLIP keeps 15 word pieces; every word here is one or two pieces

Box = tuple[int, int, int, int]
RELATIONS: dict[str, Callable[[Box, Box], bool]] = {
    "to the left of": lambda a, b: a[2] <= b[0],
    "to the right of": lambda a, b: a[0] >= b[2],
    "above": lambda a, b: a[3] <= b[1],
    "below": lambda a, b: a[1] >= b[3],
}


@dataclass(frozen=True)
class Target:
    """What an instruction names: objects (whole, or one named part of each), or stuff."""

    objects: tuple[int, ...] = ()
    part: str | None = None  # None: whole objects
    stuff: str | None = None  # "sky" | "ground" | "background"


@dataclass(frozen=True)
class Instruction:
    text: str
    granularity: str  # one of GRANULARITIES
    target: Target


def _extreme(values: list[float], i: int, ratio: float, largest: bool) -> bool:
    """values[i] beats every other value by the factor `ratio` (or is beaten by it, for smallest)."""
    others = [v for k, v in enumerate(values) if k != i]
    if not others:
        return False
    return values[i] >= ratio * max(others) if largest else values[i] * ratio <= min(others)


def _position_words(objs: list[SceneObject], i: int, gap: float) -> list[str]:
    """'on the left' / 'on the right' / 'in the middle' for objs[i] among objs, with a clear gap."""
    xs = sorted((o.center_x, k) for k, o in enumerate(objs))
    order = [k for _, k in xs]
    pos = order.index(i)
    gaps = [b[0] - a[0] for a, b in zip(xs, xs[1:])]
    out = []
    if pos == 0 and gaps[0] >= gap:
        out.append("on the left")
    if pos == len(xs) - 1 and gaps[-1] >= gap:
        out.append("on the right")
    if len(xs) == 3 and pos == 1 and min(gaps) >= gap:
        out.append("in the middle")
    return out


def reference_phrase(scene: Scene, r: int) -> str | None:
    """The shortest phrase naming object r alone by kind (and colour), or None."""
    ref = scene.objects[r]
    same = [o for o in scene.objects if o.kind == ref.kind]
    if len(same) == 1:
        return f"the {ref.kind}"
    if sum(o.color == ref.color for o in same) == 1:
        return f"the {ref.color} {ref.kind}"
    return None


def object_phrases(scene: Scene, i: int) -> list[str]:
    """Every noun phrase (with 'the') that names object i and no other object."""
    obj = scene.objects[i]
    kind_ids = [k for k, o in enumerate(scene.objects) if o.kind == obj.kind]
    refs = [(r, reference_phrase(scene, r)) for r in range(len(scene.objects)) if scene.objects[r].kind != obj.kind]
    phrases: list[str] = []
    for color in (None, obj.color):
        cand = [k for k in kind_ids if color is None or scene.objects[k].color == color]
        noun = f"{color} {obj.kind}" if color else obj.kind
        if cand == [i]:
            phrases.append(f"the {noun}")
            continue
        objs = [scene.objects[k] for k in cand]
        me = cand.index(i)
        areas = [float(o.area) for o in objs]
        if _extreme(areas, me, 1.4, largest=True):
            phrases.append(f"the big {noun}")
        if _extreme(areas, me, 1.4, largest=False):
            phrases.append(f"the small {noun}")
        phrases += [f"the {noun} {w}" for w in _position_words(objs, me, 0.08 * scene.size)]
        for r, ref in refs:
            if ref is None:
                continue
            for word, holds in RELATIONS.items():
                box = scene.objects[r].box
                if [k for k in cand if holds(scene.objects[k].box, box)] == [i]:
                    phrases.append(f"the {noun} {word} {ref}")
    return [p for p in phrases if len(p.split()) <= MAX_WORDS]


def part_pixels(scene: Scene, labels: np.ndarray) -> dict[tuple[int, int], int]:
    """Visible pixel count of each (object index, part index)."""
    counts = np.bincount(labels.ravel(), minlength=FIRST_SHAPE + len(label_table(scene)))
    out: dict[tuple[int, int], int] = {}
    for lab, key in enumerate(label_table(scene), start=FIRST_SHAPE):
        out[key] = out.get(key, 0) + int(counts[lab])
    return out


def instructions(scene: Scene, labels: np.ndarray) -> dict[str, list[list[Instruction]]]:
    """All instructions, by granularity, as lists of alternatives per target.

    Sampling a target first and then one of its phrasings keeps objects with many possible
    phrases from dominating.
    """
    pixels = part_pixels(scene, labels)
    out: dict[str, list[list[Instruction]]] = {g: [] for g in GRANULARITIES}
    for i, obj in enumerate(scene.objects):
        phrases = object_phrases(scene, i)
        if phrases:
            out["object"].append([Instruction(p, "object", Target((i,))) for p in phrases])
        for j, part in enumerate(obj.parts):
            if not part.name or pixels[(i, j)] < MIN_PART_PIXELS:
                continue
            alts = [f"the {part.name} of {p}" for p in phrases if len(p.split()) + 3 <= MAX_WORDS]
            if alts:
                out["part"].append([Instruction(t, "part", Target((i,), part.name)) for t in alts])
    kinds = sorted({o.kind for o in scene.objects})
    for kind in kinds:
        members = tuple(i for i, o in enumerate(scene.objects) if o.kind == kind)
        if kind != "sun":
            texts = (f"all {PLURALS[kind]}", f"all the {PLURALS[kind]}", f"every {kind}")
            out["group"].append([Instruction(t, "group", Target(members)) for t in texts])
    for color in sorted({o.color for o in scene.objects}):
        members = tuple(i for i, o in enumerate(scene.objects) if o.color == color)
        texts = (f"every {color} thing", f"all {color} things", f"all the {color} objects")
        out["group"].append([Instruction(t, "group", Target(members)) for t in texts])
    for part, plural in PART_GROUPS.items():
        members = tuple(
            i for i, o in enumerate(scene.objects)
            if any(p.name == part and pixels[(i, j)] >= MIN_PART_PIXELS for j, p in enumerate(o.parts))
        )
        if len(members) >= 2:
            out["group"].append([Instruction(f"all the {plural}", "group", Target(members, part))])
    for stuff, texts in STUFF.items():
        out["stuff"].append([Instruction(t, "stuff", Target(stuff=stuff)) for t in texts])
    return out


def absent_instructions(scene: Scene) -> dict[str, list[list[Instruction]]]:
    """No-target instructions, by granularity: each names something the scene does not hold, so its mask is
    empty (`Target()`). Kinds that are not there ("the sun" without a sun, "the boat", "all cars" without a
    car), colours no object of a kind has ("the purple car" among other cars: the hard case), parts of such
    objects ("the roof of the blue house"), colour groups no object has, and stuff never drawn ("the sea").
    As in `instructions`, each inner list holds the phrasings of one missing thing."""
    nothing = Target()
    out: dict[str, list[list[Instruction]]] = {g: [] for g in GRANULARITIES}

    def add(granularity: str, texts: list[str]) -> None:
        texts = [t for t in texts if len(t.split()) <= MAX_WORDS]
        if texts:
            out[granularity].append([Instruction(t, granularity, nothing) for t in texts])

    present = {(o.kind, o.color) for o in scene.objects}
    kinds = {o.kind for o in scene.objects}
    for kind, colors in KIND_COLORS.items():
        missing = [c for c in colors if (kind, c) not in present]
        if kind not in kinds:
            add("object", [f"the {kind}"])
            if kind != "sun":
                add("group", [f"all {PLURALS[kind]}", f"all the {PLURALS[kind]}", f"every {kind}"])
            for part in KIND_PARTS.get(kind, ()):
                add("part", [f"the {part} of the {kind}"])
        if kind == "sun":
            continue
        for color in missing:
            add("object", [f"the {color} {kind}"])
            if kind in kinds:  # a colour word is all that is wrong: the hardest no-target case
                for part in KIND_PARTS.get(kind, ()):
                    add("part", [f"the {part} of the {color} {kind}"])
    for kind, plural in FOREIGN_KINDS.items():
        add("object", [f"the {kind}", f"the small {kind}", f"the {kind} on the left"])
        add("group", [f"all {plural}", f"all the {plural}", f"every {kind}"])
    colors = {o.color for o in scene.objects}
    for color in sorted({c for cs in KIND_COLORS.values() for c in cs} - colors):
        add("group", [f"every {color} thing", f"all {color} things", f"all the {color} objects"])
    for text in FOREIGN_STUFF:
        add("stuff", [text])
    return out


def target_mask(scene: Scene, labels: np.ndarray, target: Target) -> np.ndarray:
    """Bool (S, S) mask of what `target` names, taken from the label map."""
    if target.stuff is not None:
        if target.stuff == "sky":
            return labels == SKY
        if target.stuff == "ground":
            return labels == GROUND
        return labels < FIRST_SHAPE
    wanted = set(target.objects)
    ids = [
        lab for lab, (i, j) in enumerate(label_table(scene), start=FIRST_SHAPE)
        if i in wanted and (target.part is None or scene.objects[i].parts[j].name == target.part)
    ]
    return np.isin(labels, ids)


def target_instances(scene: Scene, labels: np.ndarray, target: Target) -> list[np.ndarray]:
    """The instances of what `target` names, each a bool (S, S) mask; together they make `target_mask`.

    An instance is a connected (8-neighbour) piece of one object's mask, or of its named
    part, or of the stuff region, as a labeller would draw them: "all houses" is each
    house, "the wheels of the car" each wheel, a car's body (two shapes that touch) one,
    and a sky cut in two by a tall tree two. Whole objects are always one piece here.
    """
    regions = ([target_mask(scene, labels, target)] if target.stuff is not None
               else [target_mask(scene, labels, Target((i,), target.part)) for i in target.objects])
    out = []
    for mask in regions:
        count, pieces = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)
        out += [pieces == k for k in range(1, count)]
    return out

def sample_instruction(
    options: dict[str, list[list[Instruction]]], rng: np.random.Generator, granularity: str | None = None,
    weights: dict[str, float] | None = None,
) -> Instruction:
    """A granularity (uniformly, or by `weights`, among those present), then a target, then one of its phrasings."""
    if granularity is None:
        present = [g for g in GRANULARITIES if options.get(g)]
        if weights is None:
            granularity = present[int(rng.integers(len(present)))]
        else:
            w = np.array([float(weights.get(g, 0.0)) for g in present])
            if w.sum() <= 0:  # only zero-weight granularities in this scene
                w = np.ones(len(present))
            granularity = present[int(rng.choice(len(present), p=w / w.sum()))]
    targets = options[granularity]
    alts = targets[int(rng.integers(len(targets)))]
    return alts[int(rng.integers(len(alts)))]
