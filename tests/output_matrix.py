"""The output matrix: a fixed set of commands whose output files (names and digests) are a fixture.

`run_matrix(workdir)` makes its own inputs under `workdir` (the demo example scenes, a
generated mp4, a manifest, a classes file, the seeded full-size checkpoint), runs every case
in-process through `unilseg.__main__.main(argv)` with one torch thread, and returns
{case: {file path relative to the case's output folder: digest}}. The recorded "before"
is tests/fixtures/output_matrix.json (scripts/record_output_matrix.py); tests/test_output_matrix.py
checks that the same commands still give the same names and digests.

Digest rules (the fixture must hold on both CPU kinds the project runs on, AVX-512 with VNNI
and AVX2-only, whose float results differ in the last bits):

- Files made from thresholded masks, and images rendered from a mask by element-wise
  arithmetic (PNG/`.npy` bool masks, label-map PNGs, overlays PNG and JPEG, files without a
  rule below): `sha256:` of the bytes. Element-wise IEEE float ops give the same bits on every
  CPU; only reductions and matrix products (the network, ONNX Runtime) differ.
- JSON / JSONL (results.jsonl, RLE JSON, legends, the eval summary): loaded, `seconds` dropped,
  paths under `workdir` made relative, floats rounded to 10 decimals (shares, IoUs: ratios of
  pixel counts, equal on every CPU), dumped with sort_keys -> `sha256:` of that text. Except the
  soft-map floats `score` (mean soft value inside the mask) and `presence` (the presence score,
  the map's peak): they are taken out of the hashed text and listed after it: `sha256:HEX~[v, ...]`.
- Float soft maps (`.prob.npy`): `sha256:` of shape and dtype, `~` then mean, std, min, max and
  the 4x4 block means of the map, rounded to 6 decimals.
- mp4 (lossy, encoder SIMD is not ours): `mp4:FRAMESxWIDTHxHEIGHT@FPS`.
- ONNX graphs: `file` (present; their bytes are the exporter's business).

Values after `~` are compared to within FLOAT_TOLERANCE (`compare`): rounding a float that
carries last-bit noise to a fixed number of decimals flips where a value sits near a rounding
boundary, so an exact hash of rounded soft maps would not hold across CPUs.
A mask pixel is only stable if its soft value is not within the noise of the threshold:
`threshold_margins` recomputes every recorded mask's soft maps through the Python API and the
recording script requires min |prob - threshold| > MIN_MARGIN for each case.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
EXAMPLES = ROOT / "src" / "unilseg" / "demo" / "examples"
FULL_CONFIG = ROOT / "src" / "unilseg" / "configs" / "unilseg20.yaml"
FLOAT_TOLERANCE = 1e-4
SOFT_KEYS = ("score", "presence")  # JSON floats computed from soft maps: compared to within FLOAT_TOLERANCE
MIN_MARGIN = 1e-4
FPS = 12.0
CLIP_FRAMES = 6

# The instructions (and eval's threshold) are picked so that no mask pixel sits within MIN_MARGIN of the
# threshold (threshold_margins); "the roof of the red house" at 0.35, for one, has a pixel 4e-5 from it.
DEMO = ["--model", "unilseg-demo", "--device", "cpu"]
MANIFEST_ROWS = [
    {"image": "images/demo_scene.png", "expression": "the red house"},
    {"image": "images/demo_scene.png", "expression": "the sun"},
    {"image": "images/demo_scene.png", "expression": "the blue car"},  # not in that scene: present false, empty
    {"image": "images/demo_scene_2.png", "expression": "the blue car"},
    {"image": "images/demo_scene_2.png", "expression": "all the trees", "output": "picked/trees_of_scene_2"},
    {"image": "images/demo_scene_3.png", "expression": "the pink tree"},
]
CLASSES = ["sky", "ground", "house: the red house", "tree: all the trees", "car"]
SINGLE = ("images/demo_scene.png", "the red house")
MULTI = ("images/demo_scene_2.png", ["the blue car", "all the trees", "the tree on the left"])
ONNX = ("images/demo_scene_3.png", ["the pink tree", "the ground"])
VIDEO_TEXTS = ["the sky", "the red tree"]
EVAL_DATA, EVAL_LIMIT, EVAL_THRESHOLD = "synthetic:4:6", 8, 0.35  # streams 3 and 5 put a pixel within 1e-4 of it
SEEDED = ("images/chelsea.png", "a cat on a bed")

# case -> argv; {w} is the work folder, {out} the case's output folder.
CASES: dict[str, list[str]] = {
    "single_sidecars": [*DEMO, "--img", "{w}/" + SINGLE[0], "--exp", SINGLE[1], "--sp", "{out}/mask.png",
                        "--save-prob", "--overlay"],
    "several_exp": [*DEMO, "--img", "{w}/" + MULTI[0], *[a for t in MULTI[1] for a in ("--exp", t)],
                    "--sp", "{out}"],
    "manifest_png": [*DEMO, "--manifest", "{w}/manifest.jsonl", "--sp", "{out}", "--format", "png",
                     "--save-prob", "--overlay", "png", "--no-progress"],
    "manifest_npy": [*DEMO, "--manifest", "{w}/manifest.jsonl", "--sp", "{out}", "--format", "npy",
                     "--no-progress"],
    "manifest_rle_json": [*DEMO, "--manifest", "{w}/manifest.jsonl", "--sp", "{out}", "--format", "rle-json",
                          "--overlay", "jpg", "--no-progress"],
    "classes": [*DEMO, "--img", "{w}/images/demo_scene.png", "{w}/images/demo_scene_2.png",
                "--classes-file", "{w}/classes.txt", "--sp", "{out}", "--overlay", "png", "--no-progress"],
    "video_png": [*DEMO, "--video", "{w}/clip.mp4", *[a for t in VIDEO_TEXTS for a in ("--exp", t)],
                  "--sp", "{out}", "--overlay", "--no-progress"],
    "video_rle_json": [*DEMO, "--video", "{w}/clip.mp4", "--exp", VIDEO_TEXTS[0], "--every", "2",
                       "--format", "rle-json", "--sp", "{out}", "--no-progress"],
    "ray": ["ray", *DEMO, "--manifest", "{w}/manifest.jsonl", "--sp", "{out}", "--format", "png",
            "--actors", "2", "--cpus-per-actor", "0.5", "--no-progress"],
    "onnx_export": ["export", "--model", "unilseg-demo", "--device", "cpu", "--format", "onnx", "--out", "{out}"],
    "onnx_runtime": ["--runtime", "onnx", "--weights", "{w}/out/onnx_export", "--device", "cpu",
                     "--img", "{w}/" + ONNX[0], *[a for t in ONNX[1] for a in ("--exp", t)], "--sp", "{out}"],
    "eval_json": ["eval", *DEMO, "--data", EVAL_DATA, "--limit", str(EVAL_LIMIT), "--threshold", str(EVAL_THRESHOLD),
                  "--json", "{out}/summary.json",
                  "--per-sample", "{out}/per_sample.jsonl", "--no-progress"],
    "seeded_full_size": ["--weights", "{w}/seed0.pth", "--config", str(FULL_CONFIG), "--device", "cpu",
                         "--img", "{w}/" + SEEDED[0], "--exp", SEEDED[1], "--sp", "{out}/cat.png", "--save-prob"],
}


# ---------------------------------------------------------------- inputs


def make_inputs(workdir: Path, checkpoint: Path | None = None) -> None:
    """The matrix's inputs under workdir: images/, manifest.jsonl, classes.txt, clip.mp4, seed0.pth
    (a link to `checkpoint` if given: the seeded checkpoint already written, e.g. by conftest's fixture)."""
    import cv2

    from unilseg.data.synthetic import SceneConfig
    from unilseg.data.synthetic.clip import iter_frames, write_mp4

    images = workdir / "images"
    images.mkdir(parents=True, exist_ok=True)
    for path in sorted(EXAMPLES.glob("demo_scene*.png")):
        shutil.copyfile(path, images / path.name)
    shutil.copyfile(TESTS / "fixtures" / "images" / "chelsea.png", images / "chelsea.png")
    (workdir / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in MANIFEST_ROWS))
    (workdir / "classes.txt").write_text("".join(c + "\n" for c in CLASSES))
    clip = write_mp4((f[0] for f in iter_frames(5, 0, CLIP_FRAMES, SceneConfig(size=64))), workdir / "clip.mp4", FPS)
    cap = cv2.VideoCapture(str(clip))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == CLIP_FRAMES
    cap.release()
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from seeded import official_seeded_checkpoint

    if checkpoint is not None:
        (workdir / "seed0.pth").symlink_to(Path(checkpoint).resolve())
    else:
        official_seeded_checkpoint(TESTS / "fixtures" / "keys.tsv", 0, workdir / "seed0.pth")


