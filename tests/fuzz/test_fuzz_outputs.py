"""Outputs never destroy other outputs or inputs: every job claims each file it reads and writes
while it is planned, and a clash is refused before any model work (exit 2, one line naming both),
every file left byte for byte as it was; temporaries are removed only by the job that made them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from fuzz.harness import MODEL, Sandbox
from fuzz.hostile import animated_gif, image_bytes


def image(folder: Path, name: str = "a.png", h: int = 48, w: int = 64) -> Path:
    path = folder / name
    path.write_bytes(image_bytes(h=h, w=w))
    return path


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def refused(box: Sandbox, argv: list[str], loads: list, *names: str, main=None) -> str:
    """Run argv: exit 2 before any model load, every file as it was (nothing new), the line naming `names`."""
    before = snapshot(box.root)
    result = box.run(argv, 2, main=main)
    assert not loads, "the model was loaded before the refusal"
    assert snapshot(box.root) == before
    (line,) = [line for line in result.err.splitlines() if line.startswith("error:")]
    for name in names:
        assert name in line, line
    return line


def rows(folder: Path, name: str = "results.jsonl") -> list[dict]:
    return [json.loads(line) for line in (folder / name).read_text().splitlines()]


# ---------------------------------------------------------------- temporaries' look-alikes stay

def test_lookalike_of_a_single_output_temporary_is_kept(sandbox):
    """`.m.npy.dead.part` beside m.npy is a user's file, not a temporary of this job."""
    photo = image(sandbox.inp)
    lookalikes = {name: f"user data {name}".encode() for name in (".m.npy.dead.part", ".m.npy.1234abcd.part",
                                                                  ".m.prob.npy.x.part", ".m.overlay.png.y.part")}
    for name, data in lookalikes.items():
        (sandbox.out / name).write_bytes(data)
    sandbox.run(["--img", str(photo), "--exp", "x", "--sp", "m.npy", "--save-prob", "--overlay", "m.overlay.png",
                 *MODEL], 0)
    assert (sandbox.out / "m.npy").is_file() and (sandbox.out / "m.prob.npy").is_file()
    assert {name: (sandbox.out / name).read_bytes() for name in lookalikes} == lookalikes


def test_lookalike_of_the_results_log_temporary_is_kept(sandbox):
    photo = image(sandbox.inp)
    names = [".results.jsonl.beef.part", ".a__x.png.0.part", ".a__y.png.cafe.part"]
    for name in names:
        (sandbox.out / name).write_text(name)
    sandbox.run(["--img", str(photo), "--exp", "x", "--exp", "y", "--sp", ".", *MODEL], 0)
    assert [r["error"] for r in rows(sandbox.out)] == [None, None]
    assert all((sandbox.out / name).read_text() == name for name in names)


def test_lookalike_of_a_label_map_temporary_is_kept(sandbox):
    photo = image(sandbox.inp)
    names = [".labels.png.old.part", ".labels.legend.json.old.part"]
    for name in names:
        (sandbox.out / name).write_text(name)
    sandbox.run(["--img", str(photo), "--classes", "circle,grass", "--sp", "labels.png", *MODEL], 0)
    assert (sandbox.out / "labels.png").is_file()
    assert all((sandbox.out / name).read_text() == name for name in names)


def test_lookalike_of_an_overlay_video_temporary_is_kept(sandbox):
    video = animated_gif(sandbox.inp / "v.gif", frames=2)
    name = ".v__x.overlay.mp4.old.part.mp4"
    (sandbox.out / name).write_text("keep me")
    sandbox.run(["--video", str(video), "--exp", "x", "--sp", ".", "--overlay", *MODEL], 0)
    assert (sandbox.out / "v__x.overlay.mp4").is_file() and (sandbox.out / name).read_text() == "keep me"


def test_lookalike_kept_by_the_python_writer(tmp_path):
    from unilseg.io.writers import write_atomic

    lookalike = tmp_path / ".m.png.dead.part"
    lookalike.write_bytes(b"mine")
    write_atomic(tmp_path / "m.png", b"new")
    assert (tmp_path / "m.png").read_bytes() == b"new" and lookalike.read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.png.dead.part", "m.png"]


