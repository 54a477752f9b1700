"""`unilseg ray` on a local 2-CPU Ray cluster with the tiny model: the local runner's files and rows,
failing items as rows, a killed actor, a killed driver resumed with --skip-existing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from tiny import write_images, write_tiny_model

from unilseg.batch import MaskStep, OutputOptions, plan_items, run_batch
from unilseg.cli.ray import main
from unilseg.cli.segment import main as segment_main
from unilseg.inference.predictor import Predictor
from unilseg.model.build import load_model

ray = pytest.importorskip("ray")
from unilseg.batch.ray import default_cpus_per_actor, run_ray  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["the red circle", "the background"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray cluster (2 CPUs), the tiny model, 12 images; `flag`: the file a CrashOnceStep removes."""
    root = tmp_path_factory.mktemp("ray")
    config, weights = write_tiny_model(root)
    images = write_images(root / "images", 12)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    yield {"config": config, "weights": weights, "images": images, "flag": root / "crash-armed", "root": root}
    ray.shutdown()


@dataclass
class CrashOnceStep(MaskStep):
    """The mask step, but the one actor process that removes `flag` dies at once after writing an item.

    os._exit (no clean-up, like a kill or an out-of-memory end), so its batch is left half
    done. Removing a file succeeds for exactly one process.
    """

    flag: str = ""

    def write(self, r) -> None:
        super().write(r)
        try:
            os.unlink(self.flag)
        except FileNotFoundError:
            return
        os._exit(1)


def make_predictor(config: Path, weights: Path) -> Predictor:
    return Predictor(load_model(weights, config))


def plan(cluster, out: Path, options: OutputOptions, bad: bool = False):
    requests = [(str(image), text, None) for image in cluster["images"] for text in TEXTS]
    if bad:
        requests += [(str(cluster["root"] / "missing.png"), TEXTS[0], None), (str(cluster["images"][0]), " ", None)]
    return plan_items(requests, out, options)


