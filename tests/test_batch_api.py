"""The Python batch API on a tiny model: plan, run, results, resume; the same files as the CLI."""
import json

import pytest
from tiny import write_images, write_tiny_model

from unilseg.batch import OutputOptions, plan_items, predict_items, run_batch
from unilseg.cli.segment import main
from unilseg.inference.predictor import Predictor
from unilseg.model.build import load_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    config, weights = write_tiny_model(root)
    images = write_images(root / "images", 2)
    return config, weights, images


def test_run_batch_writes_what_the_cli_writes(tiny, tmp_path, capsys):
    config, weights, images = tiny
    texts = ["the red circle", "the background"]
    options = OutputOptions(fmt="png", save_prob=True, overlay="png")
    requests = [(str(image), text, None) for image in images for text in texts]
    requests.append((str(images[0]), "  ", None))  # an empty instruction fails as an item
    items = plan_items(requests, tmp_path / "api", options)
    predictor = Predictor(load_model(weights, config))
    results = []
    report = run_batch(predictor, items, options, results=tmp_path / "api" / "results.jsonl",
                       report=lambda line: None, on_result=results.append)
    assert report.done == 4 and report.skipped == 0
    assert [(item.index, why) for item, why in report.failed] == [(4, "empty expression; give a text naming what "
                                                                    "to segment")]
    assert all(p.is_file() for item in items[:4] for p in item.outputs())
    rows = [json.loads(line) for line in (tmp_path / "api" / "results.jsonl").read_text().splitlines()]
    assert [r["output"] for r in rows] == [str(item.output) for item in items]
    assert [r["error"] is None for r in rows] == [True] * 4 + [False]
    assert {r.item.index for r in results} == set(range(5))

    cli_dir = tmp_path / "cli"
    argv = ["--img", *map(str, images), "--exp", texts[0], "--exp", texts[1], "--sp", str(cli_dir), "--save-prob",
            "--overlay", "png", "--config", str(config), "--weights", str(weights), "--device", "cpu"]
    assert main(argv) == 0
    capsys.readouterr()
    for item in items[:4]:
        for path in item.outputs():
            assert (cli_dir / path.name).read_bytes() == path.read_bytes(), path.name


def test_resume_loads_no_model_when_all_is_done(tiny, tmp_path):
    config, weights, images = tiny
    items = plan_items([(str(images[0]), "the red circle", None)], tmp_path)
    made = []

    def factory():
        made.append(1)
        return Predictor(load_model(weights, config))

    first = run_batch(factory, items, results=tmp_path / "results.jsonl")
    again = run_batch(factory, items, results=tmp_path / "results.jsonl", skip_existing=True)
    assert (first.done, again.done, again.skipped, len(made)) == (1, 0, 1, 1)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["error"] is None


def test_predict_items_keeps_masks_in_memory_and_encodes_each_image_once(tiny):
    config, weights, images = tiny
    predictor = Predictor(load_model(weights, config))
    calls = []
    real = predictor.backend.encode_image
    predictor.backend.encode_image = lambda x: calls.append(len(x)) or real(x)
    items = plan_items([(str(images[i % 2]), f"text {i}", None) for i in range(6)], "unused")
    out = list(predict_items(predictor, items, batch_size=2))
    assert calls == [2]  # two distinct images, one Swin batch
    assert sorted(r.item.index for r in out) == list(range(6)) and all(r.error is None for r in out)
    predictor.set_image(str(images[1]))
    assert (out[-1].prediction.mask == predictor.predict("text 5")[0].mask).all()