def test_an_output_named_like_a_temporary_is_refused(sandbox, loads):
    """unilseg's own temporary names are kept for it: no output may take one."""
    image(sandbox.inp)
    manifest = sandbox.inp / "m.csv"
    manifest.write_text("image,expression,output\na.png,x,.m.npy.unilseg-0123456789ab.part\n")
    refused(sandbox, ["--manifest", str(manifest), "--sp", ".", "--format", "npy", *MODEL], loads, "temporary")


# ---------------------------------------------------------------- two outputs on one file

def test_save_prob_on_the_mask_is_refused(sandbox, loads):
    photo = image(sandbox.inp)
    refused(sandbox, ["--img", str(photo), "--exp", "x", "--sp", "m.npy", "--save-prob", "m.npy", *MODEL], loads,
            "--save-prob m.npy", "--sp m.npy")


def test_overlay_on_the_mask_is_refused(sandbox, loads):
    photo = image(sandbox.inp)
    (sandbox.out / "m.png").write_bytes(b"an earlier mask")
    refused(sandbox, ["--img", str(photo), "--exp", "x", "--sp", "m.png", "--overlay", "m.png", *MODEL], loads,
            "--overlay m.png", "--sp m.png")


def test_overlay_on_the_soft_map_path_is_refused(sandbox, loads):
    """Paths compared after `..` are resolved: sub/../p.png is p.png."""
    photo = image(sandbox.inp)
    (sandbox.out / "sub").mkdir()
    refused(sandbox, ["--img", str(photo), "--exp", "x", "--sp", "m.png", "--save-prob", "p.npy", "--overlay",
                      "sub/../m.png", *MODEL], loads, "--overlay", "m.png")


@pytest.mark.parametrize(("rows_csv", "flags", "names"), [
    # a row's output is another row's soft map (explicit outputs both)
    ("a.png,x,m.npy\na.png,y,m.prob.npy\n", ["--format", "npy", "--save-prob"], ("m.prob.npy", "item 0")),
    # a row's output is another row's overlay
    ("a.png,x,a.png\na.png,y,a.overlay.png\n", ["--overlay", "png"], ("a.overlay.png", "item 0")),
    # two rows, one output (case apart: one file on macOS and Windows)
    ("a.png,x,Same.png\na.png,y,same.png\n", [], ("Same.png", "same.png")),
    # one file through a folder that is a link to --sp itself
    ("a.png,x,m.png\na.png,y,here/m.png\n", [], ("here/m.png", "item 0")),
])
def test_manifest_rows_sharing_a_file_are_refused(sandbox, loads, rows_csv, flags, names):
    image(sandbox.inp)
    (sandbox.out / "here").symlink_to(sandbox.out, target_is_directory=True)
    manifest = sandbox.inp / "m.csv"
    manifest.write_text("image,expression,output\n" + rows_csv)
    refused(sandbox, ["--manifest", str(manifest), "--sp", ".", *flags, *MODEL], loads, *names)


def test_a_derived_name_steps_aside_for_an_explicit_output_on_its_sidecar(sandbox):
    """A row naming `s__the-sky.prob.npy` takes it; the derived row's soft map goes to `s__the-sky__2.prob.npy`,
    so neither file is lost."""
    image(sandbox.inp, "s.png")
    manifest = sandbox.inp / "m.csv"
    manifest.write_text("image,expression,output\ns.png,the sky,\ns.png,x,s__the-sky.prob.npy\n")
    sandbox.run(["--manifest", str(manifest), "--sp", ".", "--format", "npy", "--save-prob", *MODEL], 0)
    derived, explicit = rows(sandbox.out)
    assert Path(derived["output"]).name == "s__the-sky__2.npy"
    assert np.load(sandbox.out / "s__the-sky.prob.npy").dtype == bool  # the explicit row's mask
    assert np.load(sandbox.out / "s__the-sky__2.prob.npy").dtype == np.float32  # the derived row's soft map
    assert np.load(sandbox.out / "s__the-sky.prob.prob.npy").dtype == np.float32