def rows_of(path: Path) -> list[dict]:
    """The rows of a results file, without seconds, outputs by file name."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{**{k: v for k, v in r.items() if k != "seconds"}, "output": Path(r["output"]).name} for r in rows]


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.name != "results.jsonl"}


@pytest.mark.slow
def test_same_files_and_rows_as_the_local_runner(cluster, tmp_path):
    options = OutputOptions(fmt="png", save_prob=True, overlay="png")
    make = lambda: make_predictor(cluster["config"], cluster["weights"])  # noqa: E731
    local = plan(cluster, tmp_path / "local", options, bad=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each actor: float soft maps are bit-equal at equal thread counts only
    try:
        run_batch(make, local, options, results=tmp_path / "local" / "results.jsonl", report=lambda line: None)
    finally:
        torch.set_num_threads(threads)
    items = plan(cluster, tmp_path / "ray", options, bad=True)
    said: list[str] = []
    report = run_ray(make, items, MaskStep(options), results=tmp_path / "ray" / "results.jsonl", actors=2,
                     cpus_per_actor=0.5, report=said.append)
    assert len(items) == 26 and report.done == 24 and report.skipped == 0
    assert sorted(item.index for item, _ in report.failed) == [24, 25] and len(said) == 2
    ours, theirs = files_of(tmp_path / "ray"), files_of(tmp_path / "local")
    assert len(ours) == 24 * 3 and ours.keys() == theirs.keys()
    assert [name for name in ours if ours[name] != theirs[name]] == []
    rows = rows_of(tmp_path / "ray" / "results.jsonl")
    assert rows == rows_of(tmp_path / "local" / "results.jsonl")  # same rows, plan order
    assert [r["output"] for r in rows] == [item.output.name for item in items]
    assert "image not found" in rows[24]["error"] and rows[25]["error"].startswith("empty expression")


@pytest.mark.slow
def test_a_killed_actor_is_restarted_and_its_batch_redone(cluster, tmp_path):
    options = OutputOptions()
    items = plan(cluster, tmp_path, options)
    cluster["flag"].touch()  # the first actor to finish an item exits at once (os._exit), mid-batch
    step = CrashOnceStep(options, flag=str(cluster["flag"]))
    report = run_ray(lambda: make_predictor(cluster["config"], cluster["weights"]), items, step,
                     results=tmp_path / "results.jsonl", actors=2, cpus_per_actor=0.5, batch_size=2)
    assert not cluster["flag"].exists()  # the crash happened
    assert report.done == len(items) == 24 and not report.failed
    assert all(item.output.is_file() for item in items)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["output"] for r in rows] == [str(item.output) for item in items]


@pytest.mark.slow
def test_a_killed_driver_resumes_with_skip_existing(cluster, tmp_path, capsys):
    out = tmp_path / "out"
    images = cluster["root"] / "more"
    write_images(images, 24, seed=1)
    argv = ["--img", str(images), "--exp", TEXTS[0], "--exp", TEXTS[1], "--sp", str(out),
            "--config", str(cluster["config"]), "--weights", str(cluster["weights"]), "--device", "cpu",
            "--address", ray.get_runtime_context().gcs_address, "--actors", "2", "--cpus-per-actor", "0.5"]
    proc = subprocess.Popen([sys.executable, "-m", "unilseg", "ray", *argv], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    masks = lambda: sorted(out.glob("*.png")) if out.is_dir() else []  # noqa: E731
    deadline = time.monotonic() + 90
    while len(masks()) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stable, seen = time.monotonic(), len(masks())
    while time.monotonic() - stable < 2:  # the dead driver's actors are ended by Ray: wait until writing stops
        time.sleep(0.1)
        if len(masks()) != seen:
            stable, seen = time.monotonic(), len(masks())
    finished = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in masks()}
    assert 4 <= len(finished) < 48, "the driver was to be killed mid-run"
    # An actor killed mid-write can leave its temporary file (never a mask under its own name). Only the
    # job that made a temporary removes it, so the resumed run leaves it be (and adds none of its own).
    assert all(p.name.endswith(".part") for p in out.iterdir() if p.name.startswith("."))
    leftovers = set(out.glob(".*.part"))

    assert main([*argv, "--skip-existing"]) == 0
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert summary.startswith(f"{48 - len(finished)} done, {len(finished)} skipped, 0 failed")
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in finished} == finished
    assert len(masks()) == 48 and set(out.glob(".*.part")) == leftovers
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 48 and all(r["error"] is None for r in rows)


@pytest.mark.slow
def test_label_maps_on_ray_are_the_local_batch_bytes(cluster, tmp_path, capsys):
    """`unilseg ray --classes` writes the label maps, legends, overlays, rows and COCO files (instances) that
    `unilseg segment --classes` does, byte for byte, though the actors finish in their own order."""
    common = ["--img", str(cluster["images"][0].parent), "--classes", "circle: the red circle,rest: the background",
              "--overlay", "png", "--config", str(cluster["config"]), "--weights", str(cluster["weights"]),
              "--device", "cpu", "--instances"]
    coco = {side: ["--coco", str(tmp_path / f"{side}.json"), "--coco-results", str(tmp_path / f"{side}-dt.json")]
            for side in ("local", "ray")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each actor: float soft maps are bit-equal at equal thread counts only
    try:
        assert segment_main([*common, *coco["local"], "--sp", str(tmp_path / "local")]) == 0
    finally:
        torch.set_num_threads(threads)
    assert main([*common, *coco["ray"], "--sp", str(tmp_path / "ray"), "--address",
                 ray.get_runtime_context().gcs_address, "--actors", "2", "--cpus-per-actor", "0.5"]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("12 done, 0 skipped, 0 failed")
    for name in ("{}.json", "{}-dt.json"):
        assert (tmp_path / name.format("ray")).read_bytes() == (tmp_path / name.format("local")).read_bytes()
    assert len(json.loads((tmp_path / "ray.json").read_text())["images"]) == 12
    for side in ("local", "ray"):
        (tmp_path / side / "annotations.jsonl").unlink()  # the log: in the order items finished
    ours, theirs = files_of(tmp_path / "ray"), files_of(tmp_path / "local")
    assert len(ours) == 12 * 3 and ours.keys() == theirs.keys()
    assert [name for name in ours if ours[name] != theirs[name]] == []
    def named(rows: list[dict]) -> list[dict]:  # the legend and overlay paths by file name, as rows_of does outputs
        return [{**r, "legend": Path(r["legend"]).name, "overlay": Path(r["overlay"]).name} for r in rows]

    rows = named(rows_of(tmp_path / "ray" / "results.jsonl"))
    assert rows == named(rows_of(tmp_path / "local" / "results.jsonl"))  # same rows, plan order
    assert len(rows) == 12 and all(r["error"] is None and r["classes"] for r in rows)


def test_without_ray_one_line_says_what_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    assert main(["--img", str(tmp_path), "--exp", "x", "--sp", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == "error: Ray is not installed: pip install 'unilseg[ray]'"


def test_default_actor_cpus_leave_room_for_decoding():
    assert default_cpus_per_actor([2.0], 2) == 0.75  # the 2-CPU case: 2 x 1 CPU would starve the decode tasks
    assert default_cpus_per_actor([16.0, 16.0], 2) == 15.5
    assert default_cpus_per_actor([16.0, 16.0], 3) == 7.75  # two on one node, one on the other
    assert default_cpus_per_actor([64.0], 8) == 7.9
    with pytest.raises(ValueError):
        default_cpus_per_actor([0.5], 1)


def test_workers_word_failed_items_as_the_driver_s_front_end(tmp_path):
    """Decode tasks and actors run in other processes: a failed item's text there is worded as the driver's
    command words it (--img on the command line), so Ray's rows say what the local runner's say."""
    import pickle

    import numpy as np

    from unilseg.batch.ray import Segmenter, decode_images
    from unilseg.cli.fields import FLAGS
    from unilseg.io.paths import json_text

    config, weights = write_tiny_model(tmp_path)
    image = str(tmp_path / "missing.png")
    options = OutputOptions()
    items = plan_items([(image, TEXTS[0], None)], tmp_path / "out", options)
    batch = {"image": np.array([json_text(image)], object), "items": np.array([pickle.dumps(items)], object)}
    for names, word in (({}, "check the image path"), (FLAGS, "check the --img path")):
        decoded = decode_images(batch, names)
        assert word in json.loads(decoded["error"][0])
        segmenter = Segmenter(lambda: make_predictor(config, weights), MaskStep(options), 1, None, names)
        row = json.loads(segmenter(decoded)["row"][0])
        assert word in row["error"] and not (tmp_path / "out").exists()