# ---------------------------------------------------------------- running


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from torchthreads import torch_threads

    with torch_threads(1):
        yield


@contextlib.contextmanager
def _ray_cluster() -> Iterator[None]:
    """A local 2-CPU Ray cluster for the `ray` case (as tests/test_ray.py runs it)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def run_case(name: str, workdir: Path) -> None:
    """Run one case's command in-process; raise with its stderr if it does not exit 0."""
    from unilseg.__main__ import main

    out = workdir / "out" / name
    out.mkdir(parents=True, exist_ok=True)
    argv = [a.format(w=workdir, out=out) for a in CASES[name]]
    err, std = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
        with _ray_cluster() if name == "ray" else contextlib.nullcontext():
            code = main(argv)
    if code != 0:
        raise RuntimeError(f"case {name}: exit {code}\n{err.getvalue()}")


def run_matrix(workdir: str | Path, checkpoint: Path | None = None) -> dict[str, dict[str, str]]:
    """Make the inputs, run every case -> {case: {relative file path: digest}}.

    checkpoint: the seeded full-size checkpoint if already written (else written here, ~1 GB)."""
    workdir = Path(workdir).resolve()
    make_inputs(workdir, checkpoint)
    with _one_thread():
        for name in CASES:
            run_case(name, workdir)
    return {name: digest_tree(workdir / "out" / name, workdir) for name in CASES}