def test_label_overlay_on_the_label_map_is_refused(sandbox, loads):
    photo = image(sandbox.inp)
    refused(sandbox, ["--img", str(photo), "--classes", "a,b", "--sp", "l.png", "--overlay", "l.png", *MODEL], loads,
            "--overlay l.png", "--sp l.png")


# ---------------------------------------------------------------- an output on an input

def test_mask_on_its_own_image_is_refused(sandbox, loads):
    photo = image(sandbox.out, "photo.png")
    refused(sandbox, ["--img", str(photo), "--exp", "x", "--sp", str(photo), *MODEL], loads, "photo.png", "--img")


def test_overlay_on_the_image_is_refused(sandbox, loads):
    image(sandbox.out, "photo.png")
    refused(sandbox, ["--img", "photo.png", "--exp", "x", "--sp", "m.png", "--overlay", "photo.png", *MODEL], loads,
            "--overlay photo.png", "--img photo.png")


def test_default_output_on_the_image_is_refused(sandbox, loads):
    """No --sp: the mask is demo.png, which here is the image."""
    image(sandbox.out, "demo.png")
    refused(sandbox, ["--img", "demo.png", "--exp", "x", *MODEL], loads, "demo.png", "default")


def test_manifest_row_on_its_own_input_is_refused(sandbox, loads):
    image(sandbox.out, "a.png")
    manifest = sandbox.inp / "m.csv"
    manifest.write_text(f"image,expression,output\n{sandbox.out / 'a.png'},x,a.png\n")
    refused(sandbox, ["--manifest", str(manifest), "--sp", ".", *MODEL], loads, "a.png", "input image")


def test_manifest_row_on_another_rows_image_is_refused(sandbox, loads):
    """Row 1 would overwrite b.png before (or after) row 2 reads it."""
    image(sandbox.out, "a.png")
    image(sandbox.out, "b.png")
    manifest = sandbox.out / "m.csv"
    manifest.write_text("image,expression,output\na.png,x,b.png\nb.png,y,\n")
    refused(sandbox, ["--manifest", str(manifest), "--sp", ".", *MODEL], loads, "b.png", "item 1")


def test_manifest_row_on_the_manifest_is_refused(sandbox, loads):
    """A CSV manifest named rows.json, and a row whose RLE JSON mask is rows.json."""
    image(sandbox.out, "a.png")
    manifest = sandbox.out / "rows.json"
    manifest.write_text("image,expression,output\na.png,x,rows.json\n")
    refused(sandbox, ["--manifest", str(manifest), "--sp", ".", "--format", "rle-json", *MODEL], loads,
            "rows.json", "--manifest")


def test_manifest_named_results_log_is_refused(sandbox, loads):
    image(sandbox.out, "a.png")
    manifest = sandbox.out / "results.jsonl"
    manifest.write_text('{"image": "a.png", "expression": "x"}\n')
    refused(sandbox, ["--manifest", str(manifest), "--sp", ".", *MODEL], loads, "results.jsonl", "--manifest")


def test_expression_file_named_results_log_is_refused(sandbox, loads):
    photo = image(sandbox.inp)
    texts = sandbox.out / "results.jsonl"
    texts.write_text("the circle\nthe grass\n")
    refused(sandbox, ["--img", str(photo), "--exp-file", str(texts), "--sp", ".", *MODEL], loads,
            "results.jsonl", "--exp-file")


def test_named_images_one_the_mask_of_the_other_are_refused(sandbox, loads):
    """Both named on the command line: a's mask a__x.png would overwrite the image a__x.png."""
    image(sandbox.out, "a.png")
    image(sandbox.out, "a__x.png")
    refused(sandbox, ["--img", "a.png", "a__x.png", "--exp", "x", "--sp", ".", *MODEL], loads, "a__x.png", "item 0")


