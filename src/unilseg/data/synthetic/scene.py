"""Procedural scenes: a sky, the ground and objects of named kinds built from named parts.

A `Scene` is a plain description (every random choice already made); `render` turns it
into an RGB image and a label map by drawing each shape once, without anti-aliasing,
into the label map and colouring the image from it. Every pixel therefore belongs to
exactly one shape, and masks taken from the label map are exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

RGB = tuple[int, int, int]

# Named colours an object can have (RGB). Saturated and far apart, so the colour words are learnable.
OBJECT_COLORS: dict[str, RGB] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 215),
    "yellow": (240, 205, 40),
    "orange": (240, 135, 30),
    "purple": (135, 60, 185),
    "pink": (240, 130, 185),
    "white": (240, 240, 240),
}
KIND_COLORS: dict[str, tuple[str, ...]] = {
    "house": tuple(OBJECT_COLORS),
    "tree": ("green", "orange", "yellow", "red", "pink"),
    "car": tuple(OBJECT_COLORS),
    "ball": tuple(OBJECT_COLORS),
    "sun": ("yellow",),
}
GROUND_KINDS = ("house", "tree", "car", "ball")
# (height range as a fraction of the image side, width / height range)
KIND_SHAPES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "house": ((0.22, 0.40), (0.8, 1.2)),
    "tree": ((0.24, 0.44), (0.5, 0.75)),
    "car": ((0.12, 0.19), (1.7, 2.1)),
    "ball": ((0.07, 0.14), (1.0, 1.0)),
}
# Muted palettes, far from the object colours, so stuff never looks like a thing.
SKY_COLORS: tuple[tuple[RGB, RGB], ...] = (
    ((85, 145, 215), (175, 205, 235)),
    ((110, 160, 210), (200, 220, 235)),
    ((70, 120, 190), (160, 190, 225)),
)
GROUND_COLORS: tuple[RGB, ...] = ((150, 130, 90), (112, 122, 82), (128, 128, 122), (165, 150, 118), (120, 100, 78))
ROOF_COLORS: tuple[RGB, ...] = ((110, 45, 35), (80, 80, 92), (100, 72, 50))
DOOR_COLOR: RGB = (92, 58, 34)
GLASS_COLOR: RGB = (178, 215, 245)
TRUNK_COLOR: RGB = (105, 70, 40)
TYRE_COLOR: RGB = (32, 32, 34)
SUN_COLOR: RGB = (250, 215, 50)
SKY, GROUND = 0, 1  # label ids; shapes are numbered from FIRST_SHAPE in drawing order
FIRST_SHAPE = 2


@dataclass(frozen=True)
class Shape:
    """A filled polygon ((x, y), ...) or ellipse (cx, cy, rx, ry), in pixels, of one colour."""

    geometry: str  # "poly" | "ellipse"
    points: tuple
    color: RGB


@dataclass
class Part:
    """A named part of an object ("roof", "wheels"); "" for an object that has no parts."""

    name: str
    shapes: list[Shape]


@dataclass
class SceneObject:
    kind: str
    color: str  # colour word (a key of OBJECT_COLORS)
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive); every shape lies inside
    parts: list[Part]

    @property
    def area(self) -> int:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])

    @property
    def center_x(self) -> float:
        return (self.box[0] + self.box[2]) / 2


@dataclass
class Scene:
    size: int
    horizon: int  # first ground row
    sky: tuple[RGB, RGB]  # top and horizon colours
    ground: RGB
    texture_seed: int
    objects: list[SceneObject] = field(default_factory=list)


@dataclass(frozen=True)
class SceneConfig:
    """Knobs of the layout sampler."""

    size: int = 192
    min_objects: int = 2
    max_objects: int = 6
    sun_probability: float = 0.35
    same_color_probability: float = 0.35  # a same-kind distractor copies another's colour
    margin: int = 3  # minimum gap in pixels between object boxes


def _jitter(rng: np.random.Generator, color: RGB, amount: int = 12) -> RGB:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in color)


def _rect(x0: float, y0: float, x1: float, y1: float, color: RGB) -> Shape:
    pts = ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
    return Shape("poly", tuple((round(x), round(y)) for x, y in pts), color)


def _poly(points, color: RGB) -> Shape:
    return Shape("poly", tuple((round(x), round(y)) for x, y in points), color)


def _ellipse_in(x_lo: float, y_lo: float, x_hi: float, y_hi: float, color: RGB) -> Shape:
    """The largest pixel ellipse inside the inclusive bounds [x_lo, x_hi] x [y_lo, y_hi]."""
    x_lo, y_lo, x_hi, y_hi = math.ceil(x_lo), math.ceil(y_lo), math.floor(x_hi), math.floor(y_hi)
    rx, ry = max(1, (x_hi - x_lo) // 2), max(1, (y_hi - y_lo) // 2)
    return Shape("ellipse", (x_lo + rx, y_lo + ry, rx, ry), color)


def _house(rng, box, color: RGB) -> list[Part]:
    x0, y0, x1, y1 = box
    w, h = x1 - 1 - x0, y1 - 1 - y0
    eave = y0 + 0.38 * h
    wall = _rect(x0 + 0.07 * w, eave, x1 - 1 - 0.07 * w, y1 - 1, color)
    roof = _poly(((x0, eave), (x1 - 1, eave), (x0 + w / 2, y0)), _jitter(rng, ROOF_COLORS[rng.integers(3)], 8))
    wall_h = y1 - 1 - eave
    door_x = x0 + w * rng.choice((0.32, 0.5, 0.68))
    door = _rect(door_x - 0.11 * w, y1 - 1 - 0.42 * wall_h, door_x + 0.11 * w, y1 - 1, _jitter(rng, DOOR_COLOR, 8))
    side = 0.17 * w
    win_y = eave + 0.14 * wall_h
    glass = _jitter(rng, GLASS_COLOR, 8)
    windows = [_rect(x0 + f * w - side / 2, win_y, x0 + f * w + side / 2, win_y + side, glass) for f in (0.27, 0.73)]
    return [Part("wall", [wall]), Part("roof", [roof]), Part("door", [door]), Part("windows", windows)]


def _tree(rng, box, color: RGB) -> list[Part]:
    x0, y0, x1, y1 = box
    w, h = x1 - 1 - x0, y1 - 1 - y0
    cx = x0 + w / 2
    trunk = _rect(cx - 0.12 * w, y0 + 0.55 * h, cx + 0.12 * w, y1 - 1, _jitter(rng, TRUNK_COLOR, 8))
    crown = _ellipse_in(x0, y0, x1 - 1, y0 + 0.66 * h, color)
    return [Part("trunk", [trunk]), Part("crown", [crown])]


def _car(rng, box, color: RGB) -> list[Part]:
    x0, y0, x1, y1 = box
    w, h = x1 - 1 - x0, y1 - 1 - y0
    flip = bool(rng.integers(2))

    def pts(*xy):  # x as a fraction of the width from the car's back, mirrored for cars facing left
        return [(x0 + (1 - fx if flip else fx) * w, y0 + fy * h) for fx, fy in xy]

    r = 0.21 * h
    lower = _poly(pts((0, 0.4), (1, 0.4), (1, 1 - r / h), (0, 1 - r / h)), color)
    cabin = _poly(pts((0.18, 0.41), (0.86, 0.41), (0.7, 0), (0.3, 0)), color)
    glass = _poly(pts((0.27, 0.38), (0.78, 0.38), (0.66, 0.09), (0.34, 0.09)), _jitter(rng, GLASS_COLOR, 8))
    tyre = _jitter(rng, TYRE_COLOR, 6)
    centers = [pts((fx, 1))[0][0] for fx in (0.22, 0.78)]
    wheels = [_ellipse_in(c - r, y1 - 1 - 2 * r, c + r, y1 - 1, tyre) for c in centers]
    return [Part("body", [lower, cabin]), Part("windows", [glass]), Part("wheels", wheels)]


def _round(rng, box, color: RGB) -> list[Part]:
    x0, y0, x1, y1 = box
    return [Part("", [_ellipse_in(x0, y0, x1 - 1, y1 - 1, color)])]


_BUILDERS = {"house": _house, "tree": _tree, "car": _car, "ball": _round, "sun": _round}


def _overlaps(box, others, margin: int) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] + margin and b[0] < x1 + margin and y0 < b[3] + margin and b[1] < y1 + margin for b in others)


def generate_scene(seed: int, index: int = 0, config: SceneConfig | None = None) -> Scene:
    """The `index`-th scene of the stream `seed`; the same (seed, index, config) gives the same scene."""
    config = config or SceneConfig()
    rng = np.random.default_rng([seed, index])
    s = config.size
    horizon = int(rng.uniform(0.3, 0.55) * s)
    scene = Scene(
        size=s, horizon=horizon, sky=SKY_COLORS[rng.integers(len(SKY_COLORS))],
        ground=_jitter(rng, GROUND_COLORS[rng.integers(len(GROUND_COLORS))], 10),
        texture_seed=int(rng.integers(2**31)),
    )
    n = int(rng.integers(config.min_objects, config.max_objects + 1))
    kinds = list(rng.choice(GROUND_KINDS, size=int(rng.integers(1, 4)), replace=False))
    wanted = [kinds[0], *rng.choice(kinds, size=n - 1)] if n else []
    boxes: list[tuple[int, int, int, int]] = []
    if rng.random() < config.sun_probability:
        r = int(rng.uniform(0.045, 0.075) * s)
        if horizon - 2 * r - 4 > 2:
            x, y = int(rng.integers(2, s - 2 * r - 2)), int(rng.integers(2, horizon - 2 * r - 2))
            box = (x, y, x + 2 * r + 1, y + 2 * r + 1)
            boxes.append(box)
            scene.objects.append(SceneObject("sun", "yellow", box, _round(rng, box, _jitter(rng, SUN_COLOR))))
    for kind in sorted(wanted, key=GROUND_KINDS.index):
        (h_lo, h_hi), (a_lo, a_hi) = KIND_SHAPES[kind]
        for _ in range(40):
            h = int(rng.uniform(h_lo, h_hi) * s)
            w = max(6, int(h * rng.uniform(a_lo, a_hi)))
            y1 = int(rng.integers(horizon + 4, s - 1))
            x0 = int(rng.integers(1, s - w - 1))
            box = (x0, y1 - h, x0 + w + 1, y1 + 1)
            if box[1] >= 1 and not _overlaps(box, boxes, config.margin):
                break
        else:
            continue  # no room left for this one
        same = [o.color for o in scene.objects if o.kind == kind]
        if same and rng.random() < config.same_color_probability:
            name = str(rng.choice(same))
        else:
            name = str(rng.choice(KIND_COLORS[kind]))
        boxes.append(box)
        parts = _BUILDERS[kind](rng, box, _jitter(rng, OBJECT_COLORS[name]))
        scene.objects.append(SceneObject(kind, name, box, parts))
    return scene


def _draw(canvas: np.ndarray, shape: Shape, value: int) -> None:
    if shape.geometry == "poly":
        cv2.fillPoly(canvas, [np.asarray(shape.points, np.int32)], value, lineType=cv2.LINE_8)
    else:
        cx, cy, rx, ry = shape.points
        cv2.ellipse(canvas, (cx, cy), (rx, ry), 0, 0, 360, value, -1, lineType=cv2.LINE_8)


def label_table(scene: Scene) -> list[tuple[int, int]]:
    """(object index, part index) of each shape label, in label order (label = FIRST_SHAPE + position)."""
    return [(i, j) for i, obj in enumerate(scene.objects) for j, part in enumerate(obj.parts) for _ in part.shapes]


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def render(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Scene -> (RGB uint8 (S, S, 3), labels uint16 (S, S)): 0 sky, 1 ground, FIRST_SHAPE + k the k-th shape."""
    s = scene.size
    labels = np.full((s, s), SKY, np.uint16)
    labels[scene.horizon:] = GROUND
    colors = [(0, 0, 0), (0, 0, 0)]
    for obj in scene.objects:
        for part in obj.parts:
            for shape in part.shapes:
                _draw(labels, shape, len(colors))
                colors.append(shape.color)
    rows = np.arange(s, dtype=np.float32)[:, None]
    t_sky = np.clip(rows / max(scene.horizon, 1), 0, 1)
    sky = (1 - t_sky) * np.float32(scene.sky[0]) + t_sky * np.float32(scene.sky[1])  # (S, 3)
    t_ground = np.clip((rows - scene.horizon) / max(s - scene.horizon, 1), 0, 1)
    ground = np.float32(scene.ground) * (0.85 + 0.25 * t_ground)  # lighter towards the viewer
    lut = np.asarray(colors, np.float32)
    image = lut[labels]
    image = np.where((labels == SKY)[..., None], sky[:, None, :], image)
    image = np.where((labels == GROUND)[..., None], ground[:, None, :], image)
    rng = np.random.default_rng(scene.texture_seed)
    texture = 0.6 * _smooth_noise(rng, s, 6) + 0.4 * _smooth_noise(rng, s, 48)
    grain = rng.standard_normal((s, s)).astype(np.float32)
    amplitude = np.where(labels == SKY, 4.0, np.where(labels == GROUND, 12.0, 5.0)).astype(np.float32)
    image += ((texture + 0.5 * grain) * amplitude)[..., None]
    return np.clip(image, 0, 255).round().astype(np.uint8), labels