# ---------------------------------------------------------------- digests


def digest_tree(directory: Path, workdir: Path) -> dict[str, str]:
    """{path relative to directory: digest} of every file under it (hidden ones included)."""
    return {p.relative_to(directory).as_posix(): digest_file(p, workdir)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _approx(exact: bytes, values: list[float]) -> str:
    return _sha(exact) + "~" + json.dumps([round(float(v), 6) for v in values])


def digest_file(path: Path, workdir: Path) -> str:
    """The digest of one output file by the module docstring's rules."""
    suffix = path.suffix.lower()
    if suffix in (".json", ".jsonl"):
        return _digest_json(path, workdir)
    if suffix == ".npy":
        array = np.load(path, allow_pickle=False)
        if array.dtype.kind != "f":
            return _sha(path.read_bytes())
        return _approx(f"{array.dtype.str} {array.shape}".encode(), _soft_summary(array))
    if suffix == ".mp4":
        import cv2

        cap = cv2.VideoCapture(str(path))
        frames = 0
        while cap.read()[0]:
            frames += 1
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        fps = cap.get(cv2.CAP_PROP_FPS)
        cap.release()
        return f"mp4:{frames}x{size[0]}x{size[1]}@{fps:g}"
    if suffix == ".onnx":
        return "file"
    return _sha(path.read_bytes())


def _soft_summary(array: np.ndarray) -> list[float]:
    """Mean, std, min, max and the 4x4 block means of a soft map (H, W)."""
    a = array.astype(np.float64)
    values = [a.mean(), a.std(), a.min(), a.max()]
    rows = np.array_split(np.arange(a.shape[0]), 4)
    cols = np.array_split(np.arange(a.shape[-1]), 4)
    values += [a[..., r[0]:r[-1] + 1, c[0]:c[-1] + 1].mean() for r in rows for c in cols]
    return values


def _digest_json(path: Path, workdir: Path) -> str:
    text = path.read_text(encoding="utf-8")
    docs = [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" \
        else [json.loads(text)]
    soft: list[float] = []
    canon = [_canonical(d, str(workdir) + "/", soft) for d in docs]
    exact = json.dumps(canon, sort_keys=True, ensure_ascii=False).encode()
    return _approx(exact, soft) if soft else _sha(exact)


def _canonical(value: Any, prefix: str, soft: list[float]) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "seconds":
                continue
            if k in SOFT_KEYS and isinstance(v, float):
                soft.append(v)
                out[k] = "~"
                continue
            out[k] = _canonical(v, prefix, soft)
        return out
    if isinstance(value, list):
        return [_canonical(v, prefix, soft) for v in value]
    if isinstance(value, float):
        return round(value, 10)
    if isinstance(value, str) and value.startswith(prefix):
        return value[len(prefix):]
    return value


def compare(expected: dict[str, dict[str, str]], actual: dict[str, dict[str, str]]) -> list[str]:
    """What differs, one line each: cases or files added/missing, digests changed (floats to FLOAT_TOLERANCE)."""
    problems = []
    for case in sorted(expected.keys() | actual.keys()):
        if case not in actual:
            problems.append(f"{case}: case missing")
            continue
        if case not in expected:
            problems.append(f"{case}: case added")
            continue
        want, got = expected[case], actual[case]
        problems += [f"{case}: missing {f}" for f in sorted(want.keys() - got.keys())]
        problems += [f"{case}: added {f}" for f in sorted(got.keys() - want.keys())]
        problems += [f"{case}: changed {f}: {want[f]} -> {got[f]}" for f in sorted(want.keys() & got.keys())
                     if not same_digest(want[f], got[f])]
    return problems


def same_digest(a: str, b: str) -> bool:
    """Equal digests; the float lists after `~` equal to within FLOAT_TOLERANCE."""
    ha, _, va = a.partition("~")
    hb, _, vb = b.partition("~")
    if ha != hb or bool(va) != bool(vb):
        return False
    if not va:
        return True
    xa, xb = json.loads(va), json.loads(vb)
    return len(xa) == len(xb) and all(abs(x - y) <= FLOAT_TOLERANCE for x, y in zip(xa, xb))


# ---------------------------------------------------------------- margins to the threshold


def _mask_margin(prob: np.ndarray, threshold: float) -> float:
    return float(np.abs(prob.astype(np.float64) - threshold).min())


def _label_margin(probs: list[np.ndarray], threshold: float) -> float:
    """How far a label map is from flipping a pixel: min over pixels of |best - threshold| and,
    where a class wins, best - second best (its argmax)."""
    stack = np.sort(np.stack(probs).astype(np.float64), axis=0)
    best, second = stack[-1], stack[-2]
    won = best > threshold
    gap = float((best - second)[won].min()) if won.any() and len(probs) > 1 else np.inf
    return min(_mask_margin(best, threshold), gap)


def threshold_margins(workdir: str | Path) -> dict[str, float]:
    """{case: min over its masks' pixels of the soft value's distance to the threshold} for every case
    that writes masks (label maps: also the winning class's lead), recomputed through the Python API on
    the inputs `run_matrix` made in workdir (one torch thread, as the matrix runs)."""
    from unilseg.batch import Item, predict_items
    from unilseg.data.manifest import load_image
    from unilseg.data.sources import open_samples
    from unilseg.inference.backends import load_backend
    from unilseg.inference.predictor import Predictor
    from unilseg.model.build import load_model
    from unilseg.tasks.labelmap import read_classes_file
    from unilseg.tasks.video import segment_video

    workdir = Path(workdir).resolve()

    def pairs(predictor: Predictor, image: Path, texts: list[str]) -> list[np.ndarray]:
        predictor.set_image(str(image))
        return [p.prob for p in predictor.predict(texts)]

    def margin(predictor: Predictor, requests: list[tuple[Path, list[str]]]) -> float:
        return min(_mask_margin(p, predictor.threshold) for image, texts in requests
                   for p in pairs(predictor, image, texts))

    out: dict[str, float] = {}
    with _one_thread():
        demo = Predictor(load_model(model="unilseg-demo", device="cpu"))
        out["single_sidecars"] = margin(demo, [(workdir / SINGLE[0], [SINGLE[1]])])
        out["several_exp"] = margin(demo, [(workdir / MULTI[0], MULTI[1])])
        batch = margin(demo, [(workdir / r["image"], [r["expression"]]) for r in MANIFEST_ROWS])
        for name in ("manifest_png", "manifest_npy", "manifest_rle_json", "ray"):
            out[name] = batch
        classes = [c.instruction for c in read_classes_file(workdir / "classes.txt")]
        out["classes"] = min(_label_margin(pairs(demo, workdir / f"images/{n}.png", classes), demo.threshold)
                             for n in ("demo_scene", "demo_scene_2"))
        for name, every, texts in (("video_png", 1, VIDEO_TEXTS), ("video_rle_json", 2, VIDEO_TEXTS[:1])):
            frames = segment_video(demo, workdir / "clip.mp4", texts, every=every)
            out[name] = min(_mask_margin(p.prob, demo.threshold) for f in frames for p in f.predictions)
        samples = open_samples(EVAL_DATA)
        items = [Item(0, i, t) for i, s in enumerate(samples) for t in s.expressions][:EVAL_LIMIT]
        out["eval_json"] = min(_mask_margin(r.prediction.prob, EVAL_THRESHOLD)
                               for r in predict_items(demo, items, load=lambda i: load_image(samples[i])))
        onnx = Predictor(load_backend("onnx", weights=str(workdir / "out" / "onnx_export"), device="cpu"))
        out["onnx_runtime"] = margin(onnx, [(workdir / ONNX[0], ONNX[1])])
        seeded = Predictor(load_model(workdir / "seed0.pth", FULL_CONFIG, device="cpu"))
        out["seeded_full_size"] = margin(seeded, [(workdir / SEEDED[0], [SEEDED[1]])])
    return out