def test_label_map_on_its_own_image_is_refused(sandbox, loads):
    image(sandbox.out, "photo.png")
    refused(sandbox, ["--img", "photo.png", "--classes", "a,b", "--sp", "photo.png", *MODEL], loads,
            "photo.png", "--img")


def test_label_legend_on_the_class_file_is_refused(sandbox, loads):
    photo = image(sandbox.inp)
    classes = sandbox.out / "labels.legend.json"
    classes.write_text("circle\ngrass\n")
    refused(sandbox, ["--img", str(photo), "--classes-file", str(classes), "--sp", "labels.png", *MODEL], loads,
            "labels.legend.json", "--classes-file")


def test_label_batch_log_on_the_class_file_is_refused(sandbox, loads):
    a, b = image(sandbox.inp, "a.png"), image(sandbox.inp, "b.png")
    classes = sandbox.out / "results.jsonl"
    classes.write_text("circle\ngrass\n")
    refused(sandbox, ["--img", str(a), str(b), "--classes-file", str(classes), "--sp", ".", *MODEL], loads,
            "results.jsonl", "--classes-file")


def test_label_map_on_another_named_image_is_refused(sandbox, loads):
    image(sandbox.out, "a.png")
    image(sandbox.out, "a__labels.png")
    refused(sandbox, ["--img", "a.png", "a__labels.png", "--classes", "x,y", "--sp", ".", *MODEL], loads,
            "a__labels.png", "input image")


def test_config_named_results_log_is_refused(sandbox, loads):
    import unilseg

    photo = image(sandbox.inp)
    config = sandbox.out / "results.jsonl"
    shutil.copy(Path(unilseg.__file__).parent / "configs" / "unilseg-demo.yaml", config)
    refused(sandbox, ["--img", str(photo), "--exp", "x", "--exp", "y", "--sp", ".", "--config", str(config), *MODEL],
            loads, "results.jsonl", "--config")


# ---------------------------------------------------------------- shards' results logs

def shard_manifest(box: Sandbox, output: str) -> Path:
    image(box.inp, "a.png")
    image(box.inp, "b.png")
    manifest = box.inp / "m.csv"
    manifest.write_text(f"image,expression,output\na.png,x,{output}\nb.png,y,\n")
    return manifest


def test_row_on_another_shards_log_is_refused(sandbox, loads):
    """Shard 0 would write results.shard-1-of-2.jsonl as an RLE mask; shard 1 would then log over it."""
    manifest = shard_manifest(sandbox, "results.shard-1-of-2.jsonl")
    refused(sandbox, ["--manifest", str(manifest), "--sp", ".", "--shard", "0/2", "--format", "rle-json", *MODEL],
            loads,
            "results.shard-1-of-2.jsonl", "shards")


def test_manifest_named_another_shards_log_is_refused(sandbox, loads):
    image(sandbox.inp, "a.png")
    image(sandbox.inp, "b.png")
    manifest = sandbox.out / "results.shard-1-of-2.jsonl"
    manifest.write_text(f'{{"image": "{sandbox.inp / "a.png"}", "expression": "x"}}\n'
                        f'{{"image": "{sandbox.inp / "b.png"}", "expression": "y"}}\n')
    refused(sandbox, ["--manifest", str(manifest), "--sp", ".", "--shard", "0/2", *MODEL], loads,
            "results.shard-1-of-2.jsonl", "--manifest")


def test_expression_file_named_this_shards_log_is_refused(sandbox, loads):
    photo = image(sandbox.inp)
    texts = sandbox.out / "results.shard-0-of-3.jsonl"
    texts.write_text("x\ny\n")
    refused(sandbox, ["--img", str(photo), "--exp-file", str(texts), "--sp", ".", "--shard", "0/3", *MODEL], loads,
            "results.shard-0-of-3.jsonl", "--exp-file")


