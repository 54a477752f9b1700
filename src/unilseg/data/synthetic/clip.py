"""Generated video clips: a scene whose objects move a few pixels per frame, with exact per-frame masks.

    >>> from unilseg.data.synthetic.clip import make_clip
    >>> clip = make_clip(seed=5, index=0, frames=24)
    >>> len(clip.frames), clip.frames[0].shape, [i.text for i in clip.instructions]

The camera is still (sky, ground and their texture stay put); each ground object slides
sideways at 1..`speed` px per frame and the sun drifts at 1 px per frame, bouncing back
at the image border, so objects may pass in front of one another (later objects are
drawn on top, as in a still scene). Every frame is rendered with `render`, so its label
map, and every mask taken from it, is exact. A clip's instructions (one per granularity
where one exists) are those that name the same target in the first, middle and last
frame, so their wording stays true over the whole clip.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from unilseg.data.synthetic.instructions import GRANULARITIES, Instruction, instructions, target_mask
from unilseg.data.synthetic.scene import Part, Scene, SceneConfig, SceneObject, Shape, generate_scene, render

CLIP_FPS = 12.0


def _bounce(offset: float, low: float, high: float) -> float:
    """`offset` folded into [low, high] as a ball bouncing between two walls would be."""
    span = high - low
    if span <= 0:
        return 0.0
    u = (offset - low) % (2 * span)
    return low + (u if u <= span else 2 * span - u)


def _moved_shape(shape: Shape, dx: int) -> Shape:
    if shape.geometry == "poly":
        return Shape("poly", tuple((x + dx, y) for x, y in shape.points), shape.color)
    cx, cy, rx, ry = shape.points
    return Shape("ellipse", (cx + dx, cy, rx, ry), shape.color)


def moved(scene: Scene, shifts: list[int]) -> Scene:
    """The scene with object i shifted right by shifts[i] pixels (parts, shapes and box alike)."""
    objects = []
    for obj, dx in zip(scene.objects, shifts):
        x0, y0, x1, y1 = obj.box
        parts = [Part(p.name, [_moved_shape(s, dx) for s in p.shapes]) for p in obj.parts]
        objects.append(SceneObject(obj.kind, obj.color, (x0 + dx, y0, x1 + dx, y1), parts))
    return replace(scene, objects=objects)


def velocities(scene: Scene, seed: int, index: int, speed: int = 2) -> list[int]:
    """Pixels per frame of each object: +-1..speed on the ground, +-1 for the sun."""
    rng = np.random.default_rng([seed, index, 7])
    out = []
    for obj in scene.objects:
        v = 1 if obj.kind == "sun" else int(rng.integers(1, speed + 1))
        out.append(v if rng.random() < 0.5 else -v)
    return out


def scene_at(scene: Scene, speeds: list[int], t: int) -> Scene:
    """Frame t of the clip: every object moved by its speed x t, bounced back inside the image."""
    shifts = [round(_bounce(v * t, 1 - o.box[0], scene.size - 1 - o.box[2])) for o, v in zip(scene.objects, speeds)]
    return moved(scene, shifts)


def iter_frames(seed: int, index: int, frames: int, config: SceneConfig | None = None,
                speed: int = 2) -> Iterator[tuple[np.ndarray, np.ndarray, Scene]]:
    """(RGB uint8 (S, S, 3), labels uint16 (S, S), scene) of each frame, rendered one at a time."""
    scene = generate_scene(seed, index, config)
    speeds = velocities(scene, seed, index, speed)
    for t in range(frames):
        s = scene_at(scene, speeds, t)
        image, labels = render(s)
        yield image, labels, s


@dataclass
class Clip:
    """A generated clip: frames, their label maps and scenes, and instructions true in every frame."""

    frames: list[np.ndarray]  # RGB uint8 (S, S, 3) each
    labels: list[np.ndarray]  # uint16 (S, S) each
    scenes: list[Scene]
    instructions: list[Instruction] = field(default_factory=list)
    fps: float = CLIP_FPS

    def masks(self, k: int) -> list[np.ndarray]:
        """Bool (S, S) ground truth of instruction k in every frame."""
        target = self.instructions[k].target
        return [target_mask(s, lab, target) for s, lab in zip(self.scenes, self.labels)]


def stable_instructions(clip: Clip, seed: int, index: int) -> list[Instruction]:
    """One instruction per granularity whose text names the same target in the first, middle and last frames."""
    checks = sorted({0, len(clip.frames) // 2, len(clip.frames) - 1})
    by_frame = []
    for t in checks:
        found = instructions(clip.scenes[t], clip.labels[t])
        by_frame.append({i.text: i.target for g in GRANULARITIES for alts in found[g] for i in alts})
    first = instructions(clip.scenes[0], clip.labels[0])
    rng = np.random.default_rng([seed, index, 8])
    picked = []
    for g in GRANULARITIES:
        ok = [i for alts in first[g] for i in alts if all(m.get(i.text) == i.target for m in by_frame)]
        if ok:
            picked.append(ok[int(rng.integers(len(ok)))])
    return picked


def make_clip(seed: int, index: int, frames: int = 24, config: SceneConfig | None = None, speed: int = 2) -> Clip:
    """Clip `index` of stream `seed`: scene (seed, index) with moving objects, `frames` frames long."""
    rendered = list(iter_frames(seed, index, frames, config, speed))
    clip = Clip([r[0] for r in rendered], [r[1] for r in rendered], [r[2] for r in rendered])
    clip.instructions = stable_instructions(clip, seed, index)
    return clip


def write_mp4(frames_rgb, path: str | Path, fps: float = CLIP_FPS) -> Path:
    """Frames (an iterable of RGB uint8 (H, W, 3)) -> an mp4 (mp4v, lossy) at `path`."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    for rgb in frames_rgb:
        if writer is None:
            h, w = rgb.shape[:2]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            if not writer.isOpened():
                raise RuntimeError(f"cannot write {path}: this OpenCV has no mp4v encoder")
        writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
    if writer is not None:
        writer.release()
    return path


def write_pngs(frames_rgb, directory: str | Path) -> Path:
    """Frames (RGB uint8) -> `directory/000000.png`, ... (lossless)."""
    import cv2

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for t, rgb in enumerate(frames_rgb):
        cv2.imwrite(str(directory / f"{t:06d}.png"), np.ascontiguousarray(rgb[:, :, ::-1]))
    return directory
