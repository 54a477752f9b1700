"""The working directory every docs page's examples run in (tests/test_docs_examples.py), built offline in seconds.

Each page gets a fresh copy of it; the page's blocks run in it in order, so a block may use an earlier block's
files. Images are the repository's demo scenes and generated scenes of the same world (192 x 192, RGB): what the
demo model (`--model unilseg-demo`) knows. What is there:

| path | what |
|---|---|
| `imgs/demo_scene.png` | the README's scene: the sun, a red, an orange and three green houses |
| `imgs/demo_scene_2.png` | a green tree, two white cars, a blue car, a blue and a red ball |
| `imgs/demo_scene_3.png` | a pink and a green tree, a blue and a green car, a white ball |
| `photo.jpg` | `imgs/demo_scene.png` as a JPEG |
| `a.png`, `a.jpg` | `imgs/demo_scene.png`, as PNG and JPEG |
| `b.png`, `b.jpg` | `imgs/demo_scene_2.png`, as PNG and JPEG |
| `photos/scene1.png` | = `imgs/demo_scene.png` |
| `photos/scene2.png` | = `imgs/demo_scene_2.png` |
| `photos/scene3.jpg` | = `imgs/demo_scene_3.png`, as a JPEG |
| `photos/scene4.jpg` | a purple and a red house, a red car |
| `more/scene5.jpg` | two red houses and a yellow one, a pink tree |
| `more/scene6.jpg` | two pink trees and a red one, a yellow ball |
| `questions.txt` | instructions, one a line: `the sky`, `all houses`, `all trees` |
| `classes.txt` | `name: instruction` a line: sky, ground, house (all houses), tree (all trees), car (all cars) |
| `jobs.csv` | header `image,expression`; 4 rows on `photos/` (names derived: fits every `--format`) |
| `named.csv` | header `image,expression,output`: `jobs.csv`'s rows, 2 naming a PNG (`sky1.png`, `picked/trees2.png`) |
| `jobs.jsonl` | 4 objects `{"image", "expression"}` on `photos/`, one with a list of 2 expressions (5 masks) |
| `clip.mp4` | 12 frames, 1 s at 12 fps, mp4v, 192 x 192: `demo_scene_3`'s world, cars and trees sliding |
| `frames/` | the same 12 frames, lossless: `000000.png` ... `000011.png` |
| `general_inference.py` | the repository's shim (the authors' command line) |

Nothing else: no weights (the demo model ships in the package; `UNILSEG_HOME` is an empty directory), no
`configs/` (shipped configs resolve by name: `unilseg-demo`, `unilseg20`, ...). Instructions that hold in every
frame of the clip: `the sky`, `the ground`, `all trees`, `all cars`, `the blue car`, `the pink tree`, `the ball`.

    python tests/docs_workspace.py DIR      # build it in DIR, to try a page's commands by hand
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HELD_OUT_SEED = 777  # the demo scenes' stream (scripts/demo_figure.py): no training run uses it
EXTRA_SCENES = {"photos/scene4.jpg": 201, "more/scene5.jpg": 204, "more/scene6.jpg": 205}
CLIP_SCENE = 94  # imgs/demo_scene_3.png's scene
CLIP_FRAMES = 12
QUESTIONS = ("the sky", "all houses", "all trees")
CLASSES = ("sky: the sky", "ground: the ground", "house: all houses", "tree: all trees", "car: all cars")
JOBS = (("photos/scene1.png", "the sky", "sky1.png"), ("photos/scene1.png", "all houses", ""),
        ("photos/scene2.png", "all trees", "picked/trees2.png"), ("photos/scene3.jpg", "the blue car", ""))
JSONL_JOBS = ({"image": "photos/scene1.png", "expression": "the sky"},
              {"image": "photos/scene2.png", "expression": ["all trees", "the blue car"]},
              {"image": "photos/scene3.jpg", "expression": "the ground"},
              {"image": "photos/scene4.jpg", "expression": "all houses"})


def _write_image(path: Path, bgr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), bgr):
        raise OSError(f"cannot write {path}")


def build_workspace(dest: Path) -> Path:
    """Write the files listed in this module's docstring into `dest` (created; must not hold them yet)."""
    from unilseg.data.synthetic import generate_scene, render
    from unilseg.data.synthetic.clip import make_clip, write_mp4, write_pngs

    dest.mkdir(parents=True, exist_ok=True)
    (dest / "imgs").mkdir(exist_ok=True)
    for png in sorted((ROOT / "imgs").glob("demo_*.png")):
        shutil.copyfile(png, dest / "imgs" / png.name)
    scenes = [cv2.imread(str(ROOT / "imgs" / n)) for n in ("demo_scene.png", "demo_scene_2.png", "demo_scene_3.png")]
    named = {"photo.jpg": scenes[0], "a.png": scenes[0], "a.jpg": scenes[0], "b.png": scenes[1], "b.jpg": scenes[1],
             "photos/scene1.png": scenes[0], "photos/scene2.png": scenes[1], "photos/scene3.jpg": scenes[2]}
    for name, index in EXTRA_SCENES.items():
        named[name] = render(generate_scene(HELD_OUT_SEED, index))[0][:, :, ::-1]  # RGB -> BGR
    for name, bgr in named.items():
        _write_image(dest / name, bgr)

    (dest / "questions.txt").write_text("".join(f"{q}\n" for q in QUESTIONS))
    (dest / "classes.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    (dest / "jobs.csv").write_text("image,expression\n" + "".join(f"{i},{e}\n" for i, e, _ in JOBS))
    (dest / "named.csv").write_text("image,expression,output\n" + "".join(f"{i},{e},{o}\n" for i, e, o in JOBS))
    (dest / "jobs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in JSONL_JOBS))

    clip = make_clip(HELD_OUT_SEED, CLIP_SCENE, frames=CLIP_FRAMES)
    write_mp4(clip.frames, dest / "clip.mp4", fps=clip.fps)
    write_pngs(clip.frames, dest / "frames")
    shutil.copyfile(ROOT / "general_inference.py", dest / "general_inference.py")
    return dest


def listing(dest: Path) -> list[str]:
    """Every file under `dest`, relative and sorted (what a page's examples can name)."""
    return sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/docs_workspace.py DIR")
    print("\n".join(listing(build_workspace(Path(sys.argv[1])))))