def test_label_shard_log_on_the_class_file_is_refused(sandbox, loads):
    a, b = image(sandbox.inp, "a.png"), image(sandbox.inp, "b.png")
    classes = sandbox.out / "results.shard-0-of-2.jsonl"
    classes.write_text("circle\ngrass\n")
    refused(sandbox, ["--img", str(a), str(b), "--classes-file", str(classes), "--sp", ".", "--shard", "1/2",
                      *MODEL], loads, "results.shard-0-of-2.jsonl", "--classes-file")


# ---------------------------------------------------------------- a folder input holding the job's outputs

def masks_of(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir() if "__" in p.name}


def test_folder_run_twice_into_itself_reads_no_masks(sandbox):
    """`--img . --sp . --skip-existing` twice: the second run skips everything and reads no mask as an image."""
    image(sandbox.out, "a.png")
    image(sandbox.out, "b.png", 40, 40)
    argv = ["--img", ".", "--exp", "x", "--sp", ".", "--skip-existing", *MODEL]
    sandbox.run(argv, 0)
    first = masks_of(sandbox.out)
    assert sorted(first) == ["a__x.png", "b__x.png"]
    result = sandbox.run(argv, 0)
    assert masks_of(sandbox.out) == first
    assert [Path(r["image"]).name for r in rows(sandbox.out)] == ["a.png", "b.png"]
    assert "left out 2 file(s)" in result.err


def test_folder_run_with_other_options_reads_no_overlays(sandbox):
    """A first run wrote overlays too; a second run without --overlay does not take them for images."""
    image(sandbox.out, "a.png")
    sandbox.run(["--img", ".", "--exp", "x", "--sp", ".", "--overlay", "png", *MODEL], 0)
    sandbox.run(["--img", ".", "--exp", "x", "--sp", ".", *MODEL], 0)
    assert sorted(masks_of(sandbox.out)) == ["a__x.overlay.png", "a__x.png"]
    assert [Path(r["image"]).name for r in rows(sandbox.out)] == ["a.png"]


def test_folder_run_with_another_text_reads_no_earlier_masks(sandbox):
    image(sandbox.out, "a.png")
    sandbox.run(["--img", ".", "--exp", "the circle", "--sp", ".", *MODEL], 0)
    sandbox.run(["--img", ".", "--exp", "the grass", "--sp", ".", *MODEL], 0)
    sandbox.run(["--img", ".", "--classes", "circle,grass", "--sp", ".", *MODEL], 0)
    assert sorted(masks_of(sandbox.out)) == ["a__labels.legend.json", "a__labels.png", "a__the-circle.png",
                                             "a__the-grass.png"]
    assert [Path(r["image"]).name for r in rows(sandbox.out)] == ["a.png"]


def test_label_folder_run_twice_reads_no_label_maps(sandbox):
    image(sandbox.out, "a.png")
    argv = ["--img", ".", "--classes", "circle,grass", "--sp", ".", "--overlay", "png", *MODEL]
    sandbox.run(argv, 0)
    first = sorted(masks_of(sandbox.out))
    sandbox.run(argv, 0)
    assert sorted(masks_of(sandbox.out)) == first == ["a__labels.legend.json", "a__labels.overlay.png",
                                                      "a__labels.png"]


def test_recursive_glob_over_its_own_output_folder(sandbox):
    """--sp inside the folder a `**` glob walks: its masks are not read back either."""
    image(sandbox.out, "a.png")
    argv = ["--img", str(sandbox.out / "**" / "*.png"), "--exp", "x", "--sp", "masks", *MODEL]
    sandbox.run(argv, 0)
    sandbox.run(argv, 0)
    assert sorted(p.name for p in (sandbox.out / "masks").iterdir()) == ["a__x.png", "results.jsonl"]


# ---------------------------------------------------------------- video

def test_video_log_on_the_expression_file_is_refused(sandbox, loads):
    video = animated_gif(sandbox.inp / "v.gif", frames=2)
    texts = sandbox.out / "results.jsonl"
    texts.write_text("x\n")
    refused(sandbox, ["--video", str(video), "--exp-file", str(texts), "--sp", ".", *MODEL], loads,
            "results.jsonl", "--exp-file")


def test_video_masks_on_the_expression_file_are_refused(sandbox, loads):
    video = animated_gif(sandbox.inp / "v.gif", frames=2)
    texts = sandbox.out / "v__x.json"
    texts.write_text("x\n")
    refused(sandbox, ["--video", str(video), "--exp-file", str(texts), "--sp", ".", "--format", "rle-json", *MODEL],
            loads, "v__x.json", "--exp-file")


def test_video_log_on_the_config_is_refused(sandbox, loads):
    import unilseg

    video = animated_gif(sandbox.inp / "v.gif", frames=2)
    config = sandbox.out / "results.jsonl"
    shutil.copy(Path(unilseg.__file__).parent / "configs" / "unilseg-demo.yaml", config)
    refused(sandbox, ["--video", str(video), "--exp", "x", "--sp", ".", "--config", str(config), *MODEL], loads,
            "results.jsonl", "--config")


def test_video_mask_folder_holding_an_input_is_refused(sandbox, loads):
    """The frames of v.gif go into v__x/; the expression file lives there as 000000.png."""
    video = animated_gif(sandbox.inp / "v.gif", frames=2)
    (sandbox.out / "v__x").mkdir()
    texts = sandbox.out / "v__x" / "000000.png"
    texts.write_text("x\n")
    refused(sandbox, ["--video", str(video), "--exp-file", str(texts), "--sp", ".", *MODEL], loads,
            "v__x", "--exp-file")


def test_video_frames_folder_as_its_own_output_folder(sandbox):
    """Frames and --sp in one folder: the frames are read, nothing lands on them, and a rerun reads the same."""
    frames = sandbox.out / "frames"
    frames.mkdir()
    for i in range(2):
        cv2.imwrite(str(frames / f"{i:03d}.png"), np.full((32, 32, 3), 60 * i, np.uint8))
    before = snapshot(frames)
    argv = ["--video", str(frames), "--exp", "x", "--sp", str(frames), "--overlay", *MODEL]
    sandbox.run(argv, 0)
    sandbox.run(argv, 0)
    assert {p: before[p] for p in before} == {p: p.read_bytes() for p in before}
    assert len([r for r in rows(frames) if r["frame"] is not None]) == 2


# ---------------------------------------------------------------- the Python API and ray share the plan

def test_plan_items_refuses_an_output_on_an_image(tmp_path):
    from unilseg.batch import plan_items
    from unilseg.errors import UnilsegError

    a = image(tmp_path, "a.png")
    with pytest.raises(UnilsegError, match="a.png .*input"):
        plan_items([(str(a), "x", "a.png")], tmp_path)


def test_ray_refuses_a_row_on_the_manifest(sandbox, loads):
    pytest.importorskip("ray")
    from unilseg.cli.ray import main

    image(sandbox.out, "a.png")
    manifest = sandbox.out / "rows.json"
    manifest.write_text("image,expression,output\na.png,x,rows.json\n")
    refused(sandbox, ["--manifest", str(manifest), "--sp", ".", "--format", "rle-json", "--actors", "1",
                      "--cpus-per-actor", "1", *MODEL], loads, "rows.json", "--manifest", main=main)


@pytest.mark.parametrize("how", ["same", "dotdot", "symlink"])
def test_convert_onto_its_own_input_is_refused(sandbox, how):
    """`unilseg convert W W` would replace the only copy of the weights."""
    from unilseg.model.registry import MODELS, find_weights

    src = sandbox.out / "demo.safetensors"
    demo = find_weights(MODELS["unilseg-demo"])[0]
    src.write_bytes(demo.read_bytes())
    before = src.read_bytes()
    if how == "symlink":
        dst = sandbox.out / "link.safetensors"
        dst.symlink_to(src)
    else:
        (sandbox.out / "x").mkdir()
        dst = src if how == "same" else sandbox.out / "x" / ".." / src.name
    out = sandbox.run(["convert", str(src), str(dst)], 2)
    assert "the weights" in out.err and "an input the job reads" in out.err
    assert src.read_bytes() == before
